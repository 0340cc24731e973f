"""The hosts a step's commands reach, read from their text: URLs, PPAs, and the package
indexes of the tools they run (pip and uv: PyPI; cargo: crates.io and the git hosts its
lock names; go: its module proxy; npm; conda; apt: the base's mirror).

A tool reaches its index unless its command says it will not: ``pip install --no-index``,
``pip install --no-deps ./local`` built without isolation, ``cargo build --offline`` (or
``--frozen``, ``CARGO_NET_OFFLINE``), ``GOFLAGS=-mod=vendor``/``GOPROXY=off``,
``npm ci --offline``. A command's text is read as written (after params), not run: a tool
behind a shell variable or in a script of a source is not seen; a step names such hosts in
its ``reaches:`` (:mod:`assembler.manifest.schema.hostuse`).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

# A host and how it is reached (the scheme a preflight asks it with).
Host = tuple[str, str]

PYPI = (("pypi.org", "https"), ("files.pythonhosted.org", "https"))
CRATES = (("index.crates.io", "https"), ("static.crates.io", "https"))
GO = (("proxy.golang.org", "https"), ("sum.golang.org", "https"))
NPM = (("registry.npmjs.org", "https"),)
CONDA = (("conda.anaconda.org", "https"), ("repo.anaconda.com", "https"))
PPA = ("ppa.launchpadcontent.net", "https")
APT = "apt"  # the base's apt mirror: which host is the caller's to say (spec.reach)

_URL = re.compile(r"\b(https?|git|ssh)://(?:[^@/\s\"']+@)?([A-Za-z0-9.-]+(?::[0-9]+)?)")
_SCP = re.compile(r"(?<![/\w])git@([A-Za-z0-9.-]+):")
_PPA = re.compile(r"\bppa:[A-Za-z0-9._-]+/[A-Za-z0-9._-]+")
# One command of a shell line: && || ; | and newlines end it.
_SPLIT = re.compile(r"&&|\|\||[;|\n]")
_PIP = re.compile(r"(?:^|[\s/])(?:pip3?(?:\.\d+)?|-m\s+pip)\s+(install|wheel|download)\b")
_UV = re.compile(r"(?:^|[\s/])uv\s+(?:pip\s+(?:install|compile|sync)|sync|add|lock|run|tool\s+install)\b|(?:^|\s)uvx\s")
_CARGO = re.compile(r"(?:^|[\s/])cargo\s+(build|fetch|install|run|test|check|update|generate-lockfile|vendor|doc)\b")
_GO = re.compile(r"(?:^|[\s/])go\s+(build|install|get|run|test|mod\s+download|mod\s+tidy)\b")
_NPM = re.compile(r"(?:^|[\s/])(?:npm\s+(?:install|ci|i)|yarn(?:\s+install)?|pnpm\s+(?:install|i))(?:\s|$)")
_CONDA = re.compile(r"(?:^|[\s/])(?:conda|mamba|micromamba)\s+(?:install|create|update)\b")
_APT = re.compile(r"(?:^|[\s/])apt(?:-get)?\s+(?:-\S+\s+)*(?:update|install|upgrade|dist-upgrade|build-dep)\b")
# pip's options that take a value (the value is not a requirement).
_PIP_VALUED = frozenset(
    (  # noqa: SIM905 (one list, read as pip's help lists them)
        "-w --wheel-dir -t --target -d --dest -c --constraint --prefix --root --python -i --index-url "
        "--extra-index-url -f --find-links --cache-dir --report --platform --python-version --implementation "
        "--abi --src --upgrade-strategy --progress-bar --log --proxy --retries --timeout --cert --client-cert "
        "--trusted-host --global-option --config-settings -C --build -e --editable --only-binary --no-binary"
    ).split()
)


def urls(texts: Iterable[str]) -> set[Host]:
    """Hosts of the URLs, ``git@host:`` remotes and PPAs written in ``texts``."""
    found: set[Host] = set()
    for text in texts:
        found.update((match.group(2), match.group(1)) for match in _URL.finditer(text))
        found.update((match.group(1), "ssh") for match in _SCP.finditer(text))
        if _PPA.search(text):
            found.add(PPA)
    return found


def tools(commands: Iterable[str], env: Mapping[str, str], *, cargo_git: Iterable[Host] = ()) -> set[Host | str]:
    """The indexes the tools in ``commands`` reach (``APT`` for the base's apt mirror)
    under ``env``; ``cargo_git``: the git hosts a cargo build's lock names."""
    found: set[Host | str] = set()
    for line in commands:
        for command in _SPLIT.split(line):
            found.update(_tool_hosts(command, env, cargo_git))
    return found


def _tool_hosts(command: str, env: Mapping[str, str], cargo_git: Iterable[Host]) -> Iterable[Host | str]:
    text = f" {command.strip()} "
    if _UV.search(text):  # uv's pip interface: its own options
        if not re.search(r"\s--(?:offline|no-index)\b", text):
            yield from PYPI
    elif (pip := _PIP.search(text)) and _pip_reaches(text[pip.end() :]):
        yield from PYPI
    if _CARGO.search(text) and not _cargo_offline(text, env):
        yield from (*CRATES, *cargo_git)
    if _GO.search(text) and not re.search(r"-mod=vendor|GOPROXY=off|GOFLAGS=\S*-mod=vendor", text + _env(env)):
        yield from GO
    if _NPM.search(text) and "--offline" not in text:
        yield from NPM
    if _CONDA.search(text) and "--offline" not in text:
        yield from CONDA
    if _APT.search(text):
        yield APT


def _env(env: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in env.items())


def _cargo_offline(text: str, env: Mapping[str, str]) -> bool:
    if re.search(r"\s--(?:offline|frozen)\b|CARGO_NET_OFFLINE=(?:true|1)", text):
        return True
    return env.get("CARGO_NET_OFFLINE", "").lower() in ("true", "1")


def _pip_reaches(rest: str) -> bool:
    """Whether a pip install/wheel/download with the arguments ``rest`` asks an index:
    not with --no-index; not for local paths alone with --no-deps (built, if at all,
    without build isolation, which would install the build's requirements)."""
    try:
        words = shlex.split(rest)
    except ValueError:
        return True
    if "--no-index" in words:
        return False
    wanted: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
            if word in ("-r", "--requirement"):
                return True
            continue
        if word in ("-r", "--requirement") or word.startswith("--requirement="):
            return True  # a requirements file: what it names is not seen here
        if word in _PIP_VALUED:
            skip = True
        elif not word.startswith("-"):
            wanted.append(word)
    # A $VARIABLE may name anything: only paths written out are local.
    local = all(w.startswith(("/", ".", "~")) or w.endswith(".whl") for w in wanted)
    built = any(not w.endswith(".whl") for w in wanted)
    return not (wanted and local and "--no-deps" in words and (not built or "--no-build-isolation" in words))


def cargo_git_hosts(folder: Path, given: Collection[str] = ()) -> set[Host]:
    """The git hosts of the git dependencies a cargo project under ``folder`` names in its
    Cargo.lock (``source = "git+https://..."``) or, without one, its Cargo.toml; but not of
    the crates named in ``given``, whose trees the step is given as sources (rust-binaries'
    ``git_deps`` vendors them, so cargo fetches nothing for them)."""
    found: set[Host] = set()
    for path in (folder / "Cargo.lock", folder / "Cargo.toml"):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        for text in _git_texts(data, frozenset(given)):
            found |= urls([text.removeprefix("git+")])
        if found or (path.name == "Cargo.lock" and "package" in data):
            break
    return found


def crate_name(folder: Path) -> str | None:
    """The ``[package]`` name of the Cargo.toml at ``folder``'s root, if there is one."""
    try:
        data = tomllib.loads((folder / "Cargo.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    package = data.get("package")
    name = package.get("name") if isinstance(package, dict) else None
    return name if isinstance(name, str) else None


def _git_texts(data: object, given: frozenset[str] = frozenset()) -> Iterable[str]:
    """``source = "git+..."`` and ``git = "..."`` values anywhere in a TOML document, but
    not in a Cargo.lock package or a dependency named in ``given``."""
    if isinstance(data, dict):
        if data.get("name") in given:
            return
        for key, value in data.items():
            if key in given:
                continue
            if isinstance(value, str) and (key == "git" or (key == "source" and value.startswith("git+"))):
                yield value
            else:
                yield from _git_texts(value, given)
    elif isinstance(data, list):
        for item in data:
            yield from _git_texts(item, given)
