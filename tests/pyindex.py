"""A Python package index on 127.0.0.1 for the lock's tests: wheels made here with the
metadata a test gives them (``Requires-Dist``, the date each was uploaded), served as PEP
691 JSON pages with ``upload-time`` (what uv's ``--exclude-newer`` reads), and a count of
the pages asked for (a lock that tries nothing again asks for none). Recorded metadata, not
PyPI's mood: the versions and requirements are upstream's, written down by each test. An
index may ask for a user and password (HTTP basic, ``auth``) on every page and file, and
give each file's full URL (``absolute``), as a private, CDN-backed index does."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.helpers import serving


def _dist(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel(folder: Path, project: str, version: str, requires: Sequence[str] = (), *, module: str | None = None) -> Path:
    """A pure-Python wheel of ``project`` ``version`` whose METADATA requires ``requires``;
    its module holds ``module`` (default: its version)."""
    dist = _dist(project)
    info = f"{dist}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{dist}/__init__.py": module if module is not None else f"VERSION = {version!r}\n",
        f"{info}/METADATA": metadata,
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for member, text in files.items():
            z.writestr(zipfile.ZipInfo(member, (2020, 1, 1, 0, 0, 0)), text)
    return path


class Index:
    """The projects of a local index: ``add`` a release, ``url`` to resolve against."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "files").mkdir(parents=True, exist_ok=True)
        self.releases: dict[str, list[dict[str, Any]]] = {}
        self.asked: list[str] = []
        self.authorized: list[bool] = []  # whether each request carried the user and password
        self.absolute = False  # True: pages give each file's full URL (else relative to the page)
        self.url = ""

    def add(self, project: str, version: str, *requires: str, uploaded: str = "2025-01-01T00:00:00Z") -> None:
        path = wheel(self.root / "files", project, version, requires)
        entry = {
            "filename": path.name,
            "url": f"../../files/{path.name}",
            "hashes": {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()},
            "upload-time": uploaded,
        }
        name = re.sub(r"[-_.]+", "-", project).lower()
        self.releases.setdefault(name, []).append(entry)

    def add_sdist(self, project: str, version: str, *requires: str, setup: str) -> None:
        """A source distribution whose PKG-INFO records ``requires`` and whose setup.py is ``setup``."""
        import io
        import tarfile

        dist = _dist(project)
        path = self.root / "files" / f"{dist}-{version}.tar.gz"
        pkg_info = f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n"
        pkg_info += "".join(f"Requires-Dist: {r}\n" for r in requires)
        with tarfile.open(path, "w:gz") as tar:
            for name, text in (("PKG-INFO", pkg_info), ("setup.py", setup)):
                info = tarfile.TarInfo(f"{dist}-{version}/{name}")
                info.size = len(text.encode())
                tar.addfile(info, io.BytesIO(text.encode()))
        entry = {
            "filename": path.name,
            "url": f"../../files/{path.name}",
            "hashes": {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()},
            "upload-time": "2025-01-01T00:00:00Z",
        }
        self.releases.setdefault(re.sub(r"[-_.]+", "-", project).lower(), []).append(entry)

    def page(self, project: str) -> bytes | None:
        files = self.releases.get(project)
        if files is None:
            return None
        if self.absolute:  # each file's URL in full, as a CDN-backed index gives it: no credentials in it
            top = self.url.removesuffix("/simple")
            files = [{**f, "url": f"{top}/files/{f['filename']}"} for f in files]
        return json.dumps({"meta": {"api-version": "1.1"}, "name": project, "files": files}).encode()


def _handler(index: Index, auth: tuple[str, str] | None = None) -> type[http.server.BaseHTTPRequestHandler]:
    wanted = "Basic " + base64.b64encode(":".join(auth).encode()).decode() if auth else None

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(index.root), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            if self._allowed():
                super().do_HEAD()

        def _allowed(self) -> bool:
            """Whether the request carries the index's user and password (every page and file
            of an index that asks for them: a 401 otherwise)."""
            index.authorized.append(self.headers.get("Authorization") == wanted)
            if wanted is None or self.headers.get("Authorization") == wanted:
                return True
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="index"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False

        def do_GET(self) -> None:
            if not self._allowed():
                return
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            if len(parts) == 2 and parts[0] == "simple":
                index.asked.append(parts[1])
                body = index.page(parts[1])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            super().do_GET()

    return Handler


@contextlib.contextmanager
def serving_index(root: Path, *, auth: tuple[str, str] | None = None) -> Iterator[Index]:
    """An Index in ``root``, served on 127.0.0.1 for the block (``index.url`` is its simple
    API); with ``auth`` (user, password) every page and file asks for them (HTTP basic)."""
    index = Index(root)
    with serving(_handler(index, auth)) as host:
        index.url = f"http://{host}/simple"
        yield index


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (an index this machine cannot reach)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
