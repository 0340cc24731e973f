"""Resolving a Python set with uv's resolver (``uv pip compile``), for ``assemble lock``.

uv reads only package metadata (no wheels are downloaded for a resolution; cached pages are
revalidated, ``--refresh``: a lock sees what the index serves now), for the
target interpreter and platform (``--python-version``, ``--python-platform``: without the
platform uv reads one wheel's metadata for all platforms). Indexes are merged as pip merges
them (``unsafe-best-match``). ``UV_PYTHON_DOWNLOADS=never``: uv would otherwise first spend
seconds failing to download a CPython. An index this machine cannot reach is found before
uv runs (uv retries for minutes): the set is then *unresolved*, with the index and why.
"""

from __future__ import annotations

import re
import shutil
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assembler.errors import InputError, ToolError
from assembler.proc import Runner

UV_TIMEOUT = 600.0  # seconds for one resolution (sdist-only packages are built for their metadata)


@dataclass(frozen=True)
class Resolution:
    """uv's pins (requirements text with hashes), or why the set could not be resolved."""

    pins: str | None
    unresolved: str | None = None


def uv_binary() -> str:
    """uv from this Python's environment (the ``uv`` package on PyPI), else from PATH."""
    here = Path(sys.executable).parent / "uv"
    if here.is_file():
        return str(here)
    found = shutil.which("uv")
    if found is None:
        raise InputError("uv is not installed: assemble lock resolves with it", hint="pip install uv")
    return found


def _provided(provided: Sequence[str], work: Path) -> list[str]:
    """uv's arguments that resolve a set against what the image below already has: each
    ``name==version`` as a wheel of that version with no dependencies (``+provided``, found
    only in a folder of ours and forced by an override), never written out: the base keeps its
    own build and what it depends on (torch's nvidia libraries of another CUDA)."""
    stubs = work / "provided"
    stubs.mkdir()
    overrides = work / "overrides.txt"
    lines = []
    argv = ["--find-links", str(stubs), "--override", str(overrides)]
    for spec in provided:
        name, version = (part.strip() for part in spec.split("==", 1))
        local = f"{version}.provided" if "+" in version else f"{version}+provided"  # 2.9.0+cu128 stays 2.9.0
        _stub_wheel(stubs, name, local)
        lines.append(f"{name}=={local}\n")
        argv += ["--no-emit-package", name]
    overrides.write_text("".join(lines))
    return argv


def _stub_wheel(folder: Path, name: str, version: str) -> None:
    dist = re.sub(r"[-_.]+", "_", name)
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: assemble\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / f"{dist}-{version}-py3-none-any.whl", "w") as z:
        for member, text in files.items():
            z.writestr(zipfile.ZipInfo(member, (1980, 1, 1, 0, 0, 0)), text)


def _compile_argv(
    definition: Mapping[str, Any],
    reqs: Path,
    out: Path,
    *,
    work: Path,
    upgrade: bool,
    upgrade_packages: Sequence[str],
) -> list[str]:
    """``uv pip compile`` for one set: its requirements ``reqs`` into ``out``, for the set's
    Python, platform and indexes, with its constraints and provided distributions (files in ``work``)."""
    indexes = [str(i) for i in definition["indexes"]]
    argv = [
        uv_binary(),
        "pip",
        "compile",
        str(reqs),
        "-o",
        str(out),
        "--quiet",
        "--no-config",
        "--no-header",
        "--no-annotate",
        "--generate-hashes",
        "--refresh",
        "--python-version",
        str(definition["python"]),
        "--python-platform",
        str(definition["platform"]),
        "--index-strategy",
        "unsafe-best-match",
        "--index-url",
        indexes[0],
    ]
    for extra in indexes[1:]:
        argv += ["--extra-index-url", extra]
    if definition.get("no_deps"):
        argv.append("--no-deps")
    constraints = list(definition.get("constraints") or [])
    provided = [str(p) for p in definition.get("provided") or []]
    if provided:
        argv += _provided(provided, work)
    if constraints:
        cfile = work / "constraints.txt"
        cfile.write_text("".join(f"{c}\n" for c in constraints))
        argv += ["-c", str(cfile)]
    if upgrade:
        argv.append("--upgrade")
    for name in upgrade_packages:
        argv += ["--upgrade-package", name]
    return argv


def resolve(
    definition: Mapping[str, Any],
    *,
    runner: Runner,
    work: Path,
    prefer: str | None = None,
    upgrade: bool = False,
    upgrade_packages: Sequence[str] = (),
) -> Resolution:
    """Resolve one set (:meth:`assembler.spec.pysets.PythonSet.definition`). ``prefer``: the
    pins it had, kept unless the set now needs others (or ``upgrade``/``upgrade_packages``)."""
    from assembler.transports.download import unreachable  # requests, only when resolving

    indexes = [str(i) for i in definition["indexes"]]
    for index in indexes:
        why = unreachable(index)
        if why is not None:
            return Resolution(None, f"index {index} cannot be reached from here ({why})")
    reqs = work / "requirements.in"
    reqs.write_text("".join(f"{r}\n" for r in definition["requirements"]))
    out = work / "requirements.txt"
    out.write_text(prefer or "")
    argv = _compile_argv(definition, reqs, out, work=work, upgrade=upgrade, upgrade_packages=upgrade_packages)
    env = {"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    try:
        runner.run(argv, env=env, timeout=UV_TIMEOUT)
    except ToolError as e:
        # Kept in the lock as unresolved, with uv's reason: an sdist that builds its metadata only
        # with another Python than this machine's, or requirements that cannot be met together.
        why = " ".join(line.strip() for line in (e.stderr_tail or e.message).splitlines()[-6:] if line.strip())
        return Resolution(
            None, f"uv could not resolve it for Python {definition['python']} on {definition['platform']}: {why[-600:]}"
        )
    return Resolution(out.read_text(encoding="utf-8"))
