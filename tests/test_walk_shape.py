"""The plan/build walk's shape, read from the source with ``ast``: one walk built from its
services, no class chain, nothing wired in from outside.

A walk is constructed with its services (:class:`assembler.pipeline.modes.Services`); the
difference between a plan and a build is its mode object, not a subclass. These checks keep
it that way: no class in ``assembler/pipeline/`` (nor ``assemble.py``, ``cli/``) inherits
from a class of the walk's modules, and no attribute is assigned onto another object (``x.attr = ...`` with ``x`` not
``self``, or ``self.part.attr = ...``) in those modules, in ``assemble.py`` or in ``cli/``:
what an object holds is set in its own constructor, so a reader finds where a collaborator
comes from there.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "assembler"
PIPELINE = PACKAGE / "pipeline"
# The modules the walk is made of: the walk and how its image is stacked, its modes and
# services, its step stores, how a build runs it (scheduler, executors, the Slurm node),
# and the parts it constructs.
WALK_MODULES = (
    "walk",
    "layerstack",
    "modes",
    "maker",
    "stepstore",
    "resolve",
    "building",
    "builder",
    "scheduler",
    "executors",
    "slurm",
    "slurmnode",
    "toolchains",
    "registrycache",
    "baseblobs",
    "origins",
    "layers",
    "prebuilt_layers",
    "kinds/copy",  # the copy: layers' writer (Copies), and the pip:/url: layers' parts of Prebuilt
    "kinds/pip",
    "kinds/url",
    "cutlayers",
)
# Assignments onto objects that are no part of the walk, each with why it stays.
NOT_THE_WALK = {
    ("assembler/pipeline/baseblobs.py", "put.done"): "BaseBlobs's own private record of a put-off base",
    ("assembler/cli/__init__.py", "args.cmd"): "argparse's Namespace",
    ("assembler/cli/progress.py", "logger.propagate"): "the standard library's logging",
}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _walk_paths() -> list[Path]:
    paths = [PIPELINE / f"{name}.py" for name in WALK_MODULES]
    missing = [p for p in paths if not p.is_file()]
    assert not missing, f"walk modules named here are gone: {missing} (update WALK_MODULES)"
    return paths


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):  # Generic[T], Protocol[T]
        return _base_name(node.value)
    return None


def test_no_class_in_pipeline_inherits_from_a_class_of_the_walk() -> None:
    walk_classes = {
        node.name for path in _walk_paths() for node in ast.walk(_tree(path)) if isinstance(node, ast.ClassDef)
    }
    assert {"Walk", "Services", "Planning", "Building", "Scheduler"} <= walk_classes
    found = []
    paths = [*sorted(PIPELINE.glob("*.py")), PACKAGE / "assemble.py", *sorted((PACKAGE / "cli").glob("*.py"))]
    for path in paths:
        for node in ast.walk(_tree(path)):
            if not isinstance(node, ast.ClassDef):
                continue
            for base in node.bases:
                name = _base_name(base)
                if name in walk_classes:
                    found.append(f"{path.name}:{node.lineno}: {node.name}({name})")
    assert not found, "classes of the walk subclassed (give the walk a mode or a service instead):\n" + "\n".join(found)


def _targets(node: ast.AST) -> Iterator[ast.expr]:
    """The expressions ``node`` assigns to, tuples unpacked."""
    if isinstance(node, ast.Assign):
        pending = list(node.targets)
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        pending = [node.target]
    else:
        return
    while pending:
        target = pending.pop()
        if isinstance(target, ast.Tuple | ast.List):
            pending.extend(target.elts)
        elif isinstance(target, ast.Starred):
            pending.append(target.value)
        else:
            yield target


def _wired_from_outside(target: ast.expr) -> bool:
    """Whether ``target`` sets an attribute of something other than ``self`` itself."""
    if not isinstance(target, ast.Attribute):
        return False
    return not (isinstance(target.value, ast.Name) and target.value.id == "self")


def _setattr_on_another(node: ast.AST) -> bool:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr"):
        return False
    first = node.args[0] if node.args else None
    return not (isinstance(first, ast.Name) and first.id == "self")


def _wirings(path: Path) -> list[str]:
    found = []
    where = str(path.relative_to(PACKAGE.parent))
    for node in ast.walk(_tree(path)):
        if _setattr_on_another(node):
            found.append(f"{where}:{getattr(node, 'lineno', 0)}: setattr(...)")
        for target in _targets(node):
            if _wired_from_outside(target) and (where, ast.unparse(target)) not in NOT_THE_WALK:
                found.append(f"{where}:{target.lineno}: {ast.unparse(target)} = ...")
    return found


def test_nothing_is_assigned_onto_the_walk_or_its_parts_from_outside() -> None:
    paths = [*_walk_paths(), PACKAGE / "assemble.py", *sorted((PACKAGE / "cli").glob("*.py"))]
    found = [line for path in paths for line in _wirings(path)]
    assert not found, "attributes assigned from outside their object (pass them to its constructor):\n" + "\n".join(
        found
    )


def test_the_checks_see_what_they_look_for() -> None:
    """The checks above find a subclass and a wiring where there is one (they cannot pass by
    reading nothing)."""
    tree = ast.parse("class A(Walk):\n    pass\nwalk.prebuilt.used, self.x = f, g\nself.setup.blobs = b\nself.ok = 1\n")
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    assert [_base_name(b) for b in classes[0].bases] == ["Walk"]
    wired = [ast.unparse(t) for n in ast.walk(tree) for t in _targets(n) if _wired_from_outside(t)]
    assert sorted(wired) == ["self.setup.blobs", "walk.prebuilt.used"]
