"""Versions the image claims for a source against the git ref it builds (``refs.json``).

A source is claimed to be release V where the image's version annotation or label
(``org.opencontainers.image.version``) sits next to a revision naming that source
(``${sources.NAME.revision}``), and where a compile step building that one source tells
setuptools-scm its version (``SETUPTOOLS_SCM_PRETEND_VERSION``). The ref must be that
release: a tag names it (``v0.16.4`` is 0.16.4); a commit must be the one its tag points
to, where the data knows that tag's commit, and a commit the data knows as another
release's tag is refused. A branch, or a commit the data does not know, is not checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version

from assembler.manifest.facts.data import read, where
from assembler.manifest.facts.scope import describe, params_at, settable
from assembler.manifest.schema import model as m
from assembler.manifest.schema.setuses import used_steps
from assembler.manifest.text.yamlfile import PathKey

if TYPE_CHECKING:
    from assembler.manifest.facts.subject import Subject

_REVISION = re.compile(r"\$\{sources\.([^}]+)\.revision\}")
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
VERSION_KEY = "org.opencontainers.image.version"
REVISION_KEY = "org.opencontainers.image.revision"


def _claims(loaded: Subject) -> Iterator[tuple[str, str, PathKey]]:
    """(source, version, where the version is written) of every claim."""
    man = loaded.manifest
    target = man.targets.get(loaded.target or "")
    mappings: list[tuple[PathKey, PathKey, Mapping[str, object], Mapping[str, object]]] = [
        (("annotations",), ("annotations",), man.annotations, target.annotations if target else {}),
        (
            ("image", "config", "labels"),
            ("config", "labels"),
            man.image.config.labels,
            target.config.labels if target is not None and target.config is not None else {},
        ),
    ]
    for path, in_target, values, targets in mappings:
        version, revision = str(values.get(VERSION_KEY, "")), str(values.get(REVISION_KEY, ""))
        found = _REVISION.search(revision)
        if found and version and "${" not in version:
            own = VERSION_KEY in targets
            yield (
                found.group(1),
                version,
                ("targets", loaded.target or "", *in_target, VERSION_KEY)
                if own
                else (
                    *path,
                    VERSION_KEY,
                ),
            )
    used = used_steps(man)
    for i, step in enumerate(man.compile):
        version = str(step.env.get("SETUPTOOLS_SCM_PRETEND_VERSION", ""))
        named = [s for s in step.sources if s]
        if step.name in used and version and len(named) == 1:
            yield named[0], version, ("compile", i, "env", "SETUPTOOLS_SCM_PRETEND_VERSION")


def _release(text: str) -> Version | None:
    try:
        return Version(text.strip().removeprefix("v").removeprefix("V"))
    except InvalidVersion:
        return None


def check(loaded: Subject) -> None:
    """Every claim against its source's ref; ManifestError."""
    for name, version, path in _claims(loaded):
        source = loaded.manifest.sources.get(name)
        if not isinstance(source, m.GitSource):
            continue  # a folder (--source) or a download: its ref says nothing
        claimed = _release(version)
        if claimed is None:
            continue
        why = _mismatch(source, claimed)
        if why:
            _refuse(loaded, name, source, version, path, why)


def _mismatch(source: m.GitSource, claimed: Version) -> str:
    """Why ``source``'s ref is not release ``claimed``; "" when it is (or nothing says)."""
    ref = source.ref.strip()
    tags: dict[str, str] = read("refs")["repositories"].get(source.git, {}).get("tags", {})
    if not _COMMIT.match(ref):
        named = _release(ref)
        if named is None or named == claimed or not re.match(r"^[vV]?\d", ref):
            return ""  # a branch, or the very release
        return f"the tag {ref} is release {named}"
    wanted = next((commit for tag, commit in tags.items() if _release(tag) == claimed), None)
    if wanted is not None:
        same = ref.startswith(wanted) or wanted.startswith(ref)
        return "" if same else f"v{claimed} is commit {wanted} ({where('refs')})"
    other = next((tag for tag, commit in tags.items() if ref.startswith(commit) or commit.startswith(ref)), None)
    return f"{ref} is {other}'s commit ({where('refs')})" if other else ""


def _refuse(loaded: Subject, name: str, source: m.GitSource, version: str, path: PathKey, why: str) -> None:
    version_params = params_at(loaded, path, version)
    ref_params = params_at(loaded, ("sources", name, "ref"), source.ref)
    ref_said = f" ({describe(loaded, ref_params)})" if ref_params else ""
    version_said = f" ({describe(loaded, version_params)})" if version_params else ""
    fix = settable(loaded, ref_params)
    raise loaded.error(
        path,
        f"version {version}{version_said} is claimed for source {name}, whose ref {source.ref}{ref_said} "
        f"is not that release: {why}",
        hint=(f"--set {' or '.join(fix)}=v{version} (or its commit) with it" if fix else "build that release's ref")
        + (
            f", or --set {' or '.join(settable(loaded, version_params))} to the ref's version" if version_params else ""
        ),
    )
