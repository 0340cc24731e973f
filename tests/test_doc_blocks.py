"""Every code block of the README and the docs site that is a manifest, a command or a
configuration file is run or checked here (issue 52): a manifest (or a part of one) is
validated against the manifest's JSON Schema, as an editor checks it; an ``assemble``
command line is parsed by the real parser, and ``init`` lines run; a ``registries.conf``
is read by the registry client's own reader. What needs a registry, a GPU or a key of the
user's is parsed, not run. (The README's first manifest is built and run by
tests/test_docs.py.)"""

from __future__ import annotations

import io
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from assembler.cli.commands import COMMANDS, parser
from assembler.manifest.schema.model import json_schemas
from assembler.registry import conffiles
from tests.helpers import ROOT, run_cli_here

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks() -> Iterator[tuple[str, str, str]]:
    """(where, language, text) of every fenced block in a language this test reads."""
    for path in DOCUMENTS:
        text = path.read_text()
        for found in re.finditer(r"^```(yaml|sh|toml)\n(.*?)^```", text, flags=re.M | re.S):
            line = text[: found.start()].count("\n") + 1
            yield f"{path.relative_to(ROOT)}:{line}", found.group(1), found.group(2)


BLOCKS = list(blocks())


def _yaml(text: str) -> Any:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    indent = min(len(ln) - len(ln.lstrip()) for ln in lines)
    return YAML(typ="safe", pure=True).load(io.StringIO("\n".join(ln[indent:] for ln in lines)))


def _as_manifest(data: Any) -> dict[str, Any] | None:
    """``data`` as a manifest the schema can check: whole, or a part of one (its top-level
    fields, or a list of layers) in the smallest manifest around it; None: neither."""
    minimal: dict[str, Any] = {"name": "x", "bases": {"b": "scratch"}, "image": {"base": "b"}}
    fields = set(json_schemas()["manifest"]["properties"])
    if isinstance(data, dict) and "name" in data and ("image" in data or "bases" in data):
        return data
    if isinstance(data, dict) and set(data) <= fields:
        return {**minimal, **data}
    if isinstance(data, list) and all(isinstance(x, dict) for x in data):
        return {**minimal, "image": {"base": "b", "layers": data}}
    return None


def _commands(text: str) -> Iterator[list[str]]:
    """The ``assemble`` command lines of a shell block (``VAR=... `` prefixes dropped, a
    comment after two spaces dropped), as argv without ``assemble``; a usage synopsis
    (``[--flag]``, ``MANIFEST ...``) is no command."""
    for line in text.splitlines():
        line = re.split(r"\s{2,}#|\s#\s", line, maxsplit=1)[0].strip()
        words = shlex.split(line) if line else []
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            words = words[1:]
        if words[:1] == ["assemble"] and "[" not in line and "..." not in words:
            yield words[1:]


@pytest.mark.parametrize(("where", "lang", "text"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_a_documented_block_is_checked(where: str, lang: str, text: str, tmp_path: Path) -> None:
    if lang == "yaml":
        manifest = _as_manifest(_yaml(text))
        assert manifest is not None, f"{where}: a YAML block that is no manifest nor a part of one"
        jsonschema.validate(manifest, json_schemas()["manifest"])
    elif lang == "toml":
        data = tomllib.loads(text)
        if "registry" in data or "unqualified-search-registries" in data:
            conffiles.parse(data, where)  # InputError for what registries.conf may not say
        else:
            assert "storage" in data, f"{where}: a TOML block that is neither registries.conf nor storage.conf"
    else:
        for argv in _commands(text):
            if argv[:1] == ["init"]:  # runs: it writes a project here
                tmp_path.joinpath("requirements.txt").write_text("six==1.16.0\n")
                ran = run_cli_here(argv, cwd=tmp_path)
                assert ran.code == 0, f"{where}: assemble {shlex.join(argv)}: {ran}"
                continue
            command = argv if argv and argv[0] in COMMANDS else ["build", *argv]  # build: the default command
            try:
                parser().parse_args(command)
            except SystemExit as e:
                pytest.fail(f"{where}: assemble {shlex.join(argv)}: the parser refuses it ({e})")


def test_how_many_blocks_are_checked() -> None:
    """Every manifest, command and configuration block of the documents counts (the
    README's and the getting-started page's first manifest besides is built and run)."""
    counted = {lang: sum(1 for _, b_lang, _ in BLOCKS if b_lang == lang) for lang in ("yaml", "sh", "toml")}
    commands = sum(len(list(_commands(text))) for _, lang, text in BLOCKS if lang == "sh")
    print(f"\ndoc blocks checked: {counted} ({commands} assemble command lines)")
    assert counted["yaml"] >= 5 and counted["toml"] >= 2 and commands >= 10
