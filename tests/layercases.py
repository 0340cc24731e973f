"""Seeded filesystem changes over a lower tree: the cases of the differential test of our
layers (tests/test_layer_consumers.py, scripts/diff-layers).

A :class:`Case` is a folder ``t/NAME`` of its own: the tree a base holds there
(``lower``), the shell lines two ``run:`` steps run in it, and the host tree a ``copy:``
layer puts over it between the two. The changes are the ones layer differs get wrong:
a folder replaced by a symlink (``ln -sfn cuda-12.8 /usr/local/cuda`` after a removal) or
by a file, a file or a symlink replaced by a folder, a folder emptied and refilled (under
names that sort before ``.wh..wh..opq``), hard links inside a layer and to a file of the
layer below, deletions at several depths, modes (set-uid, sticky) and owners. The same
seed gives the same cases: a failure names its seed and case.

The commands are busybox's (the test's base holds a static busybox and nothing else), and
every path is written ``./PATH`` (a name may start with ``-``). :data:`LISTER` is what the
container itself sees: a line per path under the roots it is given, read back by
:func:`read_listing`.
"""

from __future__ import annotations

import posixpath
import random
import shlex
from dataclasses import dataclass, field

# Names a folder's entries take: some sort before ".wh..wh..opq" ('-', '+', ','), one is not
# ASCII, one looks like a whiteout's target.
NAMES = ("a", "b", "lib", "-dash", "+plus", ",comma", "z", "x.y", "wh", "\u00e9t\u00e9")
DIR_MODES = (0o755, 0o700, 0o1777, 0o2775, 0o750)
FILE_MODES = (0o644, 0o600, 0o755, 0o4755, 0o2750, 0o444)
OWNERS = ((0, 0), (1000, 1000), (0, 1000), (65534, 65534))
ROOTS = ("t", "usr/local")  # what the listings cover

# What the container sees under the roots given: "MODE|UID|GID|INODE|SHA256|PATH|TARGET",
# MODE in hex (stat's %f), a file's content hash, a symlink's target.
LISTER = r"""#!/bin/sh
for root in "$@"; do [ -e "$root" ] || [ -L "$root" ] && find "$root"; done | sort | while IFS= read -r p; do
  s=$(stat -c '%f|%u|%g|%i' "$p")
  h=""; t=""
  if [ -L "$p" ]; then t=$(readlink "$p"); elif [ -f "$p" ]; then h=$(sha256sum < "$p"); h=${h%% *}; fi
  printf '%s|%s|%s|%s\n' "$s" "$h" "${p#/}" "$t"
done
"""


@dataclass
class Node:
    kind: str  # dir, file, symlink, hardlink (to ``target``, a path in the same tree)
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    target: str = ""


@dataclass
class Case:
    name: str
    lower: dict[str, Node]  # below t/NAME, parents before children
    steps: list[list[str]] = field(default_factory=lambda: [[], []])  # shell lines, run in t/NAME
    copy: dict[str, Node] = field(default_factory=dict)  # a host tree copied onto t/NAME after step 1
    what: list[str] = field(default_factory=list)  # the changes, for a report
    claimed: list[str] = field(default_factory=list)  # files step 1 wrote that a RECORD claims

    @property
    def folder(self) -> str:
        return f"t/{self.name}"


def q(path: str) -> str:
    return shlex.quote("./" + path)


class _Model:
    """Which kind each path is (approximately) as the steps change it, to choose targets."""

    def __init__(self, tree: dict[str, Node]) -> None:
        self.kinds = {p: ("file" if n.kind == "hardlink" else n.kind) for p, n in tree.items()}
        self.written: set[str] = set()

    def of(self, kind: str) -> list[str]:
        return sorted(p for p, k in self.kinds.items() if k == kind)

    def drop(self, path: str) -> None:
        for p in [p for p in self.kinds if p == path or p.startswith(path + "/")]:
            del self.kinds[p]
            self.written.discard(p)

    def add(self, path: str, kind: str) -> None:
        self.kinds[path] = kind
        if kind == "file":
            self.written.add(path)

    def free_name(self, rng: random.Random, folder: str) -> str:
        for name in rng.sample(NAMES, len(NAMES)):
            path = posixpath.join(folder, name)
            if path not in self.kinds:
                return path
        return posixpath.join(folder, f"n{rng.randrange(10**6)}")


def _lower(rng: random.Random) -> dict[str, Node]:
    tree: dict[str, Node] = {}

    def fill(folder: str, depth: int) -> None:
        for name in rng.sample(NAMES, rng.randint(1, 4)):
            path = posixpath.join(folder, name)
            roll = rng.random()
            uid, gid = rng.choice(OWNERS)
            if depth < 3 and roll < 0.45:
                tree[path] = Node("dir", rng.choice(DIR_MODES), uid, gid)
                fill(path, depth + 1)
            elif roll < 0.75 or not tree:
                tree[path] = Node("file", rng.choice(FILE_MODES), uid, gid, f"{path} {rng.random()}\n".encode())
            elif roll < 0.9:
                target = rng.choice([*NAMES, "..", "../a", "nowhere", "/etc"])
                tree[path] = Node("symlink", 0o777, uid, gid, target=target)
            else:
                files = [p for p, n in tree.items() if n.kind == "file"]
                if files:
                    tree[path] = Node("hardlink", target=rng.choice(files))
                else:
                    tree[path] = Node("file", 0o644, uid, gid, b"first\n")

    fill("", 0)
    return tree


# -- the changes: each returns its shell lines, or None where the tree has nothing it applies to


def _dir_to_symlink(rng: random.Random, m: _Model) -> list[str] | None:
    dirs = m.of("dir")
    if not dirs:
        return None
    d = rng.choice(dirs)
    target = rng.choice([posixpath.basename(p) for p in m.kinds if posixpath.dirname(p) == posixpath.dirname(d)])
    m.drop(d)
    m.add(d, "symlink")
    return [f"rm -rf {q(d)}", f"ln -s {shlex.quote(target)} {q(d)}"]


def _moved_and_linked(rng: random.Random, m: _Model) -> list[str] | None:
    """``mv cuda cuda-12.8 && ln -s cuda-12.8 cuda``."""
    dirs = m.of("dir")
    if not dirs:
        return None
    d = rng.choice(dirs)
    moved = d + "-12.8"
    if moved in m.kinds:
        return None
    for p in [p for p in m.kinds if p == d or p.startswith(d + "/")]:
        m.add(moved + p[len(d) :], m.kinds[p])
    m.drop(d)
    m.add(d, "symlink")
    return [f"mv {q(d)} {q(moved)}", f"ln -s {shlex.quote(posixpath.basename(moved))} {q(d)}"]


def _dir_to_file(rng: random.Random, m: _Model) -> list[str] | None:
    dirs = m.of("dir")
    if not dirs:
        return None
    d = rng.choice(dirs)
    m.drop(d)
    m.add(d, "file")
    return [f"rm -rf {q(d)}", f"echo was a folder > {q(d)}"]


def _to_dir(kind: str) -> object:
    def change(rng: random.Random, m: _Model) -> list[str] | None:
        paths = m.of(kind)
        if not paths:
            return None
        p = rng.choice(paths)
        child = m.free_name(rng, p)
        m.drop(p)
        m.add(p, "dir")
        m.add(child, "file")
        return [f"rm -f {q(p)}", f"mkdir {q(p)}", f"echo new > {q(child)}"]

    return change


def _refilled(rng: random.Random, m: _Model) -> list[str] | None:
    """A folder emptied and filled again: new names, sometimes one it held before."""
    dirs = [d for d in m.of("dir") if any(posixpath.dirname(p) == d for p in m.kinds)]
    if not dirs:
        return None
    d = rng.choice(dirs)
    old = [posixpath.basename(p) for p in m.kinds if posixpath.dirname(p) == d]
    how = rng.choice(["rm -rf {d} && mkdir {d}", "rm -rf {d}/* {d}/.[!.]*"])
    m.drop(d)
    m.add(d, "dir")
    lines = [how.format(d=q(d))]
    names = rng.sample(["-a", "+b", ",c", "new", *old], rng.randint(1, 3))
    for name in names:
        path = posixpath.join(d, name)
        if rng.random() < 0.3:
            m.add(path, "dir")
            m.add(path + "/in", "file")
            lines += [f"mkdir {q(path)}", f"echo in > {q(path + '/in')}"]
        else:
            m.add(path, "file")
            lines.append(f"echo refilled > {q(path)}")
    return lines


def _emptied(rng: random.Random, m: _Model) -> list[str] | None:
    dirs = [d for d in m.of("dir") if any(posixpath.dirname(p) == d for p in m.kinds)]
    if not dirs:
        return None
    d = rng.choice(dirs)
    m.drop(d)
    m.add(d, "dir")
    return [f"rm -rf {q(d)}/* {q(d)}/.[!.]*"]


def _hard_link(rng: random.Random, m: _Model) -> list[str] | None:
    """A new name for a file: one of the layer below, or one this step writes."""
    lines = []
    if rng.random() < 0.5 or not m.of("file"):
        src = m.free_name(rng, "")
        m.add(src, "file")
        lines.append(f"echo linked > {q(src)}")
    else:
        src = rng.choice(m.of("file"))
    folder = rng.choice(["", *m.of("dir")])
    dst = m.free_name(rng, folder)
    m.add(dst, "file")
    m.written.add(src)
    return [*lines, f"ln {q(src)} {q(dst)}"]


def _delete(rng: random.Random, m: _Model) -> list[str] | None:
    if not m.kinds:
        return None
    p = rng.choice(sorted(m.kinds))
    m.drop(p)
    return [f"rm -rf {q(p)}"]


def _mode(rng: random.Random, m: _Model) -> list[str] | None:
    paths = [p for p, k in m.kinds.items() if k in ("dir", "file")]
    if not paths:
        return None
    p = rng.choice(sorted(paths))
    mode = rng.choice(DIR_MODES if m.kinds[p] == "dir" else FILE_MODES)
    return [f"chmod {mode:o} {q(p)}"]


def _owner(rng: random.Random, m: _Model) -> list[str] | None:
    if not m.kinds:
        return None
    p = rng.choice(sorted(m.kinds))
    uid, gid = rng.choice(OWNERS)
    return [f"chown -h {uid}:{gid} {q(p)}"]


def _edit(rng: random.Random, m: _Model) -> list[str] | None:
    files = m.of("file")
    if not files:
        return None
    p = rng.choice(files)
    m.written.add(p)
    return [f"echo more >> {q(p)}"]


def _retarget(rng: random.Random, m: _Model) -> list[str] | None:
    links = m.of("symlink")
    if not links:
        return None
    p = rng.choice(links)
    return [f"rm -f {q(p)}", f"ln -s {shlex.quote(rng.choice([*NAMES, '..']))} {q(p)}"]


def _file_to_symlink(rng: random.Random, m: _Model) -> list[str] | None:
    files = m.of("file")
    if not files:
        return None
    p = rng.choice(files)
    m.drop(p)
    m.add(p, "symlink")
    return [f"rm -f {q(p)}", f"ln -s {shlex.quote(rng.choice(NAMES))} {q(p)}"]


def _deep(rng: random.Random, m: _Model) -> list[str] | None:
    top = m.free_name(rng, rng.choice(["", *m.of("dir")]))
    path = f"{top}/d1/d2"
    for p in (top, f"{top}/d1", path):
        m.add(p, "dir")
    m.add(path + "/f", "file")
    return [f"mkdir -p {q(path)}", f"echo deep > {q(path + '/f')}"]


CHANGES = {
    "folder to symlink": _dir_to_symlink,
    "folder moved, symlink in its place": _moved_and_linked,
    "folder to file": _dir_to_file,
    "file to folder": _to_dir("file"),
    "symlink to folder": _to_dir("symlink"),
    "folder emptied and refilled": _refilled,
    "folder emptied": _emptied,
    "hard link": _hard_link,
    "deletion": _delete,
    "mode": _mode,
    "owner": _owner,
    "file edited": _edit,
    "symlink retargeted": _retarget,
    "file to symlink": _file_to_symlink,
    "new deep tree": _deep,
}


def _copy_tree(rng: random.Random, m: _Model) -> tuple[dict[str, Node], list[str]]:
    """A host tree for a ``copy:`` layer onto the case's folder: over some paths of another
    kind (a folder over a file or a symlink, a file or a symlink over a folder), hard links."""
    tree: dict[str, Node] = {}
    what: list[str] = []

    def parent_dirs(path: str) -> None:
        parent = posixpath.dirname(path)
        if parent and parent not in tree:
            parent_dirs(parent)
            tree[parent] = Node("dir", 0o755)

    for _ in range(rng.randint(1, 3)):
        existing = sorted(m.kinds)
        p = rng.choice(existing) if existing and rng.random() < 0.7 else m.free_name(rng, "")
        if any(p.startswith(t + "/") for t, n in tree.items() if n.kind != "dir"):
            continue
        kind = m.kinds.get(p)
        parent_dirs(p)
        if kind != "dir" and rng.random() < 0.6 and p not in tree:
            tree[p] = Node("dir", 0o755)
            tree[p + "/c"] = Node("file", 0o644, data=b"copied into a folder\n")
            what.append(f"copy: folder over {kind or 'nothing'}")
            m.drop(p)
            m.add(p, "dir")
            m.add(p + "/c", "file")
        elif p not in tree:
            if rng.random() < 0.5:
                tree[p] = Node("file", 0o755, data=b"copied file\n")
                m.drop(p)
                m.add(p, "file")
            else:
                tree[p] = Node("symlink", target=rng.choice(NAMES))
                m.drop(p)
                m.add(p, "symlink")
            what.append(f"copy: {tree[p].kind} over {kind or 'nothing'}")
    files = [p for p, n in tree.items() if n.kind == "file"]
    if files and rng.random() < 0.5:
        dst = posixpath.join(posixpath.dirname(files[0]), "hl")
        if dst not in tree and not any(dst.startswith(t + "/") for t, n in tree.items() if n.kind != "dir"):
            tree[dst] = Node("hardlink", target=files[0])
            m.drop(dst)
            m.add(dst, "file")
            what.append("copy: hard link")
    return tree, what


def generate(seed: int, count: int) -> list[Case]:
    """``count`` random cases from ``seed``, after the fixed ones (:func:`fixed`)."""
    rng = random.Random(seed)
    cases = fixed()
    for i in range(count):
        lower = _lower(rng)
        case = Case(f"s{seed}-{i}", lower)
        model = _Model(lower)
        for step in (0, 1):
            for _ in range(rng.randint(1, 4)):
                name = rng.choice(sorted(CHANGES))
                lines = CHANGES[name](rng, model)  # type: ignore[operator]
                if lines:
                    case.steps[step] += lines
                    case.what.append(f"step {step + 1}: {name}")
            if step == 0:
                case.claimed = sorted(model.written)
                if rng.random() < 0.5:
                    case.copy, what = _copy_tree(rng, model)
                    case.what += what
                model.written.clear()
        cases.append(case)
    return cases


def fixed() -> list[Case]:
    """The cases every run has: the red team's reproducers, spelled as they were."""
    swap = Case(
        "swap",
        {
            "usr/lib/pa": Node("dir", 0o755),
            "usr/lib/pa/keep": Node("file", 0o644, data=b"the step never touched this\n"),
            "usr/lib/swap": Node("dir", 0o755),
            "usr/lib/swap/keep": Node("file", 0o644, data=b"gone with its folder\n"),
            "usr/lib/swap/sub": Node("dir", 0o755),
            "usr/lib/swap/sub/deeper": Node("file", 0o644, data=b"gone too\n"),
        },
        steps=[["rm -rf ./usr/lib/swap && ln -s pa ./usr/lib/swap"], ["echo after > ./usr/lib/swap/written-through"]],
        what=["folder to symlink, then a step writing through it"],
    )
    to_file = Case(
        "to-file",
        {
            "d": Node("dir", 0o755),
            "d/f": Node("file", 0o644, data=b"below a folder that becomes a file\n"),
            "e": Node("dir", 0o700, 1000, 1000),
            "e/-first": Node("file", 0o644, data=b"sorts before the opaque marker\n"),
            "e/old": Node("file", 0o644, data=b"old\n"),
        },
        steps=[
            ["rm -rf ./d && echo now a file > ./d", "rm -rf ./e && mkdir ./e && echo refilled > ./e/-new"],
            ["echo more > ./e/,comma", "ln ./d ./d-link"],
        ],
        what=["folder to file", "folder emptied and refilled", "hard link to a file of the layer below"],
        claimed=["d", "e/-new"],
    )
    return [swap, to_file]


def cuda_case() -> tuple[dict[str, Node], list[list[str]]]:
    """``/usr/local/cuda`` replaced by a symlink to ``cuda-12.8``, then another step (paths
    below the root, not a case folder): the issue's must-show."""
    lower = {
        "usr/local/cuda": Node("dir", 0o755),
        "usr/local/cuda/lib64": Node("dir", 0o755),
        "usr/local/cuda/lib64/libcudart.so.12": Node("file", 0o755, data=b"old runtime\n"),
        "usr/local/cuda/include": Node("dir", 0o755),
        "usr/local/cuda/include/cuda.h": Node("file", 0o644, data=b"#define OLD 1\n"),
        "usr/local/cuda-12.8": Node("dir", 0o755),
        "usr/local/cuda-12.8/lib64": Node("dir", 0o755),
        "usr/local/cuda-12.8/lib64/libcudart.so.12": Node("file", 0o755, data=b"12.8 runtime\n"),
    }
    steps = [
        ["rm -rf /usr/local/cuda", "ln -sfn cuda-12.8 /usr/local/cuda"],
        ["echo after > /usr/local/cuda/lib64/added-by-step-2", "test -f /usr/local/cuda-12.8/lib64/added-by-step-2"],
    ]
    return lower, steps


def read_listing(text: str) -> dict[str, tuple[str, ...]]:
    """A listing as :data:`LISTER` prints it: path -> (kind, mode, uid, gid, content or
    target, hard-link group), the group being the sorted other paths sharing the inode."""
    rows: dict[str, tuple[str, str, str, str, str]] = {}
    for line in text.splitlines():
        mode, uid, gid, inode, digest, rest = line.split("|", 5)
        path, _, target = rest.partition("|")
        rows[path] = (mode, uid, gid, inode, digest or target)
    return normalise({p: (int(m, 16), int(u), int(g), i, c) for p, (m, u, g, i, c) in rows.items()})


def normalise(rows: dict[str, tuple[int, int, int, str, str]]) -> dict[str, tuple[str, ...]]:
    """Rows of (st_mode, uid, gid, inode, content or target) by path, compared across
    consumers: the kind and permission bits, owners, content, and which other paths are
    the same file (a folder's link count and inode differ between file systems)."""
    groups: dict[str, list[str]] = {}
    for path, (mode, _, _, inode, _) in rows.items():
        if mode & 0o170000 == 0o100000:
            groups.setdefault(inode, []).append(path)
    out: dict[str, tuple[str, ...]] = {}
    for path, (mode, uid, gid, inode, content) in rows.items():
        kind = {0o040000: "dir", 0o100000: "file", 0o120000: "symlink"}.get(mode & 0o170000, oct(mode & 0o170000))
        perm = "" if kind == "symlink" else f"{mode & 0o7777:04o}"
        same = ",".join(sorted(p for p in groups.get(inode, []) if p != path)) if kind == "file" else ""
        out[path] = (kind, perm, str(uid), str(gid), content, same)
    return out
