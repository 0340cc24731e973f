"""ROCm bases against the releases they were made for (``rocm_images.json``), and the ROCm
release a manifest names against the one its image's base is.

- A ``rocm/dev-ubuntu-X`` base's tag names a ROCm release (``6.4-complete``); AMD made each
  Ubuntu line from a release on (24.04 from 6.2, 22.04 from 5.3) and 18.04's through 5.3:
  ``rocm/dev-ubuntu-24.04:5.7-complete`` was never made.
- An image base whose tag names its ROCm release (``lmsysorg/sglang:v0.4.5-rocm630``: 6.3,
  ``rocm/dev-ubuntu-22.04:6.4-complete``) is that ROCm: a ``rocm_version`` param (the
  ROCm the manifest says it builds for, :data:`assembler.pipeline.image.labels.VERSIONS`)
  of another major.minor names a ROCm the image does not have.

A line not listed, or a base whose tag names no release (``rocm/vllm-dev:base``), refuses
nothing.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from assembler.manifest.facts.archs import release_of
from assembler.manifest.facts.bases import parse
from assembler.manifest.facts.data import read, where
from assembler.manifest.facts.scope import base_ref, describe, params_at, places, settable

if TYPE_CHECKING:
    from assembler.manifest.facts.subject import Subject


def _minor(text: str) -> tuple[int, int] | None:
    found = re.match(r"^v?(\d+)\.(\d+)", text.strip())
    return (int(found.group(1)), int(found.group(2))) if found else None


def check(loaded: Subject) -> None:
    """Each base's ROCm release against its line, then ``rocm_version`` against the image's
    base; ManifestError."""
    seen: set[str] = set()
    for base in [place.base for place in places(loaded)] + [loaded.manifest.image.base]:
        if base not in seen:
            seen.add(base)
            _check_line(loaded, base)
    _check_claimed(loaded)


def _check_line(loaded: Subject, name: str) -> None:
    ref = base_ref(loaded, name) or ""
    image = parse(ref)
    repository = re.sub(r"^docker\.io/(?:library/)?", "", image.repository) if image is not None else ""
    line = read("rocm_images")["lines"].get(repository)
    release = _minor(image.tag) if image is not None else None
    if image is None or line is None or release is None:
        return
    since, last = _minor(line.get("since", "")), _minor(line.get("last", ""))
    if since is not None and release < since:
        made = f"from ROCm {line['since']} on"
    elif last is not None and release > last:
        made = f"through ROCm {line['last']} only"
    else:
        return
    params = params_at(loaded, ("bases", name), ref)
    raise loaded.error(
        ("bases", name),
        f"base {name}: {repository}:{image.tag}"
        + (f" ({describe(loaded, params)})" if params else "")
        + f" names ROCm {release[0]}.{release[1]}, but AMD made {repository} {made} "
        f"({line['source']}; {where('rocm_images')})",
        hint=f"--set {' or '.join(settable(loaded, params)) or 'the base'} to a ROCm release that line was made "
        "for, or another Ubuntu line",
    )


def _check_claimed(loaded: Subject) -> None:
    claimed = str(loaded.params.get("rocm_version", "")).strip()
    base = loaded.manifest.image.base
    ref = base_ref(loaded, base) or ""
    release = release_of(ref)
    if not claimed or release is None or _minor(claimed) is None or _minor(claimed) == _minor(release):
        return
    target = loaded.target
    raw = loaded.raw.get("targets", {}).get(target, {}) if target else {}
    set_by_target = isinstance(raw, dict) and "rocm_version" in (raw.get("params") or {})
    path = ("targets", target, "params", "rocm_version") if target and set_by_target else ("params", "rocm_version")
    params = params_at(loaded, ("bases", base), ref)
    names = ["rocm_version", *[p for p in settable(loaded, params) if p != "rocm_version"]]
    raise loaded.error(
        path,
        f"rocm_version={claimed} is not the ROCm of the image's base {base}, {ref.removeprefix('docker://')}"
        + (f" ({describe(loaded, params)})" if params else "")
        + f", whose tag names ROCm {release}: the image would claim a ROCm it does not have",
        hint=f"--set {' or '.join(names)} so that they agree (rocm_version={release} for this base)",
    )
