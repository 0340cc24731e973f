"""SBOM and provenance: what the package databases of an image's layers list, the SPDX 2.3
document (checked by the reference validator, spdx-tools from PyPI) and the SLSA v1
statement a build attaches to its image, in an OCI layout and in a registry (distribution
2.8: no referrers API, so the tag schema's ``sha256-<hex>`` index), and ``assemble referrers``.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import requests

from assembler.archive.layer import write_layer
from assembler.archive.tar import TarEntry
from assembler.cache import Cache
from assembler.compile.sources import tree_digest
from assembler.oci import mediatypes as mt
from assembler.oci import mutate
from assembler.oci.descriptor import Platform
from assembler.oci.digest import sha256_digest
from assembler.oci.image import Image
from assembler.sbom import read_packages
from tests import yaml_helper
from tests.helpers import PYTHON, layout_digest, layout_index, run_cli
from tests.plugins.demo import Demo
from tests.plugins.registry import RunningRegistry

EPOCH = 1700000000
PLATFORM = Platform("linux", "amd64")
PYSPDXTOOLS = Path(PYTHON).parent / "pyspdxtools"


def _stanza(name: str, version: str, **more: str) -> str:
    fields = {
        "Package": name,
        "Status": "install ok installed",
        "Architecture": "amd64",
        "Version": version,
        "Maintainer": "Debian Team <team@lists.debian.org>",
        "Description": f"{name} for tests\n more text",
        **more,
    }
    return "".join(f"{k}: {v}\n" for k, v in fields.items()) + "\n"


OLD_METADATA = "Name: old\nVersion: 1\n"
BASE_STATUS = _stanza("libc6", "2.36-9+deb12u4", Source="glibc") + _stanza("base-files", "12.4+deb12u5")
REMOVED = _stanza("gone", "1.0").replace("install ok installed", "deinstall ok config-files")
UPPER_STATUS = BASE_STATUS + _stanza("libgomp1", "12.2.0-14", Source="gcc-12 (12.2.0-14)") + REMOVED
METADATA = "Metadata-Version: 2.1\nName: demo-ext\nVersion: 0.1.0\nSummary: A C extension\nLicense: MIT\n\nLong text\n"
OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
SITE = "usr/local/lib/python3.11/dist-packages"


def _members(files: dict[str, str]) -> list[Any]:
    out: list[Any] = []
    for path, text in files.items():
        if text.startswith("->"):
            out.append((TarEntry(path, "symlink", linkname=text[2:]), None))
            continue
        data = text.encode()
        out.append((TarEntry(path, "file", size=len(data)), lambda d=data: contextlib.nullcontext(io.BytesIO(d))))
    return out


def _image(cache: Cache, layers: list[dict[str, str]]) -> Image:
    image = mutate.scratch(PLATFORM, epoch=EPOCH)
    made = []
    for files in layers:
        with cache.blob_writer() as out:
            made.append(write_layer(_members(files), out, compression="gzip", epoch=EPOCH).made_by("test"))
    image = mutate.append_layers(image, made, epoch=EPOCH)
    cache.put_image(image)
    return image


def test_packages_of_each_database_and_the_layer_that_installed_them(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    image = _image(
        cache,
        [
            {
                "var/lib/dpkg/status": BASE_STATUS,
                "usr/lib/os-release": OS_RELEASE,
                "etc/os-release": "->../usr/lib/os-release",
                f"{SITE}/old-1.0.dist-info/METADATA": OLD_METADATA,
            },
            {
                "var/lib/dpkg/status": UPPER_STATUS,
                "var/lib/dpkg/status.d/tzdata": _stanza("tzdata", "2024a-0+deb12u1"),
                "var/lib/rpm/rpmdb.sqlite": "not read",
            },
            {
                f"{SITE}/demo_ext-0.1.0.dist-info/METADATA": METADATA,
                f"{SITE}/.wh.old-1.0.dist-info": "",
                "lib/apk/db/installed": "C:Q1x=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\no:musl\n\nP:zlib\nV:1.3-r0\n",
            },
        ],
    )
    for round_ in ("read", "memoised"):
        inv = read_packages(image, cache.open_blob, cache=cache, workdir=tmp_path)
        got = {(p.ecosystem, p.name): (p.version, p.layer) for p in inv.packages}
        assert got == {
            ("deb", "libc6"): ("2.36-9+deb12u4", 0),
            ("deb", "base-files"): ("12.4+deb12u5", 0),
            ("deb", "libgomp1"): ("12.2.0-14", 1),
            ("deb", "tzdata"): ("2024a-0+deb12u1", 1),
            ("apk", "musl"): ("1.2.4-r2", 2),
            ("apk", "zlib"): ("1.3-r0", 2),
            ("pypi", "demo-ext"): ("0.1.0", 2),
        }, round_
        gomp = next(p for p in inv.packages if p.name == "libgomp1")
        assert (gomp.source, gomp.arch, gomp.summary) == ("gcc-12", "amd64", "libgomp1 for tests")
        assert next(p for p in inv.packages if p.name == "demo-ext").path == f"/{SITE}"
        assert inv.os_release["ID"] == "debian" and inv.os_release["VERSION_ID"] == "12"
        (note,) = inv.notes  # a damaged database: a note, no traceback
        assert note.startswith("/var/lib/rpm/rpmdb.sqlite: an rpm database that cannot be read (not an rpm sqlite")


# -- a build: a base with a package database, a copy layer -----------------------------------

MANIFEST = """\
name: sbomtest
epoch: 1700000000
params: {flavor: plain}
bases: {b: "rootfs:base.tar"}
image:
  base: b
  layers:
    - copy: {from: ./app.txt, to: /opt/app.txt}
outputs: ['oci:out:one']
"""


def _project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.txt").write_text("the app\n")
    (root / "m.yaml").write_text(MANIFEST)
    with tarfile.open(root / "base.tar", "w") as tf:
        for name, text in (
            ("var/lib/dpkg/status", UPPER_STATUS),
            ("etc/os-release", OS_RELEASE),
            (f"{SITE}/demo_ext-0.1.0.dist-info/METADATA", METADATA),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tf.addfile(info, io.BytesIO(text.encode()))
    return root


def validate_spdx(path: Path) -> None:
    """The reference validator (spdx-tools' pyspdxtools) accepts the document."""
    done = subprocess.run([str(PYSPDXTOOLS), "-i", str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"pyspdxtools -i {path}:\n{done.stdout}\n{done.stderr}"


def _oras_discover(*args: str, cwd: Path | None = None) -> set[tuple[str, str]]:
    """(artifactType, digest) of each referrer ``oras discover`` lists."""
    argv = [str(Path(PYTHON).parent / "oras"), "discover", "--format", "json", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
    return {(r["artifactType"], r["digest"]) for r in json.loads(done.stdout).get("referrers") or []}


def referrers(ref: str, *args: str, cwd: Path) -> dict[str, Any]:
    ran = run_cli(["referrers", ref, "--json", *args], cwd=cwd)
    assert ran.code == 0, str(ran)
    result: dict[str, Any] = ran.json
    return result


def saved(listing: dict[str, Any], artifact_type: str, predicate: str | None = None) -> Path:
    """The file ``--save`` wrote of the referrer of ``artifact_type`` (an in-toto statement's: of ``predicate``)."""
    (item,) = [
        r
        for r in listing["referrers"]
        if r["artifact_type"] == artifact_type
        and predicate in (None, r["annotations"].get("in-toto.io/predicate-type"))
    ]
    (file,) = item["files"]
    return Path(file["saved"])


@pytest.mark.integration  # oras, pyspdxtools
def test_a_build_attaches_a_valid_sbom_and_its_provenance_to_its_layout(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    ran = run_cli(["m.yaml", "--cache", "cache", "--json"], cwd=root)
    assert ran.code == 0, str(ran)
    digest = ran.json["digest"]
    assert digest == layout_digest(root / "out", "one")
    (root / "files").mkdir()
    listing = referrers("oci:out:one", "--save", "files", cwd=root)
    assert listing["subject"] == digest
    assert {r["digest"] for r in listing["referrers"]} == {r["digest"] for r in ran.json["referrers"]}
    assert _oras_discover("--oci-layout", "out:one", cwd=root) == {
        (r["artifact_type"], r["digest"]) for r in listing["referrers"]
    }
    sbom_file, prov_file = saved(listing, mt.SPDX_JSON), saved(listing, mt.IN_TOTO_JSON)
    validate_spdx(root / sbom_file)

    sbom = json.loads((root / sbom_file).read_text())
    assert sbom["spdxVersion"] == "SPDX-2.3" and digest[7:] in sbom["documentNamespace"]
    names = {(p["name"], p.get("versionInfo")) for p in sbom["packages"]}
    assert {("libc6", "2.36-9+deb12u4"), ("libgomp1", "12.2.0-14"), ("demo-ext", "0.1.0")} <= names
    assert ("gone", "1.0") not in names  # only installed packages
    base_digest = next(p["versionInfo"] for p in sbom["packages"] if p["name"] == "b")
    purls = {r["referenceLocator"] for p in sbom["packages"] for r in p.get("externalRefs", [])}
    assert "pkg:deb/debian/libgomp1@12.2.0-14?arch=amd64&distro=debian-12" in purls
    assert "pkg:pypi/demo-ext@0.1.0" in purls
    (copied,) = [p for p in sbom["packages"] if p["SPDXID"].startswith("SPDXRef-Copy-")]
    copy_layer = next(x for x in ran.json["layers"] if x["kind"] == "copy")
    assert copied["checksums"] == [{"algorithm": "SHA256", "checksumValue": copy_layer["diff_id"][7:]}]

    statement = json.loads((root / prov_file).read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"] == [{"name": "sbomtest", "digest": {"sha256": digest[7:]}}]
    definition = statement["predicate"]["buildDefinition"]
    manifest_sha = sha256_digest((root / "m.yaml").read_bytes())[7:]
    assert definition["externalParameters"]["manifest"]["digest"] == {"sha256": manifest_sha}
    assert definition["externalParameters"]["params"] == {"flavor": "plain"}
    assert {
        "name": "base:b",
        "digest": {"sha256": base_digest[7:]},
        "annotations": {"what": "rootfs:base.tar"},  # no host path in an output's bytes
    } in definition["resolvedDependencies"]

    # The same inputs into another cache: the same image, the same SBOM and provenance bytes.
    again = run_cli(["m.yaml", "--cache", "cache2", "--json", "-o", "oci:out2:one"], cwd=root)
    assert again.code == 0, str(again)
    assert again.json["digest"] == digest and again.json["referrers"] == ran.json["referrers"]

    # --no-sbom: the same image, nothing attached.
    bare = run_cli(["m.yaml", "--cache", "cache", "--json", "--no-sbom", "-o", "oci:bare:one"], cwd=root)
    assert bare.code == 0, str(bare)
    assert bare.json["digest"] == digest and bare.json["referrers"] == []
    assert [m["digest"] for m in layout_index(root / "bare")["manifests"]] == [digest]
    assert referrers("oci:bare:one", cwd=root)["referrers"] == []


@pytest.mark.integration  # seconds
def test_a_rebuilt_tag_drops_the_old_images_referrers(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    first = run_cli(["m.yaml", "--cache", "cache", "--json"], cwd=root)
    (root / "app.txt").write_text("changed\n")
    second = run_cli(["m.yaml", "--cache", "cache", "--json"], cwd=root)
    assert first.code == second.code == 0, str(second)
    entries = layout_index(root / "out")["manifests"]
    assert [e["digest"] for e in entries] == [second.json["digest"], *(r["digest"] for r in second.json["referrers"])]
    # An untagged layout output stays one manifest: skopeo and podman read `oci:DIR` only then.
    untagged = run_cli(["m.yaml", "--cache", "cache", "--json", "-o", "oci:plain"], cwd=root)
    assert untagged.code == 0, str(untagged)
    assert [e["digest"] for e in layout_index(root / "plain")["manifests"]] == [second.json["digest"]]


def test_pushed_image_lists_its_sbom_and_provenance_as_referrers(tmp_path: Path, registry: RunningRegistry) -> None:
    root = _project(tmp_path / "p")
    ref = f"docker://{registry.host}/sbom/app:1"
    ran = run_cli(["m.yaml", "--cache", "cache", "--json", "-o", ref, "--tls-verify=false"], cwd=root)
    assert ran.code == 0, str(ran)
    digest = ran.json["digest"]
    (output,) = ran.json["outputs"]
    assert list(output["referrers"]) == [r["digest"] for r in ran.json["referrers"]]
    # distribution 2.8 has no referrers API: the tag schema's index lists both.
    answer = requests.get(
        f"{registry.url}/v2/sbom/app/manifests/sha256-{digest[7:]}", headers={"Accept": mt.OCI_INDEX}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    index = answer.json()
    assert sorted(e["artifactType"] for e in index["manifests"]) == [mt.SPDX_JSON, mt.IN_TOTO_JSON]
    (root / "files").mkdir()
    listing = referrers(ref, "--tls-verify=false", "--save", "files", cwd=root)
    assert listing["subject"] == digest
    types = sorted(r["artifact_type"] for r in listing["referrers"])
    assert types == [mt.SPDX_JSON, mt.IN_TOTO_JSON]
    validate_spdx(root / saved(listing, mt.SPDX_JSON))
    statement = json.loads((root / saved(listing, mt.IN_TOTO_JSON)).read_text())
    assert statement["subject"][0]["digest"] == {"sha256": digest[7:]}
    # oras (the CLI scripts/setup --test builds) finds both too, through the same fallback.
    found = _oras_discover("--plain-http", ref.removeprefix("docker://"))
    assert found == {(r["artifact_type"], r["digest"]) for r in listing["referrers"]}
    # Pushing again adds nothing: the same referrers, listed once.
    again = run_cli(["m.yaml", "--cache", "cache", "--json", "-o", ref, "--tls-verify=false"], cwd=root)
    assert again.code == 0, str(again)
    assert len(referrers(ref, "--tls-verify=false", cwd=root)["referrers"]) == 2


# -- the demo --------------------------------------------------------------------------------


def _by_name(sbom: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """The packages of one kind (Base, Source, Artifact, deb, pypi) by name."""
    return {p["name"]: p for p in sbom["packages"] if p["SPDXID"].startswith(f"SPDXRef-{kind}-")}


def _related(sbom: dict[str, Any], kind: str, target: str) -> set[str]:
    """IDs of what stands in relationship ``kind`` to the element ``target``."""
    return {
        r["spdxElementId"]
        for r in sbom["relationships"]
        if r["relationshipType"] == kind and r["relatedSpdxElement"] == target
    }


def test_demo_sbom_lists_its_packages_extension_and_artifacts_and_the_provenance_agrees(
    demo: Demo, registry: RunningRegistry
) -> None:
    ref = f"docker://{registry.host}/demo/sbom:1"
    ran = demo.build("-o", ref, "--tls-verify=false")
    digest = ran.json["digest"]
    files = demo.project / "sbom-files"  # made by --save; a file there from an earlier run is never replaced
    shutil.rmtree(files, ignore_errors=True)
    pushed = referrers(ref, "--tls-verify=false", "--save", str(files), cwd=demo.project)
    assert pushed["subject"] == digest
    # the SBOM, the provenance and the result of the demo's tests (tests:)
    assert sorted(r["artifact_type"] for r in pushed["referrers"]) == [mt.SPDX_JSON, mt.IN_TOTO_JSON, mt.IN_TOTO_JSON]
    oras = _oras_discover("--plain-http", ref.removeprefix("docker://"))
    assert oras == {(r["artifact_type"], r["digest"]) for r in pushed["referrers"]}
    in_layout = referrers("oci:out/demo:latest", cwd=demo.project)
    assert {r["digest"] for r in in_layout["referrers"]} == {r["digest"] for r in pushed["referrers"]}
    sbom_file = saved(pushed, mt.SPDX_JSON)
    validate_spdx(sbom_file)
    sbom = json.loads(sbom_file.read_text())
    debs, bases, sources_, artifacts = (_by_name(sbom, k) for k in ("deb", "Base", "Source", "Artifact"))

    # Debian packages: of the runtime base, and of the image's packages step (its layer 1).
    for name in ("libc6", "libgomp1", "python3-minimal"):
        assert name in debs and debs[name]["versionInfo"], name
    assert "layer 1, installed by runtime step" in debs["libgomp1"]["comment"]
    assert "installed by the base runtime" in debs["libc6"]["comment"]
    # The Python extension, inside the artifact layer that ships it.
    ext = _by_name(sbom, "pypi")["demo-ext"]
    assert ext["versionInfo"] == "0.1.0"
    assert _related(sbom, "CONTAINS", ext["SPDXID"]) >= {"SPDXRef-Image", artifacts["pyext.site"]["SPDXID"]}

    # Each compiled artifact: its layer's diff_id, generated from its sources' digests, built on devel.
    sources = yaml_helper.load(demo.manifest)["sources"]
    expected = {
        name: tree_digest((demo.manifest.parent / s["path"]).resolve(), tuple(s.get("exclude", [])))
        for name, s in sources.items()
    }
    layers = {x["what"].removeprefix("artifact "): x for x in ran.json["layers"] if x["kind"] == "artifact"}
    assert set(layers) == {"tokenizer.libs", "tokenizer.bin", "kernels.saxpy", "pyext.site", "launcher.bin"}
    keys = {s["name"]: s["key"] for s in ran.json["steps"]}
    devel = bases["devel"]
    for ref_, layer in layers.items():
        art = artifacts[ref_]
        step = ref_.partition(".")[0]
        assert art["checksums"] == [{"algorithm": "SHA256", "checksumValue": layer["diff_id"][7:]}]
        assert f"key {keys[step]}" in art["comment"] and devel["versionInfo"] in art["comment"]
        origins = {
            r["relatedSpdxElement"]
            for r in sbom["relationships"]
            if r["spdxElementId"] == art["SPDXID"] and r["relationshipType"] == "GENERATED_FROM"
        }
        assert {sources_[step]["SPDXID"]} == origins and sources_[step]["versionInfo"] == expected[step]
        assert devel["SPDXID"] in _related(sbom, "BUILD_TOOL_OF", art["SPDXID"])
    saxpy = artifacts["kernels.saxpy"]["SPDXID"]
    assert artifacts["cuda.prefix"]["SPDXID"] in _related(sbom, "BUILD_DEPENDENCY_OF", saxpy)

    # The provenance names the same digests: image, bases, sources, step keys.
    statement = json.loads(saved(pushed, mt.IN_TOTO_JSON, mt.PREDICATE_TYPES["slsaprovenance1"]).read_text())
    assert statement["subject"][0]["digest"] == {"sha256": digest[7:]}
    definition = statement["predicate"]["buildDefinition"]
    deps = {d["name"]: d["digest"] for d in definition["resolvedDependencies"]}
    for name, value in expected.items():
        assert deps[f"source:{name}"] == {"sha256": value[7:]}
    for name in ("devel", "runtime"):
        assert deps[f"base:{name}"] == {"sha256": layout_digest(demo.bases[name], "latest")[7:]}
        assert bases[name]["versionInfo"] == f"sha256:{deps[f'base:{name}']['sha256']}"
    assert "recipe:cuda-toolchain" in deps
    steps = definition["internalParameters"]["steps"]
    assert {n: s["key"] for n, s in steps.items()} == {n: k for n, k in keys.items() if k}
    assert definition["externalParameters"]["manifest"]["digest"] == {
        "sha256": sha256_digest(demo.manifest.read_bytes())[7:]
    }


@pytest.mark.integration  # seconds
def test_referrers_save_makes_its_folder_and_never_replaces_or_follows(tmp_path: Path) -> None:
    """--save writes under names the image's author chose: it made no folder, overwrote
    files and wrote through symlinks (issue 32). Now DIR is made, and a name taken by a file
    or a link there is refused (exit 2), with nothing written through it."""
    root = _project(tmp_path / "p")
    assert run_cli(["m.yaml", "--cache", "cache"], cwd=root).code == 0
    listing = referrers("oci:out:one", "--save", "new/files", cwd=root)
    sbom = root / saved(listing, mt.SPDX_JSON)
    assert sbom.parent == root / "new" / "files" and sbom.stat().st_size > 0
    first = sbom.read_bytes()
    again = run_cli(["referrers", "oci:out:one", "--save", "new/files"], cwd=root)
    assert again.code == 2 and "exists already; not replacing it" in again.err, str(again)
    assert sbom.read_bytes() == first
    outside = tmp_path / "outside.json"
    outside.write_text("mine\n")
    (root / "trap").mkdir()
    (root / "trap" / sbom.name).symlink_to(outside)
    trapped = run_cli(["referrers", "oci:out:one", "--save", "trap"], cwd=root)
    assert trapped.code == 2 and "exists already" in trapped.err, str(trapped)
    assert outside.read_text() == "mine\n" and (root / "trap" / sbom.name).is_symlink()
