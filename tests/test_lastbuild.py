"""A stale step's plan line names the input that changed since its last build (issue 67):
``not built with these inputs`` left the user to guess why pip ran again."""

from __future__ import annotations

from pathlib import Path

from assembler.cache import Cache
from assembler.pipeline.walk import lastbuild


def _inputs(**change: object) -> lastbuild.Inputs:
    parts: dict[str, object] = {
        "base": "sha256:b",
        "sources": {"requirements": "r1", "app": "a1"},
        "inputs": {"cuda.prefix": "sha256:c"},
        "definition": {"run": "x", "env": "y"},
        "tool": "buildah 1",
    }
    parts.update(change)
    return lastbuild.Inputs(**parts)  # type: ignore[arg-type]


def test_a_miss_names_what_differs_from_the_last_build(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    assert lastbuild.reason(cache, "/p/assemble.yaml", "deps", _inputs()) == lastbuild.STALE  # never built
    lastbuild.record(cache, "/p/assemble.yaml", "deps", _inputs())
    edited = _inputs(sources={"requirements": "r2", "app": "a1"})
    said = lastbuild.reason(cache, "/p/assemble.yaml", "deps", edited)
    assert said == "not built with these inputs: source requirements changed since its last build", said
    both = _inputs(base="sha256:other", definition={"run": "z", "env": "y"})
    assert lastbuild.reason(cache, "/p/assemble.yaml", "deps", both) == (
        "not built with these inputs: base, field run changed since its last build"
    )
    # another project's step of the same name is not this one's last build
    assert lastbuild.reason(cache, "/q/assemble.yaml", "deps", edited) == lastbuild.STALE
