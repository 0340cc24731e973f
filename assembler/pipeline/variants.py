"""Many images in one run: repeated ``--target``, ``--all-targets`` and a manifest's
``matrix:`` over params (and ``platform``). Each combination x target is a variant.

Variants are built one after another in one process with one cache: a step they share
has one key, so the first variant runs it and the others find it cached (also under
``--no-cache``/``--rebuild``: ``Options.made_keys``). Outputs are checked for clashes
before anything is built. Output texts are templates: ``${name}``, ``${target}``,
``${variant}``, ``${platform}`` and every param; a ``-o docker://REG/`` (ending in ``/``) gets the
manifest's ``tag_template`` (default ``${name}:${variant}``) appended.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from assembler.errors import AssemblerError, BadPlatform, InputError
from assembler.manifest.load.constraints import check_platforms
from assembler.manifest.load.manifest import Loaded, load_manifest
from assembler.manifest.schema.fields import scalar_to_str
from assembler.manifest.text.yamlfile import Locations, load
from assembler.oci.descriptor import Platform
from assembler.oci.reference import absolute_ref, parse_ref
from assembler.pipeline.options import Event, Options, Reporter
from assembler.pipeline.writers import writer_for

DEFAULT_TAG_TEMPLATE = "${name}:${variant}"
# Variants are loaded and checked one by one before anything is built (a second or so each
# with the manifest's plan): past this many a run would sit for hours printing nothing.
MAX_VARIANTS = 256
_VAR = re.compile(r"\$\$\{|\$\{([a-z][a-z0-9_]*)\}")


@dataclass(frozen=True)
class Variant:
    """One image of a run: a loaded manifest (target and params applied), its matrix
    values, its platform (None: the manifest's) and its outputs (None: the manifest's)."""

    loaded: Loaded
    values: Mapping[str, str]
    platform: Platform | None
    outputs: tuple[str, ...] | None

    @property
    def target(self) -> str | None:
        return self.loaded.target

    @property
    def name(self) -> str:
        parts = [self.loaded.target or self.loaded.manifest.name, *(f"{k}={v}" for k, v in self.values.items())]
        return " ".join(parts + ([str(self.platform)] if self.platform else []))

    @property
    def image_key(self) -> tuple[Any, ...]:
        """Equal for variants that differ only in platform (one index carries them)."""
        return self.loaded.target, tuple(self.values.items())

    def options(self, base: Options) -> Options:
        return replace(base, outputs=self.outputs, platform=self.platform or base.platform)

    def output_texts(self) -> tuple[str, ...]:
        return self.outputs if self.outputs is not None else tuple(self.loaded.manifest.outputs)

    def describe(self) -> dict[str, Any]:
        return {
            "variant": self.name,
            "target": self.target,
            "matrix": dict(self.values),
            "platform": str(self.platform) if self.platform else None,
            "params": dict(self.loaded.params),
        }


def expand(template: str, values: Mapping[str, str], *, what: str) -> str:
    """``template`` with ``${var}`` replaced (``$${`` is a literal ``${``)."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        if match.group(1) not in values:
            known = ", ".join(sorted(values))
            raise InputError(f"{what}: unknown variable ${{{match.group(1)}}}", hint=f"variables: {known}")
        return values[match.group(1)]

    return _VAR.sub(repl, template)


def _matrix(data: dict[str, Any], locs: Locations, sets: Mapping[str, str]) -> dict[str, list[str]]:
    """The manifest's ``matrix:``, checked (file:line), narrowed by ``--set`` of its params."""
    raw = data.get("matrix")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise locs.error(("matrix",), "expected a mapping: param (or platform) -> list of values")
    params = data.get("params")
    declared: dict[str, Any] = params if isinstance(params, dict) else {}
    matrix: dict[str, list[str]] = {}
    for name, values in raw.items():
        if name != "platform" and name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise locs.error(("matrix", name), f"unknown param {name!r}", hint=f"params: {known}; or platform")
        if not isinstance(values, list) or not values or any(isinstance(v, dict | list) or v is None for v in values):
            raise locs.error(("matrix", name), "expected a non-empty list of values")
        texts = [scalar_to_str(v) for v in values]
        seen: set[str] = set()
        for i, text in enumerate(texts):
            if text in seen:
                raise locs.error(("matrix", name, i), f"{text!r} is listed twice")
            seen.add(text)
            if name == "platform":
                try:
                    Platform.parse(text)
                except BadPlatform as e:
                    raise locs.error(("matrix", name, i), str(e)) from None
        matrix[name] = [sets[name]] if name in sets else texts
    return matrix


def _check_count(
    matrix: Mapping[str, Sequence[str]], n_targets: int, n_platforms: int, *, data: dict[str, Any], locs: Locations
) -> None:
    """ManifestError (at ``matrix:``, else ``targets:``) when a run would have more than
    MAX_VARIANTS variants: every matrix combination x target x platform."""
    count = n_targets * n_platforms
    for values in matrix.values():
        count *= len(values)
    if count <= MAX_VARIANTS:
        return
    factors = [f"{len(v)} {k}" for k, v in matrix.items()]
    factors += [f"{n_targets} targets"] if n_targets > 1 else []
    factors += [f"{n_platforms} platforms"] if n_platforms > 1 else []
    raise locs.error(
        ("matrix",) if "matrix" in data else ("targets",),
        f"{count} variants ({' x '.join(factors)}): more than {MAX_VARIANTS} in one run",
        hint="narrow the run with --set NAME=VALUE, --platform or --target, or split the matrix",
    )


def _targets(data: dict[str, Any], locs: Locations, targets: Sequence[str], all_targets: bool) -> list[str | None]:
    if all_targets:
        declared = data.get("targets")
        if not isinstance(declared, dict) or not declared:
            raise locs.error(("targets",) if "targets" in data else (), "--all-targets: this manifest has no targets")
        return list(declared)
    return list(dict.fromkeys(targets)) or [None]


def load_variants(
    path: Path,
    *,
    sets: Mapping[str, str],
    targets: Sequence[str] = (),
    all_targets: bool = False,
    bases: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    platforms: Sequence[Platform] = (),
    outputs: Sequence[str] | None = None,
    unlocked: Collection[str] = (),
) -> list[Variant]:
    """Every variant a run builds, each loaded and checked, outputs expanded and checked
    for clashes. Raises ManifestError (file:line) or InputError before anything is built."""
    data, locs = load(path)
    if not isinstance(data, dict):
        load_manifest(path)  # raises its own error for a manifest that is not a mapping
    matrix = _matrix(data, locs, sets)
    plats: list[Platform | None] = list(platforms) or [None]
    if "platform" in matrix:
        listed: list[Platform | None] = [Platform.parse(p) for p in matrix.pop("platform")]
        plats = list(platforms) or listed  # --platform narrows the matrix, as --set does
    names = _targets(data, locs, targets, all_targets)
    _check_count(matrix, len(names), len(plats), data=data, locs=locs)
    variants = []
    for combo in itertools.product(*matrix.values()):
        values = dict(zip(matrix, combo, strict=True))
        for target in names:
            for plat in plats:
                loaded = load_manifest(
                    path, sets={**sets, **values}, target=target, bases=bases, sources=sources, unlocked=unlocked
                )
                check_platforms(loaded, [plat] if plat else [])
                variant = Variant(loaded, values, plat, None)
                if outputs is not None:
                    variant = replace(variant, outputs=_expand_outputs(variant, outputs, locs))
                variants.append(variant)
    check_outputs(variants)
    return variants


def _expand_outputs(variant: Variant, outputs: Sequence[str], locs: Locations) -> tuple[str, ...]:
    loaded = variant.loaded
    word = "-".join([*([loaded.target] if loaded.target else []), *variant.values.values()]) or "latest"
    plat = variant.platform or Platform.parse(loaded.manifest.platform)
    values = {
        **loaded.params,
        "name": loaded.manifest.name,
        "target": loaded.target or "",
        "variant": word,
        "platform": str(plat).replace("/", "-"),
    }
    texts = []
    for text in outputs:
        out = expand(text, values, what=f"-o {text}")
        if out.startswith("docker://") and out.endswith("/"):  # a registry (or namespace) to push to
            template = loaded.manifest.tag_template or DEFAULT_TAG_TEMPLATE
            try:
                out += expand(template, values, what="tag_template")
            except InputError as e:
                raise locs.error(("tag_template",), e.message, hint=e.hint) from None
        texts.append(out)
    return tuple(texts)


def _same_output(text: str) -> str:
    try:
        return str(absolute_ref(parse_ref(text), Path.cwd()))
    except ValueError:
        return text  # not a reference: the build reports it, with where it is written


def _holds_index(text: str) -> bool:
    """Whether output ``text`` can hold the images of several platforms (one index)."""
    try:
        return writer_for(parse_ref(text)).holds_index
    except (ValueError, InputError):
        return False  # not an output: the build reports it


def check_outputs(variants: Sequence[Variant]) -> None:
    """Two variants writing one output is an error, unless only their platforms differ:
    then one index carries them."""
    seen: dict[str, Variant] = {}
    for v in variants:
        for text in v.output_texts():
            other = seen.setdefault(_same_output(text), v)
            if other.image_key != v.image_key:
                raise InputError(
                    f"{text}: variants {other.name!r} and {v.name!r} would both write it",
                    hint="put ${target} or a matrix param (${variant}, ${name}...) in -o, or push to docker://REG/",
                )
            if other is not v and not _holds_index(text):
                raise InputError(
                    f"{text}: images of several platforms under one name go to oci: or docker:// "
                    "outputs only (one index carries them)",
                    hint="put ${platform} in it",
                )


def platform_groups(variants: Sequence[Variant]) -> list[list[Variant]]:
    """The variants in order, those differing only in platform together (one index)."""
    groups: dict[tuple[Any, ...], list[Variant]] = {}
    for v in variants:
        groups.setdefault(v.image_key, []).append(v)
    return list(groups.values())


def named(error: AssemblerError, variant: Variant) -> AssemblerError:
    """``error`` naming the variant it happened in. The same object, so that its type,
    fields and exit code stay what the failure says."""
    error.message = f"variant {variant.name}: {error.message}"
    return error


def report_variant(report: Reporter, variant: Variant, state: str, **fields: Any) -> None:
    report(Event("variant", {**variant.describe(), "name": variant.name, "state": state, **fields}))
