"""The Python an image runs and the torch installed for it, read from its files.

What a manifest's params say (``python_version``, ``torch_version``) is what its steps
asked for; a base can bring its own (NGC's PyTorch, ``rocm/vllm``) and a step can install
another. So the facts come from the final image, through the SBOM's reader
(:func:`~assembler.sbom.packages.read_packages`, :class:`~assembler.sbom.packages.PackageReader`
over the dependency check's :class:`~assembler.deps.files.ImageFiles`, memoised by
diff_id, so the SBOM reads nothing again):

- torch: the ``Version`` of its ``torch-*.dist-info/METADATA`` in a ``lib/pythonX.Y``
  (as installed: ``2.9.0+cu129``); several torch installs of different versions claim nothing.
- Python (``X.Y.Z`` where something says it, else ``X.Y``), the first of: the
  ``lib/pythonX.Y`` torch is installed in; the only ``X.Y`` the image's venvs (a
  ``pyvenv.cfg`` next to ``lib/pythonX.Y/site-packages``) are for; the base's
  ``PYTHON_VERSION``; the only ``usr/local/lib/pythonX.Y``, else ``usr/lib/pythonX.Y``,
  holding ``site-packages``, ``dist-packages`` or ``lib-dynload``. The patch version comes
  from that venv's ``pyvenv.cfg`` (``version``, ``version_info``) or ``PYTHON_VERSION``.
  Nothing found (or venvs that disagree with nothing else to say): nothing is claimed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from assembler.cache import Cache
from assembler.cache.memos import SharedFacts, facts_key, remembered
from assembler.deps.files import BlobOpener, ImageFiles
from assembler.oci.image import Image
from assembler.sbom import packages
from assembler.sbom.packages import PackageReader, read_packages

_CODE = ("sbom/interpreter.py", *packages.CODE)

_LIB = re.compile(r"^(.*?)lib/python(3\.[0-9]+)/(site-packages|dist-packages|lib-dynload)(/|$)")
_SYSTEM = ("usr/local/", "usr/")  # prefixes of the system's interpreters, the first one winning
_FULL = re.compile(r"^3\.[0-9]+\.[0-9]+")
_MINOR = re.compile(r"^(3\.[0-9]+)(?![0-9])")


@dataclass(frozen=True)
class PythonFacts:
    """What the image says; "" where it says nothing."""

    python: str = ""
    torch: str = ""


@dataclass
class _Found:
    minors: dict[str, set[str]]  # prefix ("opt/venv/", "usr/") -> X.Y of its lib/pythonX.Y folders
    venvs: dict[str, str]  # prefix -> its pyvenv.cfg path


def _scan(files: ImageFiles) -> _Found:
    found = _Found({}, {})
    for path, rec in files.records.items():
        if path.rpartition("/")[2] == "pyvenv.cfg" and rec.kind in ("file", "hardlink"):
            found.venvs[path[: -len("pyvenv.cfg")]] = path
        match = _LIB.match(path)
        if match is not None:
            found.minors.setdefault(match.group(1), set()).add(match.group(2))
    return found


def _venv_version(text: str) -> str:
    """``version = 3.12.7`` (python -m venv), ``version_info = 3.12.7[.final.0]`` (uv, virtualenv)."""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        full = _FULL.match(value.strip()) if sep and key.strip() in ("version", "version_info") else None
        if full is not None:
            return full.group(0)
    return ""


def _only(values: set[str]) -> str:
    return next(iter(values)) if len(values) == 1 else ""


def _minor(found: _Found, torch_prefixes: set[str], base_env: Mapping[str, str]) -> tuple[str, str]:
    """The X.Y the image's Python is, and the prefix (a venv's or a system's) it was read from."""
    for prefixes in (torch_prefixes, set(found.venvs) & set(found.minors)):
        minor = _only({m for p in prefixes for m in found.minors.get(p, set())})
        if minor:
            return minor, next((p for p in sorted(prefixes) if minor in found.minors[p]), "")
    env = _MINOR.match(base_env.get("PYTHON_VERSION", "").strip())
    if env is not None:
        return env.group(1), ""
    for prefix in _SYSTEM:
        minor = _only(found.minors.get(prefix, set()))
        if minor:
            return minor, prefix
    return "", ""


def read_python(
    image: Image,
    open_blob: BlobOpener,
    *,
    base_env: Mapping[str, str],
    cache: Cache | None,
    workdir: Path,
    shared: SharedFacts | None = None,
) -> PythonFacts:
    """The Python and torch of ``image`` (see the module's doc); ``base_env`` is its base's
    config env. Remembered by the image's layers and ``base_env``. Raises InvalidImage for a
    damaged layer."""
    key = facts_key("sbom-python", {"diff_ids": list(image.diff_ids), "base_env": dict(base_env)}, _CODE)
    return remembered(
        cache,
        key,
        lambda: _read_python(image, open_blob, base_env=base_env, cache=cache, workdir=workdir, shared=shared),
        read=lambda d: PythonFacts(str(d["python"]), str(d["torch"])),
        write=lambda facts: {"python": facts.python, "torch": facts.torch},
        shared=shared,
    )


def _read_python(
    image: Image,
    open_blob: BlobOpener,
    *,
    base_env: Mapping[str, str],
    cache: Cache | None,
    workdir: Path,
    shared: SharedFacts | None,
) -> PythonFacts:
    # The whole inventory, as the SBOM reads it: what is read here is memoised for it.
    inventory = read_packages(image, open_blob, cache=cache, workdir=workdir, shared=shared)
    dists = [p for p in inventory.packages if p.ecosystem == "pypi" and p.name.lower() == "torch"]
    torches = [(match.group(1), p.version) for p in dists if (match := _LIB.match(p.path[1:] + "/"))]
    torch = _only({version for _, version in torches})
    reader = PackageReader(image, open_blob, cache=cache, workdir=workdir)
    files = ImageFiles(len(image.layers), reader.entries)
    found = _scan(files)
    minor, prefix = _minor(found, {where for where, version in torches if torch and version == torch}, base_env)
    if not minor:
        return PythonFacts("", torch)
    said = []
    if prefix in found.venvs:
        where = files.data_of(found.venvs[prefix])
        assert where is not None  # a regular file or hard link of the final view
        said.append(_venv_version(reader.texts_of(where[0], {where[1]}).get(where[1], "")))
    said.append(base_env.get("PYTHON_VERSION", "").strip())
    full = next((m.group(0) for v in said if (m := _FULL.match(v)) and m.group(0).startswith(minor + ".")), minor)
    return PythonFacts(full, torch)
