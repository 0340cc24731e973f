"""What a lock pins besides Python sets: each ``docker://`` base's tag to the digest it named
when locked (built as ``REPO:TAG@sha256:...``: the tag stays readable, the digest decides), and
each git source's branch or tag to its commit (fetched instead of the ref; the labels still
say the ref). Keyed by what they pin (``base REF PLATFORM``, ``git URL REF``), so a changed
param that names another tag or ref is not in the lock, as a changed set is not. A git URL
is keyed and written without its credentials (:mod:`assembler.manifest.text.urls`); the pin to make
holds the URL as the manifest gives it, for the fetch."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from assembler.manifest.schema import model as m
from assembler.manifest.text.urls import redacted


@dataclass(frozen=True)
class Pin:
    """A base's digest or a git ref's commit (``value``), or why there is none."""

    kind: str  # base | git
    what: str  # the reference, or the URL (as a lock holds it: without credentials)
    ref: str = ""  # a git source's branch or tag
    value: str | None = None
    unresolved: str | None = None

    def to_data(self) -> dict[str, str]:
        data = {"kind": self.kind, "what": self.what, **({"ref": self.ref} if self.ref else {})}
        return {
            **data,
            **({"value": self.value} if self.value else {}),
            **({"unresolved": self.unresolved} if self.unresolved else {}),
        }

    @staticmethod
    def from_data(data: Mapping[str, str]) -> Pin:
        return Pin(
            str(data["kind"]), str(data["what"]), str(data.get("ref", "")), data.get("value"), data.get("unresolved")
        )


def base_ref(spec: m.BaseSpec) -> str | None:
    """A base's ``docker://`` reference with a tag and no digest (what a lock pins), else None."""
    ref = spec if isinstance(spec, str) else spec.ref if isinstance(spec, m.RefBase) else None
    if ref is None or not ref.startswith("docker://") or "@" in ref:
        return None
    return ref


def floating(manifest: m.Manifest, platform: str, used: Collection[str]) -> dict[str, tuple[str, Pin]]:
    """where (``bases.NAME``, ``sources.NAME``) -> (key, what to pin) of every floating input
    the image is made from: its bases, those of the ``used`` compile steps, their sources and
    the sources its labels name."""
    out: dict[str, tuple[str, Pin]] = {}
    steps = [step for step in manifest.compile if step.name in used]
    bases = {manifest.image.base, *(step.base for step in steps if step.base)}
    named = repr(manifest.annotations) + repr(manifest.image.config.labels)
    sources = {s for step in steps for s in step.sources} | {s for s in manifest.sources if f"sources.{s}." in named}
    for name, spec in manifest.bases.items():
        ref = base_ref(spec)
        if ref is not None and name in bases:
            out[f"bases.{name}"] = (f"base {ref} {platform}", Pin("base", ref))
    for name, src in manifest.sources.items():
        if isinstance(src, m.GitSource) and name in sources:
            out[f"sources.{name}"] = (f"git {redacted(src.git)} {src.ref}", Pin("git", src.git, src.ref))
    return out


def pinned(manifest: m.Manifest, values: Mapping[str, str]) -> m.Manifest:
    """The manifest with ``values`` (where -> digest or commit) applied."""
    bases = dict(manifest.bases)
    sources = dict(manifest.sources)
    for where, value in values.items():
        kind, _, name = where.partition(".")
        if kind == "bases":
            spec = bases[name]
            ref = f"{base_ref(spec)}@{value}"
            bases[name] = m.RefBase(ref=ref, platform=spec.platform) if isinstance(spec, m.RefBase) else ref
        elif kind == "sources" and isinstance(sources[name], m.GitSource):
            sources[name] = sources[name].model_copy(update={"commit": value})
    return manifest.model_copy(update={"bases": bases, "sources": sources})
