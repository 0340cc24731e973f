"""Cross-checks of a loaded manifest: references between its parts, host paths, transport
references and the platform. Each failure is a ManifestError naming file, line and field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from assembler.errors import BadPlatform, BadReference
from assembler.manifest.facts import check_facts
from assembler.manifest.load import labelfacts, sourcefacts
from assembler.manifest.load.constraints import check_constraints
from assembler.manifest.schema import model as m
from assembler.manifest.schema.prebuilt import HostFile
from assembler.manifest.text.yamlfile import PathKey
from assembler.oci.descriptor import Platform
from assembler.oci.reference import parse_ref

if TYPE_CHECKING:
    from assembler.manifest.load.loaded import Loaded


def _inside(folder: Path, candidate: Path) -> bool:
    try:
        candidate.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _check_source_facts(loaded: Loaded) -> None:
    """``${sources.NAME.FIELD}`` (and ``${steps...}``, ``${bases...}``) in labels and annotations
    name a source (step, base) and a known field."""
    man = loaded.manifest
    places: list[tuple[PathKey, str]] = [
        (("image", "config", "labels", k), v) for k, v in man.image.config.labels.items()
    ]
    places += [(("annotations", k), v) for k, v in man.annotations.items()]
    for tname, target in man.targets.items():  # every target's, as for layers
        if target.config is not None:
            places += [(("targets", tname, "config", "labels", k), v) for k, v in target.config.labels.items()]
        places += [(("targets", tname, "annotations", k), str(v)) for k, v in target.annotations.items()]
    for path, value in places:
        try:
            refs = sourcefacts.references(value)
        except ValueError as e:  # sourcefacts' own, for a malformed placeholder
            raise loaded.error(path, str(e)) from None
        for name, _ in refs:
            if name not in man.sources:
                known = ", ".join(sorted(man.sources)) or "none"
                raise loaded.error(path, f"unknown source {name!r} in ${{sources.{name}...}}", hint=f"sources: {known}")
        _check_label_facts(loaded, path, value)


def _check_label_facts(loaded: Loaded, path: PathKey, value: str) -> None:
    """``${steps.NAME.FIELD}`` names a compile step, ``${bases.NAME...}`` a base."""
    man = loaded.manifest
    try:
        refs = labelfacts.references(value)
    except ValueError as e:  # labelfacts' own, for a malformed placeholder
        raise loaded.error(path, str(e)) from None
    for ref in refs:
        names = [s.name for s in man.compile] if ref.kind == "steps" else list(man.bases)
        if ref.name not in names:
            what = "compile step" if ref.kind == "steps" else "base"
            raise loaded.error(
                path,
                f"unknown {what} {ref.name!r} in ${{{ref.kind}.{ref.name}...}}",
                hint=f"{ref.kind}: {', '.join(sorted(names)) or 'none'}",
            )


def check(loaded: Loaded, *, overridden_sources: frozenset[str] = frozenset()) -> None:
    """References between parts, host paths and transport references; ManifestError."""
    _check_bases_and_sources(loaded, overridden_sources)
    artifacts = _check_compile_steps(loaded)
    _check_layers(loaded, artifacts)
    _check_pip_twice(loaded)
    _check_weights(loaded)
    _check_source_facts(loaded)
    check_constraints(loaded)
    check_facts(loaded)
    man = loaded.manifest
    for i, out in enumerate(man.outputs):
        try:
            parsed = parse_ref(out)
        except BadReference as e:
            raise loaded.error(("outputs", i), str(e)) from None
        if parsed.base_only:
            raise loaded.error(("outputs", i), f"{parsed.transport} is a base, not an output")
    try:
        Platform.parse(man.platform)
    except BadPlatform as e:
        raise loaded.error(("platform",), str(e)) from None


def _check_bases_and_sources(loaded: Loaded, overridden_sources: frozenset[str]) -> None:
    man = loaded.manifest
    for name, base in man.bases.items():
        ref = base if isinstance(base, str) else base.ref if isinstance(base, m.RefBase) else None
        if ref is not None:
            try:
                parsed = parse_ref(ref)
            except BadReference as e:
                raise loaded.error(("bases", name), str(e)) from None
            if parsed.not_a_base is not None:
                raise loaded.error(("bases", name), f"{parsed.not_a_base} cannot be a base")
    if man.image.base not in man.bases:
        raise loaded.error(("image", "base"), f"unknown base {man.image.base!r}", hint=f"bases: {_names(man.bases)}")
    for name, src in man.sources.items():
        if isinstance(src, m.PathSource) and name not in overridden_sources:
            p = loaded.folder / src.path
            if not p.is_dir():
                raise loaded.error(("sources", name, "path"), f"folder does not exist: {p}")


def _names(mapping: Mapping[str, object]) -> str:
    return ", ".join(sorted(mapping)) or "none"


def _check_compile_steps(loaded: Loaded) -> dict[str, set[str]]:
    """Check each compile step; the artifacts each declares, by step name."""
    man = loaded.manifest
    err = loaded.error
    base_names = _names(man.bases)
    artifacts: dict[str, set[str]] = {}
    for i, step in enumerate(man.compile):
        where: PathKey = ("compile", i)
        if step.name in artifacts:
            raise err((*where, "name"), f"duplicate step name {step.name!r}")
        if step.base is None:
            raise err(where, "a compile step needs a base", hint=f"bases: {base_names}")
        if step.base not in man.bases:
            raise err((*where, "base"), f"unknown base {step.base!r}", hint=f"bases: {base_names}")
        if not step.run:
            raise err((*where, "run"), "a compile step needs commands to run")
        if not step.artifacts:
            raise err((*where, "artifacts"), "a compile step needs at least one artifact")
        for j, src_name in enumerate(step.sources):
            if src_name not in man.sources:
                raise err((*where, "sources", j), f"unknown source {src_name!r}")
        for j, ref in enumerate(step.inputs):
            _check_artifact_ref(loaded, ref, artifacts, (*where, "inputs", j), whole_step=False)
        for var in step.secrets:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
                raise err((*where, "secrets"), f"{var!r} is not an environment variable name")
        artifacts[step.name] = set(step.artifacts)
    return artifacts


def _check_layers(loaded: Loaded, artifacts: Mapping[str, set[str]]) -> None:
    # Every target's layers are checked, not only the chosen one's: a broken reference in
    # another target is found now, not when someone builds that target.
    man = loaded.manifest
    every_layer: list[tuple[m.LayerSpec, PathKey]] = list(zip(man.image.layers, loaded.layer_paths, strict=True))
    for tname, target in man.targets.items():
        if tname == loaded.target:
            continue
        every_layer += [(layer, ("targets", tname, "layers", i)) for i, layer in enumerate(target.layers or [])]
        every_layer += [(layer, ("targets", tname, "add_layers", i)) for i, layer in enumerate(target.add_layers)]
    for layer, path in every_layer:
        for ref in layer.step_refs():
            _check_artifact_ref(loaded, ref.ref, artifacts, (*path, *ref.field), whole_step=ref.whole_step)
        for host_file in layer.host_files():
            _check_host_file(loaded, host_file, path)


def _check_pip_twice(loaded: Loaded) -> None:
    """One distribution in one site-packages from one pip: layer: a second would leave both
    versions' dist-info (pip uninstalls the first; a layer cannot), and the SBOM lists both."""
    seen: dict[tuple[str, str], PathKey] = {}
    for layer, path in zip(loaded.manifest.image.layers, loaded.layer_paths, strict=True):
        for installs in layer.installs():
            if installs.site is None:  # its commands install it, or its wheels are files
                continue
            for i, text in enumerate(installs.pyset.requirements):
                key = (installs.site, canonicalize_name(Requirement(text).name))  # a plain pin (plain_pin)
                if key in seen:
                    line = loaded.locs.line(seen[key])
                    first = ".".join(map(str, seen[key])) + (f" (line {line})" if line else "")
                    raise loaded.error(
                        (*path, *installs.at, installs.listed, i),
                        f"{key[1]} is installed into {key[0]} by {first} too",
                        hint="list each distribution once (in one pip: layer)",
                    )
                seen[key] = path


def _check_weights(loaded: Loaded) -> None:
    """Each model's folder is there, and each goes where no other does (nor inside another)."""
    seen: dict[str, str] = {}
    for name, spec in loaded.manifest.weights.items():
        if spec.kind == "path" and not (loaded.folder / spec.source).is_dir():
            raise loaded.error(("weights", name, "source"), f"{spec.source}: no such folder beside the manifest")
        for other, at in seen.items():
            if spec.at == at or spec.at.startswith(at + "/") or at.startswith(spec.at + "/"):
                raise loaded.error(
                    ("weights", name, "at"),
                    f"{spec.at}: weights {other} go to {at}: one model's folder would hide the other's",
                    hint="give each model a folder of its own (/models/NAME)",
                )
        seen[name] = spec.at


def _check_artifact_ref(
    loaded: Loaded, ref: str, artifacts: Mapping[str, set[str]], path: PathKey, *, whole_step: bool
) -> str:
    step, _, name = ref.partition(".")
    if step not in artifacts:
        known = ", ".join(sorted(artifacts)) or "none"
        raise loaded.error(
            path, f"no compile step {step!r} (before this point) declares artifacts", hint=f"steps: {known}"
        )
    if not name:
        if whole_step:
            return step
        raise loaded.error(path, f"name the artifact: {step}.NAME")
    if name not in artifacts[step]:
        known = ", ".join(sorted(artifacts[step]))
        raise loaded.error(path, f"step {step!r} declares no artifact {name!r}", hint=f"its artifacts: {known}")
    return step


def _check_host_file(loaded: Loaded, host_file: HostFile, path: PathKey) -> None:
    """A host file a layer puts in the image (a ``copy:``'s, or a registered kind's) stays
    inside the manifest's folder and exists; it goes to an absolute path."""
    source, where = host_file.source, (*path, *host_file.source_field)
    if Path(source).is_absolute():
        raise loaded.error(where, "must be relative to the manifest's folder")
    if ".." in Path(source).parts:
        raise loaded.error(where, "escapes the manifest's folder with '..'")
    host = loaded.folder / source
    if not host.exists():  # named: which of a manifest's copies, and looked for where (issue 67)
        raise loaded.error(where, f"path does not exist: {source} (looked for {host})")
    if not _inside(loaded.folder, host):
        raise loaded.error(where, "resolves outside the manifest's folder (through a symlink)")
    if not host_file.to.startswith("/"):
        raise loaded.error((*path, *host_file.to_field), "must be an absolute path in the image")
