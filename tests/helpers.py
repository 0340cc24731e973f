"""Helpers shared by the tests: running the CLI as a user would, reading images back."""

from __future__ import annotations

import atexit
import contextlib
import functools
import http.server
import io
import json
import os
import resource
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from assembler.oci import mediatypes as mt
from assembler.oci.digest import canonical_json, sha256_digest
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from tests.forkcli import Zygotes

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
_ZYGOTES = Zygotes(ROOT, PYTHON)
atexit.register(_ZYGOTES.close)


@dataclass
class Ran:
    argv: list[str]
    code: int
    out: str
    err: str
    peak_rss_kib: int = 0

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:
        return f"$ {' '.join(self.argv)}\nexit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def run_cli_here(args: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Ran:
    """The CLI's ``main(ARGS)`` in this process, output captured: as ``run_cli`` without an
    interpreter's start (about a second a call). For commands that run no container and
    start no thread of their own: plans, and builds of copy-only manifests."""
    from assembler.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    try:
        os.environ.pop("ASSEMBLE_TRACEBACK", None)
        os.environ.update(env or {})
        os.chdir(cwd or ROOT)
        # the CLI's consoles write to whatever sys.stdout and sys.stderr are at the time
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's errors
                code = e.code if isinstance(e.code, int) else 2
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return Ran(["assemble", *args], code, stdout.getvalue(), stderr.getvalue())


def run_cli(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800,
    measure_rss: bool = False,
) -> Ran:
    """``python -m assembler ARGS`` in a process of its own: forked from a worker's zygote,
    which imported the CLI already (tests/forkcli.py: half a second of CPU less a call), or
    started as a subprocess where the environment asks for a fresh interpreter; with
    ``measure_rss``, a subprocess and its peak RSS (through a fresh wrapper process, so only
    this command's memory counts)."""
    argv = [PYTHON, "-m", "assembler", *args]
    full_env = dict(os.environ)
    full_env.pop("ASSEMBLE_TRACEBACK", None)
    full_env.update(env or {})
    if not measure_rss and _ZYGOTES.usable(full_env):
        forked = _ZYGOTES.call(args, Path(cwd or ROOT), full_env, timeout)
        if forked is not None:
            return Ran(argv, *forked)
    if measure_rss:
        wrapper = textwrap.dedent(
            """
            import resource, subprocess, sys
            code = subprocess.call(sys.argv[1:])
            sys.stderr.write("\\nPEAK_RSS_KIB=%d\\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
            sys.exit(code)
            """
        )
        argv = [PYTHON, "-c", wrapper, *argv]
    proc = subprocess.run(argv, cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    ran = Ran(argv, proc.returncode, proc.stdout, proc.stderr)
    if measure_rss:
        for line in proc.stderr.splitlines():
            if line.startswith("PEAK_RSS_KIB="):
                ran.peak_rss_kib = int(line.split("=", 1)[1])
    return ran


def os_release_base(path: Path) -> Path:
    """A ``rootfs:`` base tarball holding only ``etc/os-release`` (``ID=test``): one a plan
    or a lock opens, on which nothing runs."""
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("etc/os-release")
        info.size = 8
        tf.addfile(info, io.BytesIO(b"ID=test\n"))
    return path


def rootfs_project(folder: Path) -> Path:
    """A manifest that needs no program: a ``rootfs:`` base tarball (``root.tar``) and a
    ``copy:`` layer of ``files/`` (``a.txt``), as ``m.yaml`` in ``folder``; the tarball."""
    root = folder / "root.tar"
    with tarfile.open(root, "w") as tf:
        for name, data in (("etc/os-release", b"ID=probe\n"), ("bin/hello", b"#!/bin/sh\necho hi\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tf.addfile(info, io.BytesIO(data))
    (folder / "files").mkdir()
    (folder / "files/a.txt").write_text("data\n")
    (folder / "m.yaml").write_text(
        "name: probe\nbases:\n  root: rootfs:root.tar\n"
        "image:\n  base: root\n  layers:\n    - copy: {from: ./files/, to: /srv/}\n"
    )
    return root


def sh(argv: Sequence[str], *, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"$ {' '.join(argv)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def resolver_says(host: str) -> str:
    """Why this machine's resolver finds no address for ``host`` (a ``.invalid`` name, which
    never resolves: RFC 6761), as the preflight words it: "name or service not known"
    where a DNS server answers, "temporary failure in name resolution" where none can be
    reached (offline, and the unit tier: scripts/unit-sandbox)."""
    try:
        socket.getaddrinfo(host, 443)
    except socket.gaierror as e:
        return str(e.strerror).lower()
    raise AssertionError(f"{host} resolves here")


def layout_index(path: Path) -> dict[str, Any]:
    return json.loads((path / "index.json").read_text())


def layout_digest(path: Path, tag: str) -> str:
    for d in layout_index(path)["manifests"]:
        if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return str(d["digest"])
    raise AssertionError(f"no tag {tag} in {path}")


def read_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def manifest_of(layout: Path, tag: str) -> dict[str, Any]:
    return json.loads(read_blob(layout, layout_digest(layout, tag)))


def config_of(layout: Path, tag: str) -> dict[str, Any]:
    return json.loads(read_blob(layout, manifest_of(layout, tag)["config"]["digest"]))


def uncompressed(data: bytes) -> bytes:
    """A layer's tar bytes, whatever its compression."""
    import gzip

    if data[:4] == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True).read()
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    return data


def storage_of(cache: Path, env: Mapping[str, str] | None = None) -> Path:
    """The buildah storage a build with ``cache`` used: ``$ASSEMBLE_STORAGE`` (the test
    process's shared one, see conftest's ``shared_storage``) unless ``env`` clears it."""
    shared = {**os.environ, **(env or {})}.get("ASSEMBLE_STORAGE")
    return Path(shared) if shared else cache / "buildah"


def buildah_containers(cache: Path, env: Mapping[str, str] | None = None) -> list[str]:
    """The working containers left in the buildah storage a build with ``cache`` used (none
    before it exists; the test process's shared storage holds no other test's: they run
    one after another and leave none)."""
    storage = storage_of(cache, env)
    if not (storage / "root").exists():
        return []
    g = ["buildah", "--root", str(storage / "root"), "--runroot", str(storage / "run")]
    argv = [*g, "--storage-driver", "overlay", "containers", "--quiet"]
    return [line for line in sh(argv).stdout.splitlines() if line.strip()]


class Buildah:
    """buildah, for proving that images run: in the test process's storage
    (``$ASSEMBLE_STORAGE``, :func:`tests.conftest.shared_storage`) when there is one, where
    the bases an image is built on are already, else in ``root``."""

    def __init__(self, root: Path) -> None:
        shared = os.environ.get("ASSEMBLE_STORAGE")
        root = Path(shared) if shared else root
        self.argv = [
            "buildah",
            "--root",
            str(root / "root"),
            "--runroot",
            str(root / "run"),
            "--storage-driver",
            "overlay",
        ]

    def run_image(self, ref: str, command: Sequence[str], *, env: Mapping[str, str] | None = None) -> str:
        """``buildah from REF`` + ``buildah run --isolation chroot`` COMMAND; its stdout.

        buildah 1.28's chroot run can lose the last of a command's output when the command
        exits (seen under a loaded full suite: a program that writes its lines at exit,
        exit 0, nothing read). A run that exits 0 with no output at all is run once more in
        a new container; a command that prints nothing still gives ""."""
        out = self._run_once(ref, command, env)
        return out if out else self._run_once(ref, command, env)

    def _run_once(self, ref: str, command: Sequence[str], env: Mapping[str, str] | None) -> str:
        ctr = sh([*self.argv, "from", "--quiet", ref]).stdout.strip().splitlines()[-1]
        try:
            extra = [a for k, v in (env or {}).items() for a in ("--env", f"{k}={v}")]
            return sh([*self.argv, "run", "--isolation", "chroot", *extra, ctr, "--", *command]).stdout
        finally:
            sh([*self.argv, "rm", ctr], check=False)


def max_rss_mib(ran: Ran) -> float:
    return ran.peak_rss_kib / 1024


def self_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def small_project(root: Path, manifest: str) -> Path:
    """Two text files, ``manifest`` as m.yaml and a tiny root filesystem tarball (base.tar)
    as its base: quick builds that need no container and no network."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.txt").write_text("first file\n" * 50)
    (root / "b.txt").write_text("second file\n" * 50)
    (root / "m.yaml").write_text(manifest)
    with tarfile.open(root / "base.tar", "w") as tf:
        for name, data in (("etc/os-release", b"ID=test\n"), ("bin/tool", b"#!/bin/sh\n" * 40)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return root


def files_project(root: Path, rootfs: Path) -> Path:
    """A manifest with one compile step `pkg` (artifacts `wheel` and `tool`) and an image
    that cannot build (`run: [false]`): for outputs that write artifacts, not images."""
    root.mkdir()
    (root / "m.yaml").write_text(
        f"name: files\nbases: {{devel: 'rootfs:{rootfs}', runtime: scratch}}\n"
        "compile:\n"
        "  - name: pkg\n    base: devel\n"
        "    run: ['mkdir -p /build/dist /build/bin && echo wheel > /build/dist/pkg-1.0-py3-none-any.whl"
        ' && printf "#!/bin/sh\\necho hi\\n" > /build/bin/tool && chmod 755 /build/bin/tool\']\n'
        "    artifacts:\n"
        "      wheel: {path: '/build/dist/*.whl', to: /wheels/}\n"
        "      tool: {path: /build/bin/tool, to: /usr/local/bin/tool}\n"
        "image:\n  base: runtime\n  layers:\n    - run: ['false']\n      name: never\n"
    )
    return root


# How often a test's HTTP server looks whether it is to stop: ``shutdown()`` waits for that
# look, and at the standard library's 0.5 s every server a unit test started cost it half a
# second of sleep (8 s of the unit tier's teardowns alone).
SERVER_POLL_S = 0.02


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler] | Any) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 with ``handler`` (a class or a factory), in a thread, for
    the block; yields its ``127.0.0.1:PORT``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(SERVER_POLL_S,), daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving_folder(folder: Path) -> Iterator[str]:
    """``folder``'s files over plain HTTP for the block; yields the URL prefix."""
    with serving(functools.partial(_QuietFiles, directory=str(folder))) as host:
        yield f"http://{host}"


def one_layer_image(layer: Layer) -> Image:
    """A one-layer image of ``layer`` (for the readers that take an image)."""
    config = canonical_json(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}
    )
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
            "layers": [layer.descriptor.to_json()],
        }
    )
    return Image(manifest, config)


def spools_made(monkeypatch: Any) -> list[Any]:
    """Every spool a layer's headers make from now on (``archive/headers.py`` spools an ELF
    file whose bytes it cannot read again from the host), in order."""
    import tempfile

    from assembler.archive import headers

    spools: list[Any] = []
    spooled = tempfile.SpooledTemporaryFile

    def counted(*args: Any, **kwargs: Any) -> Any:
        spools.append(spooled(*args, **kwargs))
        return spools[-1]

    monkeypatch.setattr(headers.tempfile, "SpooledTemporaryFile", counted)
    return spools
