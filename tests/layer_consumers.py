"""The differential test of our layers, shared by tests/test_layer_consumers.py and
scripts/diff-layers: the cases of :mod:`tests.layercases` built into one image (a base
made here, two ``run:`` steps, ``copy:`` layers between them), then that image unpacked
by every consumer at hand, each tree compared with what the last step's container saw.

Consumers (:data:`CONSUMERS`): umoci (``umoci unpack``), buildah on overlay and on vfs
(``buildah from`` + ``buildah mount``), podman on overlay (``podman pull`` + ``podman image
mount``), and our own squashfs (``-o sqsh:``, read back with ``unsquashfs``). The
container's own view is the listing its last command wrote (``/seen-2.txt``: what busybox's
``stat``, ``readlink`` and ``sha256sum`` said inside it).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import run_cli
from tests.layercases import LISTER, ROOTS, Case, Node, cuda_case, normalise, read_listing

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "rm", "ln", "mkdir", "echo", "mv", "chmod", "chown", "find", "sort", "stat", "readlink")
APPLETS += ("sha256sum", "test", "cat", "true", "printf", "[")
TAG = "1"


@dataclass(frozen=True)
class Built:
    """An image of the cases: its OCI layout (``layout:1``), its squashfs, and how many
    layers it has."""

    layout: Path
    sqsh: Path
    layers: int
    cases: tuple[Case, ...]
    options: tuple[str, ...]


def _add(tf: tarfile.TarFile, path: str, node: Node) -> None:
    info = tarfile.TarInfo(path)
    info.mode, info.uid, info.gid, info.mtime = node.mode, node.uid, node.gid, 1_600_000_000
    data = None
    if node.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif node.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, node.target
    elif node.kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, node.target
    else:
        info.size, data = len(node.data), io.BytesIO(node.data)
    tf.addfile(info, data)


def _folders(tf: tarfile.TarFile, path: str, made: set[str]) -> None:
    parts = path.split("/")
    for i in range(1, len(parts)):
        folder = "/".join(parts[:i])
        if folder not in made:
            made.add(folder)
            _add(tf, folder, Node("dir", 0o755))


def base_tar(path: Path, cases: Sequence[Case]) -> None:
    """A base of a static busybox, the lister, and every case's lower tree."""
    made: set[str] = set()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        _folders(tf, "bin/busybox", made)
        tf.add(BUSYBOX, "bin/busybox")
        for applet in APPLETS:
            _add(tf, f"bin/{applet}", Node("symlink", target="busybox"))
        _add(tf, "lister.sh", Node("file", 0o755, data=LISTER.encode()))
        for folder in ("tmp", "etc", "usr/local"):
            _folders(tf, folder + "/x", made)
        cuda_lower, _ = cuda_case()
        for rel, node in cuda_lower.items():
            _folders(tf, rel, made)
            made.add(rel)
            _add(tf, rel, node)
        for case in cases:
            for rel, node in case.lower.items():
                full = f"{case.folder}/{rel}"
                _folders(tf, full, made)
                if node.kind == "dir":
                    made.add(full)
                if node.kind == "hardlink":
                    node = Node("hardlink", target=f"{case.folder}/{node.target}")
                _add(tf, full, node)
            _folders(tf, f"{case.folder}/x", made)


def _host_tree(root: Path, tree: dict[str, Node]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rel, node in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if node.kind == "dir":
            path.mkdir(exist_ok=True)
        elif node.kind == "symlink":
            os.symlink(node.target, path)
        elif node.kind == "hardlink":
            os.link(root / node.target, path)
        else:
            path.write_bytes(node.data)
            path.chmod(node.mode)


def _step(cases: Sequence[Case], index: int, extra: Sequence[str]) -> list[str]:
    commands = []
    for case in cases:
        if case.steps[index]:
            said = f"layercases: {case.name}: failed:"
            body = "\n".join(f"{line} || echo {said} {_quote(line)} >&2" for line in case.steps[index])
            commands.append(f"cd /{case.folder}\n{body}")
    commands += extra
    roots = " ".join(f"/{r}" for r in ROOTS)
    return [*commands, f"/lister.sh {roots} > /seen-{index + 1}.txt"]


def _quote(line: str) -> str:
    return "'" + line.replace("'", "'\\''") + "'"


def with_records(cases: list[Case]) -> list[Case]:
    """A RECORD in each case's step 1 claiming what it wrote, so that a cut layer has a
    part per case (an opaque folder's files among them)."""
    for case in cases:
        record = "".join(f"../{p},,\n" for p in case.claimed)
        info = f"./pkgs/{case.name.replace('-', '_')}-1.0.dist-info"
        case.steps[0] = [*case.steps[0], f"mkdir -p {info}", f"printf '%s' {_quote(record)} > {info}/RECORD"]
    return cases


def manifest(cases: Sequence[Case]) -> str:
    """The manifest of the cases' image (YAML as JSON, which YAML reads)."""
    import json

    _, cuda_steps = cuda_case()
    layers: list[dict[str, object]] = [{"name": "step-1", "run": _step(cases, 0, cuda_steps[0])}]
    layers += [{"copy": {"from": f"./copy/{c.name}", "to": f"/{c.folder}"}} for c in cases if c.copy]
    layers.append({"name": "step-2", "run": _step(cases, 1, cuda_steps[1])})
    return json.dumps(
        {"name": "layercases", "bases": {"b": "rootfs:base.tar"}, "image": {"base": "b", "layers": layers}}
    )


def build(work: Path, cases: Sequence[Case], *options: str) -> Built:
    """The cases' image built in ``work``: ``work/out`` (gzip layers, which umoci 0.4 reads)
    and ``work/image.sqsh``."""
    work.mkdir(parents=True, exist_ok=True)
    base_tar(work / "base.tar", cases)
    for case in cases:
        if case.copy:
            _host_tree(work / "copy" / case.name, case.copy)
    (work / "m.yaml").write_text(manifest(cases))
    argv = ["m.yaml", "--cache", "cache", "--compression", "gzip", "-o", f"oci:out:{TAG}", "-o", "sqsh:image.sqsh"]
    ran = run_cli([*argv, "-q", *options], cwd=work)
    if ran.code != 0:
        raise AssertionError(f"the cases' image did not build:\n{ran}")
    import json

    index = json.loads((work / "out" / "index.json").read_text())
    image = next(e for e in index["manifests"] if "artifactType" not in e)
    manifest_blob = json.loads((work / "out" / "blobs" / "sha256" / image["digest"].split(":")[1]).read_bytes())
    return Built(work / "out", work / "image.sqsh", len(manifest_blob["layers"]), tuple(cases), options)


# -- the consumers ---------------------------------------------------------------------


def _run(argv: Sequence[str], **kwargs: object) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise ConsumerFailed(f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return str(done.stdout)


class ConsumerFailed(Exception):
    """A consumer refused the image (what podman and buildah on overlay did with a
    whiteout below a symlink of the same layer)."""


@contextlib.contextmanager
def _umoci(built: Built, work: Path) -> Iterator[Path]:
    _run(["umoci", "unpack", "--image", f"{built.layout}:{TAG}", str(work / "bundle")])
    yield work / "bundle" / "rootfs"


def _containers(tool: str, driver: str) -> Callable[[Built, Path], contextlib.AbstractContextManager[Path]]:
    @contextlib.contextmanager
    def unpack(built: Built, work: Path) -> Iterator[Path]:
        run = tempfile.mkdtemp(prefix="lc-")  # podman: a runroot of at most 50 characters
        g = [tool, "--root", str(work / "root"), "--runroot", run, "--storage-driver", driver]
        try:
            if tool == "buildah":
                name = _run([*g, "from", "--name", "c", f"oci:{built.layout}:{TAG}"]).strip().splitlines()[-1]
                yield Path(_run([*g, "mount", name]).strip())
            else:
                image = _run([*g, "pull", "-q", f"oci:{built.layout}:{TAG}"]).strip().splitlines()[-1]
                yield Path(_run([*g, "image", "mount", image]).strip())
        finally:
            if tool == "buildah":
                subprocess.run([*g, "rm", "--all"], capture_output=True)
            else:
                subprocess.run([*g, "image", "unmount", "--all"], capture_output=True)
                subprocess.run([*g, "rmi", "--all", "--force"], capture_output=True)
            subprocess.run(["umount", "-R", "-l", str(work / "root")], capture_output=True)
            shutil.rmtree(run, ignore_errors=True)

    return unpack


@contextlib.contextmanager
def _sqsh(built: Built, work: Path) -> Iterator[Path]:
    work.mkdir(parents=True, exist_ok=True)
    _run(["unsquashfs", "-q", "-n", "-d", str(work / "sqsh"), str(built.sqsh)])
    yield work / "sqsh"


CONSUMERS: dict[str, Callable[[Built, Path], contextlib.AbstractContextManager[Path]]] = {
    "umoci": _umoci,
    "buildah-overlay": _containers("buildah", "overlay"),
    "buildah-vfs": _containers("buildah", "vfs"),
    "podman-overlay": _containers("podman", "overlay"),
    "sqsh": _sqsh,
}


def walk(rootfs: Path) -> dict[str, tuple[str, ...]]:
    """What a consumer's tree holds under the roots, as :func:`tests.layercases.normalise` puts it."""
    rows: dict[str, tuple[int, int, int, str, str]] = {}
    for root in ROOTS:
        stack = [root] if os.path.lexists(rootfs / root) else []
        while stack:
            rel = stack.pop()
            path = rootfs / rel
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = ""
            rows[rel] = (st.st_mode, st.st_uid, st.st_gid, f"{st.st_dev}:{st.st_ino}", content)
            if stat.S_ISDIR(st.st_mode):
                stack += [f"{rel}/{name}" for name in os.listdir(path)]
    return normalise(rows)


@dataclass(frozen=True)
class Disagreement:
    consumer: str
    case: str
    path: str
    seen: tuple[str, ...] | None  # what the container saw
    got: tuple[str, ...] | None  # what the consumer unpacked

    def __str__(self) -> str:
        return f"{self.consumer}: {self.case}: {self.path}: the container saw {self.seen}, unpacked {self.got}"


def _case_of(path: str, cases: Sequence[Case]) -> str:
    for case in cases:
        if path == case.folder or path.startswith(case.folder + "/"):
            return f"{case.name} ({'; '.join(case.what)})"
    return "cuda" if path.startswith("usr/local") else "-"


def compare(built: Built, consumer: str, work: Path) -> list[Disagreement]:
    """The paths where ``consumer``'s tree differs from what the last step's container saw;
    ConsumerFailed when it refuses the image."""
    with CONSUMERS[consumer](built, work) as rootfs:
        seen = read_listing((rootfs / "seen-2.txt").read_text())
        got = walk(rootfs)
    out = []
    for path in sorted(set(seen) | set(got)):
        if seen.get(path) != got.get(path):
            out.append(Disagreement(consumer, _case_of(path, built.cases), path, seen.get(path), got.get(path)))
    shutil.rmtree(work, ignore_errors=True)
    return out
