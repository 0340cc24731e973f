"""The plan/build walk's shape, read from the source with ``ast``: one walk built from its
services, no class chain, nothing wired in from outside, each part given the options it reads.

A walk is constructed with its services (:class:`assembler.pipeline.walk.modes.Services`); the
difference between a plan and a build is its mode object, not a subclass. These checks keep
it that way: no class in ``assembler/pipeline/`` (nor ``assemble.py``, ``cli/``) inherits
from a class of the walk's modules, and no attribute is assigned onto another object (``x.attr = ...`` with ``x`` not
``self``, or ``self.part.attr = ...``) in those modules, in ``assemble.py`` or in ``cli/``:
what an object holds is set in its own constructor, so a reader finds where a collaborator
comes from there.

``Options`` (the command line's, whole) is taken by ``assemble.py`` and ``cli/``, which
split it: a part of the pipeline is given the group of it that it reads
(``pipeline/options.py``: the walk's, the workspace's, the step caches'...), so that what
reaches it, and what a Slurm job file carries, is what it reads.
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
    "walk/walk",
    "walk/layerstack",
    "walk/runtimesteps",
    "walk/modes",
    "walk/obtain",
    "layers/maker",
    "store/stepstore",
    "runs/resolve",
    "runs/building",
    "runs/builder",
    "steps/scheduler",
    "steps/executors",
    "steps/jobs",
    "steps/slurm",
    "runs/slurmnode",
    "store/toolchains",
    "store/registrycache",
    "store/baseblobs",
    "store/origins",
    "image/bases",
    "layers/setup",
    "layers/prebuilt_layers",
    "layers/kinds/copy",  # the copy: layers' writer (Copies), and the pip:/url: layers' parts of Prebuilt
    "layers/kinds/pip",
    "layers/kinds/url",
    "layers/cutlayers",
)
# Assignments onto objects that are no part of the walk, each with why it stays.
NOT_THE_WALK = {
    ("assembler/pipeline/store/baseblobs.py", "put.done"): "BaseBlobs's own private record of a put-off base",
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
    paths = [*sorted(PIPELINE.rglob("*.py")), PACKAGE / "assemble.py", *sorted((PACKAGE / "cli").glob("*.py"))]
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


# The modules under assembler/pipeline/ that may name Options in a signature or a field, each
# with why. pipeline/options.py defines it (and hands out its groups) and is not looked at.
TAKE_OPTIONS = {
    "assembler/pipeline/variants.py": "a variant's own Options (its outputs, its platform) is made "
    "from the run's there, for assemble.py to build it with",
}


def _module_of(path: Path) -> list[str]:
    return list(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def _options_bindings(tree: ast.Module, module: list[str]) -> tuple[set[str], set[str]]:
    """The names ``tree`` binds to ``assembler.pipeline.options.Options``, and to that module."""
    names: set[str] = set()
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = module[: len(module) - node.level] if node.level else []
            source = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                if source == "assembler.pipeline.options" and alias.name == "Options":
                    names.add(alias.asname or alias.name)
                elif source == "assembler.pipeline" and alias.name == "options":
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == "assembler.pipeline.options"}
    return names, modules


def _annotations(tree: ast.Module) -> Iterator[tuple[int, ast.expr]]:
    """Every annotation of a function's parameters and return, and of a class's fields (a
    dataclass's constructor), with its line; one written as a string is parsed."""
    for node in ast.walk(tree):
        found: list[ast.expr | None] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            every = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
            found = [arg.annotation for arg in every if arg is not None] + [node.returns]
        elif isinstance(node, ast.ClassDef):
            found = [item.annotation for item in node.body if isinstance(item, ast.AnnAssign)]
        for annotation in found:
            if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
                annotation = ast.parse(annotation.value, mode="eval").body
            if annotation is not None:
                yield node.lineno, annotation


def _names_options(annotation: ast.expr, names: set[str], modules: set[str]) -> bool:
    qualifiers = {*modules, "assembler.pipeline.options"}
    for node in ast.walk(annotation):
        if isinstance(node, ast.Name) and node.id in names:
            return True
        if isinstance(node, ast.Attribute) and node.attr == "Options" and ast.unparse(node.value) in qualifiers:
            return True
    return False


def _takes_options(tree: ast.Module, module: list[str]) -> list[int]:
    """The lines of the signatures and classes of ``tree`` whose annotations name Options."""
    names, modules = _options_bindings(tree, module)
    if not names and not modules:
        return []
    return sorted({line for line, ann in _annotations(tree) if _names_options(ann, names, modules)})


def test_no_part_of_the_pipeline_is_given_options_whole() -> None:
    found, taking = [], set()
    for path in sorted(PIPELINE.rglob("*.py")):
        if path == PIPELINE / "options.py":
            continue
        where = str(path.relative_to(PACKAGE.parent))
        lines = _takes_options(_tree(path), _module_of(path))
        if lines:
            taking.add(where)
        if lines and where not in TAKE_OPTIONS:
            found += [f"{where}:{line}" for line in lines]
    assert not found, "Options given whole (give the part the group it reads: pipeline/options.py):\n" + "\n".join(
        found
    )
    stale = sorted(set(TAKE_OPTIONS) - taking)
    assert not stale, f"these no longer take Options: {stale} (take them out of TAKE_OPTIONS)"


def test_the_options_check_sees_what_it_looks_for() -> None:
    """The check above finds Options however it is imported and written (and not another
    module's class of that name)."""
    source = (
        "from assembler.pipeline.options import Options as O, Reporter\n"
        "from assembler.pipeline import options as opts\n"
        "def a(x: O | None) -> None: ...\n"
        "def b(*, x: 'O') -> None: ...\n"
        "def c() -> opts.Options: ...\n"
        "class D:\n    x: list[O]\n"
        "def e(report: Reporter, x: int = O) -> None: ...\n"
    )
    assert _takes_options(ast.parse(source), ["assembler", "pipeline", "x"]) == [3, 4, 5, 6]
    relative = "from .options import Options\ndef f(x: Options) -> None: ...\n"
    assert _takes_options(ast.parse(relative), ["assembler", "pipeline", "x"]) == [2]
    other = "from assembler.python.env import Options\ndef g(x: Options) -> None: ...\n"
    assert _takes_options(ast.parse(other), ["assembler", "pipeline", "x"]) == []


def test_the_layer_stack_is_given_narrow_values_not_the_walk() -> None:
    """Issue 68: the layer stack and its runtime steps are constructed with the values they
    read (what a layer is placed with, how it ships, how a step is decided), as layer kinds
    are with :class:`Stacking`, and so is what finishes the image (:class:`Finishing`);
    only :func:`layerstack.stacked` and :func:`layerstack.finish` take them from a walk."""
    found = []
    takers = {
        node.name
        for node in _tree(PIPELINE / "walk/layerstack.py").body
        if isinstance(node, ast.FunctionDef)
        and any(a.annotation is not None and ast.unparse(a.annotation) == "Walk" for a in node.args.args)
    }
    assert takers == {"stacked", "finish"}, f"functions of layerstack taking the walk: {sorted(takers)}"
    for name in ("walk/layerstack", "walk/runtimesteps"):
        for node in ast.walk(_tree(PIPELINE / f"{name}.py")):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                annotations: list[ast.expr] = []
                if isinstance(item, ast.AnnAssign):
                    annotations.append(item.annotation)
                elif isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    annotations += [a.annotation for a in item.args.args + item.args.kwonlyargs if a.annotation]
                found += [f"{name}: {node.name}" for a in annotations if "Walk" in ast.unparse(a).split("[")[0]]
    assert not found, f"constructed with the whole walk: {found}"
