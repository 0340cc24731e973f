"""A lock's Python sets as PEP 751 lock files (``pylock.NAME.toml``), for the tools that
install from one (``uv pip install -r``, ``pip``, ``packaging.pylock``).

A set of our lock is one environment's slice: exact versions for one interpreter and one
platform, each with the sha256s uv hashed. Its ``pylock.toml`` says that environment
(``environments``, ``requires-python``) and lists each pin with the files of those hashes,
wheels and the sdist, found by sha256 on the set's indexes in order (the index's page says
where each file is; a hash no index lists any more is an error, never a file left out).
Direct-URL pins become ``archive`` or ``vcs`` entries. Nothing is resolved again: the
versions and hashes are the lock's. packaging builds and checks the document, tomli-w
writes it.

Every URL in it is :func:`~assembler.manifest.text.urls.redacted`, as the lock's are: the index a
file is found on is read with the credentials the manifest gives it now (:func:`files_of`),
and whoever installs from the file gives them again (netrc, ``UV_INDEX_*``, keyring), as
for uv's own ``pylock.toml``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.markers import Marker
from packaging.pylock import Package, PackageArchive, PackageSdist, PackageVcs, PackageWheel, Pylock
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from assembler.errors import AssemblerError, InputError, NotFound
from assembler.manifest.text.urls import redacted, with_credentials

if TYPE_CHECKING:
    from assembler.manifest.lock.file import Entry, Lock

# sha256 -> (file name, URL) of a project's files on an index (index.project_files)
Files = Callable[[str, str], dict[str, tuple[str, str]]]

_SDIST = (".tar.gz", ".zip")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def pylock_of(entry: Entry, *, files: Files, what: str) -> Pylock:
    """The PEP 751 document of one locked set (``what``: where it is used, for errors)."""
    if entry.pins is None:
        raise InputError(f"{what}: not resolved ({entry.unresolved}): no pylock.toml")
    listed = entry.definition.get("indexes")
    indexes = [str(i) for i in listed] if isinstance(listed, list) and listed else ["https://pypi.org/simple"]
    python = str(entry.definition.get("python", ""))
    packages = []
    for name, op, version, shas in entry.pinned():
        pin = f"{name}{'==' if op == '==' else ' @ '}{version}"
        if op == "@":
            packages.append(_direct(canonicalize_name(name), version, shas, f"{what}: {pin}"))
        else:
            packages.append(_indexed(canonicalize_name(name), version, shas, indexes, files, f"{what}: {pin}"))
    return Pylock(
        lock_version=Version("1.0"),
        created_by="assemble",
        environments=_environments(python, str(entry.definition.get("platform", ""))),
        requires_python=SpecifierSet(f"=={python}.*") if re.fullmatch(r"\d+\.\d+", python) else None,
        packages=sorted(packages, key=lambda p: p.name),
    )


def _environments(python: str, platform: str) -> list[Marker] | None:
    """The one environment a set was resolved for, as a marker (uv's ``--python-platform``:
    ``x86_64-manylinux_2_28``)."""
    parts = [f'python_version == "{python}"'] if re.fullmatch(r"\d+\.\d+", python) else []
    machine = platform.split("-")[0]
    if "linux" in platform:
        parts.append('sys_platform == "linux"')
    if re.fullmatch(r"x86_64|aarch64|ppc64le|s390x|i686|armv7l", machine):
        parts.append(f'platform_machine == "{machine}"')
    return [Marker(" and ".join(parts))] if parts else None


def _indexed(
    name: NormalizedName, version: str, shas: list[str], indexes: list[str], files: Files, what: str
) -> Package:
    """A pin from an index: the files of its locked hashes, each found on the first index
    that lists it."""
    if not shas:
        raise InputError(
            f"{what}: the lock has no sha256 for it (pinned from a stand-in's metadata): no pylock.toml",
            hint="lock again where the set's index answers (assemble lock --retry)",
        )
    found: dict[str, tuple[str, str, str]] = {}  # sha256 -> (file name, URL, index)
    for index in indexes:
        try:
            listed = files(index, name)
        except NotFound:
            continue  # this index has no such project (PyTorch's has no aiohttp): the next one
        found.update({sha: (*listed[sha], index) for sha in shas if sha in listed and sha not in found})
        if len(found) == len(shas):
            break
    missing = [sha for sha in shas if sha not in found]
    if missing:
        raise InputError(
            f"{what}: sha256:{missing[0]} is on none of its indexes ({', '.join(indexes)}): no pylock.toml",
            hint="the file was removed from the index: lock the set again (assemble lock --upgrade-package)",
        )
    wheels = [
        PackageWheel(name=file, url=redacted(url), hashes={"sha256": sha})
        for sha, (file, url, _) in found.items()
        if file.endswith(".whl")
    ]
    # PEP 751 takes one sdist: the .tar.gz where a release has a .zip too
    sdists = sorted((sha, f) for sha, (f, _, _) in found.items() if f.endswith(_SDIST))
    sdists.sort(key=lambda s: not s[1].endswith(".tar.gz"))
    sdist = None
    if sdists:
        sha, file = sdists[0]
        sdist = PackageSdist(name=file, url=redacted(found[sha][1]), hashes={"sha256": sha})
    if not wheels and sdist is None:
        raise InputError(f"{what}: none of its locked files is a wheel or an sdist: no pylock.toml")
    used = {i for _, _, i in found.values()}
    return Package(
        name=name,
        version=Version(version),
        index=next(iter(used)) if len(used) == 1 else None,
        wheels=sorted(wheels, key=lambda w: w.name or "") or None,
        sdist=sdist,
    )


def _direct(name: NormalizedName, url: str, shas: list[str], what: str) -> Package:
    """A direct-URL pin: a git commit (``git+URL@COMMIT``) or an archive with its sha256."""
    if url.startswith("git+"):
        repo, _, commit = url[len("git+") :].rpartition("@")
        if not _COMMIT.fullmatch(commit):
            raise InputError(f"{what}: a git URL without its commit: no pylock.toml")
        return Package(name=name, vcs=PackageVcs(type="git", url=redacted(repo), commit_id=commit))
    if not shas:
        raise InputError(f"{what}: an archive URL without its sha256: no pylock.toml")
    return Package(name=name, archive=PackageArchive(url=redacted(url), hashes={"sha256": shas[0]}))


def files_of(known: Sequence[str]) -> Files:
    """The ``files`` of :func:`write_pylocks`: a project's files on an index the lock names
    (without credentials), read from that index as the manifest names it now (``known``:
    the indexes of its sets, credentials and all; :func:`with_credentials`), once each."""
    from assembler.fetch.pinned import DEFAULT_LIMITS
    from assembler.python.index import project_files  # the index client: only when asked for pylocks

    @functools.cache
    def files(index: str, name: str) -> dict[str, tuple[str, str]]:
        return project_files(with_credentials(index, known), name, f"pylock.toml of {name}", DEFAULT_LIMITS)

    return files


def file_name(where: str) -> str:
    """``pylock.NAME.toml`` for a set used at ``where`` (``layers.torch:venv``): PEP 751's
    name allows no dot."""
    return f"pylock.{re.sub(r'[^A-Za-z0-9_-]+', '-', where).strip('-')}.toml"


def folder_name(variant: str) -> str:
    """A folder's name for a variant (``openai vllm_from=wheel``)."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", variant).strip("_") or "default"


def write_pylocks(
    lock: Lock, variants: Iterable[str], folder: Path, *, files: Files
) -> tuple[list[Path], list[tuple[str, str]]]:
    """``FOLDER/VARIANT/pylock.WHERE.toml`` for each Python set of ``variants``: the paths
    written, and (variant: where, why) for each set that has none (not resolved, a
    stand-in's pins without hashes, a file gone from its index)."""
    import tomli_w  # only when asked for

    written, skipped = [], []
    for variant in dict.fromkeys(variants):
        for where, key in sorted(lock.variants.get(variant, {}).items()):
            entry = lock.sets.get(key)
            if entry is None:
                continue  # a base's digest, a git ref's commit, Debian packages
            try:
                document = pylock_of(entry, files=files, what=f"{variant}: {where}")
            except AssemblerError as e:  # an index that cannot be read: that set has no file, said
                skipped.append((f"{variant}: {where}", e.message))
                continue
            document.validate()
            path = folder / folder_name(variant) / file_name(where)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(tomli_w.dumps(document.to_dict()), encoding="utf-8")
            written.append(path)
    return written, skipped
