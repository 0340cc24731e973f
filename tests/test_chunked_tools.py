"""zstd:chunked images read by the real tools: crane, umoci 0.6 and skopeo, which know
nothing of the format and read it as zstd, and podman 4.3 (c/storage 1.43), which pulls
only the files it lacks (``enable_partial_images``). Each one's files are compared with
the layers' own; every layer is checked with the tests' reader of the format
(tests/zstd_chunked.py); a second build from an empty cache gives the same digests.

The image: a base built as plain zstd (Debian and a small layer) and read back from its OCI
layout, so that a build with ``compression: zstd:chunked`` converts its layers, and two
copy layers written as zstd:chunked in their one pass, one holding a file of ``BIG`` bytes
or more (a frame of zstd's own threads).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from assembler.archive.chunked import BIG
from tests import zstd_chunked
from tests.conftest import TEST_CACHE
from tests.helpers import config_of, layout_digest, manifest_of, read_blob, run_cli, sh
from tests.plugins.registry import RunningRegistry, start_registry

CRANE = TEST_CACHE / "crane-v0.22.1" / "crane"
UMOCI = TEST_CACHE / "umoci-v0.6.0" / "umoci"

MANIFEST = """\
name: chunky
compression: {compression}
bases:
  runtime: {base}
image:
  base: runtime
  layers:
{layers}
  config:
    cmd: [/app/hello.sh]
outputs:
  - oci:out/{name}:latest
"""

Tree = dict[str, tuple[str, str]]  # path -> ("file", sha256) or ("symlink", target)


@dataclass
class Images:
    project: Path
    cache: Path
    layout: Path  # out/chunked: the image, zstd:chunked
    v2: Path  # out/v2: the same, another /etc/motd and epoch
    plain: Path  # out/plain: the base, plain zstd


LAYERS = """\
    - copy: {from: ./app/, to: /app/, mode: "0755"}
    - copy: {from: ./etc/motd, to: /etc/motd}"""


def _build(project: Path, name: str, base: str, compression: str, *args: str, cache: Path | None = None) -> None:
    layers = LAYERS if name != "plain" else "    - copy: {from: ./etc/base.txt, to: /etc/base.txt}"
    (project / f"{name}.yaml").write_text(MANIFEST.format(compression=compression, base=base, name=name, layers=layers))
    ran = run_cli([f"{name}.yaml", "--cache", str(cache or project / "cache"), *args], cwd=project)
    assert ran.code == 0, str(ran)


@pytest.fixture(scope="module")
def images(debian_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Images:
    project = tmp_path_factory.mktemp("chunked")
    (project / "app/lib").mkdir(parents=True)
    (project / "app/hello.sh").write_text("#!/bin/sh\necho hello from $(cat /etc/motd)\n")
    (project / "app/lib/data.txt").write_text("payload\n" * 1000)
    (project / "app/big.bin").write_bytes(os.urandom(BIG + 12345))
    os.symlink("lib/data.txt", project / "app/data")
    (project / "etc").mkdir()
    (project / "etc/motd").write_text("version one\n")
    (project / "etc/base.txt").write_text("a layer of the base\n")
    _build(project, "plain", f"rootfs:{debian_rootfs}", "zstd")
    _build(project, "chunked", f"oci:{project}/out/plain:latest", "zstd:chunked")
    (project / "etc/motd").write_text("version two\n")
    _build(project, "v2", f"oci:{project}/out/plain:latest", "zstd:chunked", "--epoch", "1700000000")
    (project / "etc/motd").write_text("version one\n")
    out = project / "out"
    return Images(project, project / "cache", out / "chunked", out / "v2", out / "plain")


def _layers(layout: Path) -> Iterator[tuple[dict[str, object], str, bytes]]:
    manifest, config = manifest_of(layout, "latest"), config_of(layout, "latest")
    for desc, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        yield desc, diff_id, read_blob(layout, str(desc["digest"]))


def expected_tree(layout: Path) -> Tree:
    """The image's files as its layers say, applied in order (regular files and symlinks)."""
    tree: Tree = {}
    for _, _, blob in _layers(layout):
        with tarfile.open(fileobj=io.BytesIO(zstd_chunked.decompress(blob)), mode="r:") as tf:
            for member in tf:
                path = member.name.rstrip("/")
                if member.isfile():
                    data = tf.extractfile(member)
                    assert data is not None
                    tree[path] = ("file", hashlib.sha256(data.read()).hexdigest())
                elif member.islnk():
                    tree[path] = tree[member.linkname]
                elif member.issym():
                    tree[path] = ("symlink", member.linkname)
    return tree


def tree_on_disk(root: Path) -> Tree:
    tree: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                tree[rel] = ("symlink", os.readlink(path))
            elif stat.S_ISREG(mode):
                with open(path, "rb") as f:
                    tree[rel] = ("file", hashlib.file_digest(f, "sha256").hexdigest())
    return tree


def _relative(name: str) -> str:
    return (name[2:] if name.startswith("./") else name.lstrip("/")).rstrip("/")


def tree_of_tar(tar: Path) -> Tree:
    """The files of a flattened filesystem tar (crane export), hard links resolved at the
    end: its writer need not put a link's target first."""
    tree: Tree = {}
    links: dict[str, str] = {}
    with tarfile.open(tar, mode="r:") as tf:
        for member in tf:
            path = _relative(member.name)
            if member.isfile():
                data = tf.extractfile(member)
                assert data is not None
                tree[path] = ("file", hashlib.sha256(data.read()).hexdigest())
            elif member.issym():
                tree[path] = ("symlink", member.linkname)
            elif member.islnk():
                links[path] = _relative(member.linkname)
    for path, target in links.items():
        tree[path] = tree[target]
    return tree


def test_every_layer_is_zstd_chunked_with_its_diff_id(images: Images) -> None:
    plain = list(_layers(images.plain))
    layers = list(_layers(images.layout))
    assert len(layers) == len(plain) + 2
    for desc, diff_id, blob in layers:
        assert desc["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
        annotations = desc["annotations"]
        assert isinstance(annotations, dict)
        zstd_chunked.check_blob(blob, annotations, diff_id)
    # The base's plain zstd layer was converted: another blob, the same tar.
    assert layers[0][0]["digest"] != plain[0][0]["digest"] and layers[0][1] == plain[0][1]
    big = zstd_chunked.read(layers[-2][2], layers[-2][0]["annotations"])  # type: ignore[arg-type]
    assert len(big.files["app/big.bin"]) == BIG + 12345


def test_a_second_build_from_an_empty_cache_gives_the_same_digests(images: Images, tmp_path: Path) -> None:
    _build(images.project, "again", f"oci:{images.project}/out/plain:latest", "zstd:chunked", cache=tmp_path / "c")
    again = images.project / "out/again"
    assert [d["digest"] for d, _, _ in _layers(again)] == [d["digest"] for d, _, _ in _layers(images.layout)]
    assert layout_digest(again, "latest") == layout_digest(images.layout, "latest")


@pytest.fixture()
def pushed(images: Images, tmp_path: Path) -> Iterator[RunningRegistry]:
    """A registry holding the image as ``chunky:1`` and ``chunky:2``, as skopeo copies them."""
    reg = start_registry(tmp_path / "registry", access_log=True)
    try:
        for tag, layout in (("1", images.layout), ("2", images.v2)):
            sh(
                [
                    "skopeo",
                    "copy",
                    "--dest-tls-verify=false",
                    f"oci:{layout}:latest",
                    f"docker://{reg.host}/chunky:{tag}",
                ]
            )
        yield reg
    finally:
        reg.stop()


def test_crane_umoci_and_skopeo_read_it_as_zstd(images: Images, pushed: RunningRegistry, tmp_path: Path) -> None:
    want = expected_tree(images.layout)
    assert want["app/big.bin"][0] == "file" and want["etc/motd"] == want_motd("version one\n")
    # The registry keeps the annotations: what a partial pull needs.
    pulled = json.loads(sh([str(CRANE), "manifest", "--insecure", f"{pushed.host}/chunky:1"]).stdout)
    assert pulled == manifest_of(images.layout, "latest")

    sh([str(CRANE), "export", "--insecure", f"{pushed.host}/chunky:1", str(tmp_path / "crane.tar")])
    assert _same(tree_of_tar(tmp_path / "crane.tar"), want)

    sh([str(UMOCI), "unpack", "--image", f"{images.layout}:latest", str(tmp_path / "bundle")])
    assert _same(tree_on_disk(tmp_path / "bundle/rootfs"), want)

    # skopeo into containers-storage as podman pulls without partial images: c/storage reads
    # the whole blob and computes each layer's diff_id.
    with _podman(tmp_path, partial=False) as podman:
        sh(["skopeo", "copy", "--src-tls-verify=false", f"docker://{pushed.host}/chunky:1", podman.dest("chunky:1")])
        assert _same(podman.files("chunky:1"), want)


def want_motd(text: str) -> tuple[str, str]:
    return ("file", hashlib.sha256(text.encode()).hexdigest())


def _same(got: Tree, want: Tree) -> bool:
    """``got`` has every file and symlink of ``want``, alike (a runtime adds nothing else here)."""
    missing = {p: w for p, w in want.items() if got.get(p) != w}
    assert not missing, f"{len(missing)} differ, e.g. {sorted(missing.items())[:5]}"
    return True


class _Podman:
    def __init__(self, root: Path, runroot: str, conf: Path) -> None:
        self.root, self.runroot, self.conf = root, runroot, conf
        self.env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)}

    def dest(self, ref: str) -> str:
        return f"containers-storage:[overlay@{self.root}+{self.runroot}]{ref}"

    def run(self, *args: str) -> str:
        ran = sh(["podman", *args], env=self.env)
        return ran.stdout + ran.stderr

    def files(self, ref: str) -> Tree:
        mounted = Path(self.run("image", "mount", ref).strip().splitlines()[-1])
        try:
            return tree_on_disk(mounted)
        finally:
            self.run("image", "unmount", ref)


class _podman:  # noqa: N801 - a context manager, used as a function
    """A podman store of its own; ``partial``: storage.conf's ``enable_partial_images``."""

    def __init__(self, tmp_path: Path, *, partial: bool) -> None:
        self.root = tmp_path / ("podman-partial" if partial else "podman")
        self.runroot = tempfile.mkdtemp(prefix="pm", dir="/tmp")  # podman refuses a long runroot
        conf = tmp_path / f"storage-{partial}.conf"
        options = 'pull_options = {enable_partial_images = "true"}' if partial else ""
        conf.write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{self.root}"\nrunroot = "{self.runroot}"\n'
            f"[storage.options]\n{options}\n"
        )
        self.podman = _Podman(self.root, self.runroot, conf)

    def __enter__(self) -> _Podman:
        return self.podman

    def __exit__(self, *_: object) -> None:
        sh(["podman", "rmi", "--all", "--force"], env=self.podman.env, check=False)
        shutil.rmtree(self.runroot, ignore_errors=True)


_SENT = re.compile(r'"GET (/v2/[^ ]*/blobs/[^ ]*) HTTP/[0-9.]+" (\d{3}) (\d+)')


def blob_bytes_sent(reg: RunningRegistry, since: int) -> dict[int, int]:
    """Bytes of blobs the registry sent after byte ``since`` of its log, by status (206: ranges)."""
    sent: dict[int, int] = {}
    with open(reg.log, "rb") as f:
        f.seek(since)
        for match in _SENT.finditer(f.read().decode(errors="replace")):
            sent[int(match[2])] = sent.get(int(match[2]), 0) + int(match[3])
    return sent


def _pull(podman: _Podman, reg: RunningRegistry, tag: str) -> tuple[str, dict[int, int]]:
    since = reg.log.stat().st_size
    log = podman.run("--log-level=debug", "pull", "--tls-verify=false", f"{reg.host}/chunky:{tag}")
    return log, blob_bytes_sent(reg, since)


def test_podman_pulls_only_the_files_it_lacks(images: Images, pushed: RunningRegistry, tmp_path: Path) -> None:
    """Podman 4.3 (c/storage 1.43) pulls zstd:chunked layers in part: the TOC, then the
    ranges of the files it has nowhere. The second image's layers are all new blobs, but
    only /etc/motd changed: it fetches their TOCs and one small frame."""
    one = [str(d["digest"]) for d, _, _ in _layers(images.layout)]
    new: Mapping[str, int] = {str(d["digest"]): int(str(d["size"])) for d, _, _ in _layers(images.v2)}
    new = {digest: size for digest, size in new.items() if digest not in one}
    assert len(new) == 2  # the two copy layers; the base's is the first image's
    with _podman(tmp_path, partial=True) as podman:
        log, sent = _pull(podman, pushed, "1")
        assert sorted(_partial(log)) == sorted(one), log[-3000:]
        assert set(sent) == {200, 206}  # the config whole, the layers by their ranges
        assert _same(podman.files(f"{pushed.host}/chunky:1"), expected_tree(images.layout))

        log, sent = _pull(podman, pushed, "2")
        assert sorted(_partial(log)) == sorted(new), log[-3000:]
        assert sent[206] < 0.02 * sum(new.values()), (sent, new)
        assert _same(podman.files(f"{pushed.host}/chunky:2"), expected_tree(images.v2))


def _partial(log: str) -> list[str]:
    """The layers c/image says it pulled in part."""
    return re.findall(r"Retrieved partial blob (sha256:[0-9a-f]{64})", log)
