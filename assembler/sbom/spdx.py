"""An SPDX 2.3 JSON document of an image: what it contains and what it was built from.

Packages: the image itself (``SPDXRef-Image``), its bases (the runtime base it descends
from and the devel bases its artifacts were compiled on), the sources the compile steps
read, each compiled artifact (the layer it is, or an input of another step), each file
of a ``url:`` layer (its URL and pinned sha256), and every package the image's databases
list (Debian, Alpine, rpm, Python; see :mod:`assembler.sbom.packages`; a wheel a ``pip:``
layer installed has that wheel's pinned sha256). Relationships say which contains which, which artifact
was generated from which source, on which base and with which other artifacts.

An installed package's ``licenseDeclared`` is what it declares (a Debian package's
machine-readable copyright file, a Python distribution's metadata, apk's and rpm's
databases), as an SPDX expression where it is one and as a ``LicenseRef-`` with the
original text in ``hasExtractedLicensingInfos`` where it is not (see
:mod:`assembler.sbom.licenses`); NOASSERTION where nothing declares one.
``licenseConcluded`` is always NOASSERTION: nothing here concludes a license.

An artifact's checksum is the sha256 of its layer's uncompressed tar (its diff_id); its
step, step key, base digest and sources are in its comment and, as JSON, in an
annotation. An installed package's comment names the layer that installed it: the base's,
or a runtime step's.

The bytes depend only on the build's facts: ``created`` is the build's epoch, packages and
relationships are sorted, IDs are derived from content, and the namespace from the image
digest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from assembler.oci.digest import canonical_json, digest_hex
from assembler.sbom.databases import Package
from assembler.sbom.facts import ArtifactFact, BuildFacts, SourceFact
from assembler.sbom.licenses import extracted_infos, spdx_license
from assembler.sbom.packages import Inventory
from assembler.sbom.spdxdoc import (
    NAMESPACE,
    NOASSERTION,
    Doc,
    Json,
    package,
    package_url,
    person,
    sha256_checksums,
    spdx_id,
    url_or_none,
)


def _image(doc: Doc) -> str:
    f = doc.facts
    image = f.image
    purl = package_url("oci", "", f.name, image.digest, {"arch": image.platform.architecture})
    image_id = doc.add(
        package(
            "SPDXRef-Image",
            f.name,
            image.digest,
            primaryPackagePurpose="CONTAINER",
            checksums=sha256_checksums(image.digest),
            externalRefs=[purl],
            comment=f"the image built from {f.manifest}",
        )
    )
    doc.relate("SPDXRef-DOCUMENT", "DESCRIBES", image_id)
    for base in f.bases.values():
        base_id = doc.add(
            package(
                spdx_id("Base", base.name, base.digest),
                base.name,
                base.digest,
                primaryPackagePurpose="CONTAINER",
                checksums=sha256_checksums(base.digest),
                externalRefs=[package_url("oci", "", base.name, base.digest, {})],
                comment=f"base {base.name}: {base.what}",
            )
        )
        if base.name == f.base:
            doc.relate(image_id, "DESCENDANT_OF", base_id)
    return image_id


def _base_id(doc: Doc, name: str) -> str:
    base = doc.facts.bases[name]
    return spdx_id("Base", base.name, base.digest)


def _source(doc: Doc, src: SourceFact) -> str:
    if src.kind == "git":
        location = url_or_none(f"git+{src.url}@{src.revision}") if url_or_none(src.url) else None
        what = f"git {src.url} at commit {src.revision}" + (f" (ref {src.ref})" if src.ref else "")
        checksums: list[Json] = []
    elif src.kind == "url":
        location = url_or_none(src.url)
        what = f"download {src.url}, sha256 {digest_hex(src.revision)}"
        checksums = sha256_checksums(src.revision)
    else:
        location = None
        what = f"folder {src.path}: {src.revision} is the sha256 of its normalised tar (content and modes)"
        checksums = []
    return doc.add(
        package(
            spdx_id("Source", src.name, src.revision),
            src.name,
            src.revision,
            primaryPackagePurpose="SOURCE",
            downloadLocation=location or NOASSERTION,
            checksums=checksums,
            comment=what,
        )
    )


def _artifact(doc: Doc, art: ArtifactFact, image_id: str) -> str:
    f = doc.facts
    step = f.steps[art.step]
    base = f.bases.get(step.base)
    sources = {n: f.sources[n].revision for n in step.sources if n in f.sources}
    where = f"layer {art.layer} of the image" if art.layer is not None else "an input of other steps, not in the image"
    comment = (
        f"{where}; built by compile step {step.name} (key {step.key})"
        + (f" on base {base.name} ({base.digest})" if base else "")
        + (f" from {', '.join(f'{n} {r}' for n, r in sources.items())}" if sources else "")
        + (f" with {', '.join(step.inputs)}" if step.inputs else "")
    )
    pkg = package(
        spdx_id("Artifact", art.ref, art.diff_id),
        art.ref,
        "",
        checksums=sha256_checksums(art.diff_id),
        comment=comment,
        primaryPackagePurpose="OTHER",
    )
    doc.annotate(
        pkg,
        {
            "assemble": "artifact",
            "step": step.name,
            "step_key": step.key,
            "diff_id": art.diff_id,
            "layer": art.layer,
            "base": base.name if base else None,
            "base_digest": base.digest if base else None,
            "sources": sources,
            "inputs": list(step.inputs),
        },
    )
    art_id = doc.add(pkg)
    if art.layer is not None:
        doc.relate(image_id, "CONTAINS", art_id)
    for name in sources:
        doc.relate(art_id, "GENERATED_FROM", spdx_id("Source", name, f.sources[name].revision))
    if base is not None:
        doc.relate(_base_id(doc, base.name), "BUILD_TOOL_OF", art_id)
    return art_id


def _installed(doc: Doc, pkg: Package, image_id: str, containers: dict[int, str]) -> None:
    f = doc.facts
    layer = f.layers[pkg.layer] if pkg.layer < len(f.layers) else None
    if layer is None or layer.kind == "base":
        by = f"the base {f.base}"
    elif layer.step:
        by = f"{'compile' if layer.kind == 'artifact' else 'runtime'} step {layer.step} ({layer.what})"
    else:
        by = layer.what
    comment = (
        f"installed in {pkg.path}, layer {pkg.layer} (from {by})"
        if pkg.ecosystem == "pypi"
        else f"layer {pkg.layer}, installed by {by}"
    )
    source = f"built from the source package {pkg.source}" if pkg.source else None
    spdxid = spdx_id(pkg.ecosystem, pkg.name, pkg.version, pkg.arch, pkg.path, pkg.epoch)
    declared, refs = spdx_license(pkg.license, debian=pkg.ecosystem == "deb")
    for ref, text in refs.items():
        doc.license_refs.setdefault(ref, text)
    vendor = " ".join(pkg.supplier.replace("(", " ").replace(")", " ").split())  # rpm: an organisation
    supplier = f"Organization: {vendor}" if pkg.ecosystem == "rpm" and vendor else person(pkg.supplier)
    doc.add(
        package(
            spdxid,
            pkg.name,
            f"{pkg.epoch}:{pkg.version}" if pkg.epoch else pkg.version,
            supplier=supplier or NOASSERTION,
            summary=pkg.summary or None,
            homepage=url_or_none(pkg.homepage),
            sourceInfo=source,
            licenseDeclared=declared,
            licenseComments=f"as the package says: {pkg.license}" if pkg.license else None,
            externalRefs=[_installed_purl(doc, pkg)],
            comment=comment,
            checksums=_wheel_sha256(doc, pkg),
            primaryPackagePurpose="LIBRARY" if pkg.ecosystem == "pypi" else None,
        )
    )
    doc.relate(image_id, "CONTAINS", spdxid)
    if pkg.layer in containers:
        doc.relate(containers[pkg.layer], "CONTAINS", spdxid)


def _installed_purl(doc: Doc, pkg: Package) -> Json:
    """The package URL of an installed package (purl's deb, apk, rpm and pypi types; an rpm's
    epoch is its ``epoch`` qualifier, as the purl spec says)."""
    if pkg.ecosystem == "pypi":
        return package_url("pypi", "", re.sub(r"[-_.]+", "-", pkg.name).lower(), pkg.version, {})
    os_id, os_version = doc.inventory.os_release.get("ID", ""), doc.inventory.os_release.get("VERSION_ID", "")
    distro = f"{os_id}-{os_version}" if os_id and os_version else ""
    namespace = os_id or {"apk": "alpine", "deb": "debian"}.get(pkg.ecosystem, "")
    return package_url(
        pkg.ecosystem, namespace, pkg.name, pkg.version, {"arch": pkg.arch, "distro": distro, "epoch": pkg.epoch}
    )


def _copies(doc: Doc, image_id: str, containers: dict[int, str]) -> None:
    """Each copy layer (host files: its content is all that is known) as a package."""
    for layer in doc.facts.layers:
        if layer.kind == "copy" and layer.diff_id:
            comment = f"layer {layer.index}: files from the host; the checksum is the layer's diff_id"
            copy_id = doc.add(
                package(
                    spdx_id("Copy", layer.what, layer.diff_id),
                    layer.what,
                    "",
                    checksums=sha256_checksums(layer.diff_id),
                    primaryPackagePurpose="FILE",
                    comment=comment,
                )
            )
            doc.relate(image_id, "CONTAINS", copy_id)
            containers[layer.index] = copy_id


def _downloads(doc: Doc, image_id: str) -> None:
    """Each pinned file of a ``url:`` layer as a package with its URL and sha256 (a ``pip:``
    layer's wheels are the distributions installed: their checksums are set there)."""
    for d in doc.facts.downloads:
        if d.name.startswith("url:"):
            name = d.name.removeprefix("url:")
            url_id = doc.add(
                package(
                    spdx_id("Download", name, d.sha256),
                    name,
                    "",
                    downloadLocation=url_or_none(d.uri),
                    checksums=sha256_checksums("sha256:" + d.sha256),
                    primaryPackagePurpose="FILE",
                    comment=f"a url: layer's file, {d.uri}",
                )
            )
            doc.relate(image_id, "CONTAINS", url_id)


def _wheel_purl(uri: str) -> str:
    """The package URL of a ``pip:`` layer's wheel: its own, or (a direct reference, ``name @
    URL``) the one its file name says (NAME-VERSION-PY-ABI-PLATFORM.whl)."""
    if uri.startswith("pkg:pypi/"):
        return uri
    parts = uri.rsplit("/", 1)[-1].split("-")
    return f"pkg:pypi/{re.sub(r'[-_.]+', '-', parts[0]).lower()}@{parts[1]}" if len(parts) >= 5 else ""


def _wheel_sha256(doc: Doc, pkg: Package) -> list[Json] | None:
    """The pinned sha256 of the wheel a ``pip:`` layer installed ``pkg`` from, if it did."""
    purl = f"pkg:pypi/{re.sub(r'[-_.]+', '-', pkg.name).lower()}@{pkg.version}"
    shas = [d.sha256 for d in doc.facts.downloads if d.name.startswith("pip:") and _wheel_purl(d.uri) == purl]
    layers = doc.facts.layers
    by_pip = pkg.layer < len(layers) and layers[pkg.layer].kind == "pip"
    return sha256_checksums("sha256:" + shas[0]) if pkg.ecosystem == "pypi" and by_pip and len(shas) == 1 else None


def spdx_document(facts: BuildFacts, inventory: Inventory) -> bytes:
    """The SPDX 2.3 JSON document (canonical JSON bytes) of the image ``facts`` describe."""
    doc = Doc(facts, inventory)
    image_id = _image(doc)
    containers: dict[int, str] = {}  # layer -> the package that holds what it installed
    base_layers = [layer.index for layer in facts.layers if layer.kind == "base"]
    if facts.base in facts.bases:
        containers.update(dict.fromkeys(base_layers, _base_id(doc, facts.base)))
    for src in facts.sources.values():
        _source(doc, src)
    by_ref = {a.ref: a for a in facts.artifacts}
    for art in facts.artifacts:
        art_id = _artifact(doc, art, image_id)
        if art.layer is not None:
            containers[art.layer] = art_id
        for ref in facts.steps[art.step].inputs:
            if ref in by_ref:
                doc.relate(spdx_id("Artifact", ref, by_ref[ref].diff_id), "BUILD_DEPENDENCY_OF", art_id)
    _copies(doc, image_id, containers)
    _downloads(doc, image_id)
    for pkg in inventory.packages:
        _installed(doc, pkg, image_id, containers)
    debs = any(p.ecosystem == "deb" for p in inventory.packages)
    notes = [
        *(
            [
                "A Debian package's declared license is its machine-readable copyright file's (Files: *);"
                " NOASSERTION where that file is not machine-readable."
            ]
            if debs
            else []
        ),
        *inventory.notes,
    ]
    document: Json = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{facts.name}@{facts.image.digest}",
        "documentNamespace": f"{NAMESPACE}/{facts.name}/sha256-{digest_hex(facts.image.digest)}",
        "creationInfo": {
            "created": doc.created,
            "creators": [doc.annotator],
            **({"comment": " ".join(notes)} if notes else {}),
        },
        "packages": [doc.packages[k] for k in sorted(doc.packages)],
        "relationships": _relationships(doc.relationships),
    }
    if doc.license_refs:
        document["hasExtractedLicensingInfos"] = extracted_infos(doc.license_refs)
    return canonical_json(document)


def _relationships(found: Iterable[tuple[str, str, str]]) -> list[Json]:
    return [{"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b} for a, kind, b in sorted(found)]
