"""A small threaded reverse proxy in front of a real registry, for what cannot run here.

It passes requests through (streaming bodies both ways) and counts them; per test it can

- answer a status (500, 503, 429 with ``Retry-After``...) to the first K matching requests,
  or to all of them (a registry failing forever), or to a random share of them (a flaky
  registry: ``rate``, drawn from a seeded generator so a run can be replayed);
- drop the connection after N bytes of a request body (a network cut mid-upload);
- stall a request (``stall``): hold it, its body unread, until the test releases it or
  ``seconds`` pass (a push in flight when the build is stopped);
- play a bearer-token registry: ``/token`` issues tokens for the scopes asked (checking
  basic credentials if configured; a ``POST`` is the OAuth2 refresh-token grant, checked
  against an identity token if configured) and every ``/v2/`` request must carry a token whose
  scope covers it, else 401 with a ``Bearer`` challenge. Requests presenting a token
  with too little scope are recorded as violations.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import re
import secrets
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_CHUNK = 1 << 20
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
_REPO_RE = re.compile(r"^/v2/(.+?)/(manifests|blobs|tags|referrers)(/|$)")


@dataclass
class Fault:
    """What to do to matching requests: the first ``skip`` pass, the next ``times`` (None:
    all, forever) get the fault, each with probability ``rate``."""

    action: str  # "status", "drop" (cut a request body), "cut" (cut a response body) or "stall"
    method: str | None = None
    path: str = ""  # a regex searched in the request path (with query)
    status: int = 503
    retry_after: str | None = None
    after_bytes: int = 0
    times: int | None = 1
    skip: int = 0
    rate: float = 1.0
    seed: int = 0
    hits: int = 0
    seen: int = 0
    seconds: float = 120.0  # how long a stalled request is held at most
    reached: threading.Event = field(default_factory=threading.Event, repr=False)  # a request is held
    release: threading.Event = field(default_factory=threading.Event, repr=False)
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def matches(self, method: str, path: str) -> bool:
        """Whether this request gets the fault (counts it; call with the proxy's lock held)."""
        if (self.method is not None and self.method != method) or re.search(self.path, path) is None:
            return False
        self.seen += 1
        if self.seen <= self.skip or (self.times is not None and self.hits >= self.times):
            return False
        if self.rate < 1.0 and self.rng.random() >= self.rate:
            return False
        self.hits += 1
        return True


@dataclass(frozen=True)
class Record:
    method: str
    path: str
    status: int  # 0 when the connection was dropped
    body_bytes: int
    authorization: str
    range: str = ""


@dataclass
class Bearer:
    """A fake token server plus scope enforcement."""

    username: str | None = None
    password: str | None = None
    refresh_token: str | None = None  # an identity token: the OAuth2 refresh-token grant (POST)
    service: str = "fake-registry"
    grants: dict[str, set[str]] = field(default_factory=dict)  # token -> {"repo:action"}
    token_requests: list[tuple[str | None, tuple[str, ...]]] = field(default_factory=list)  # (user, scopes)
    violations: list[str] = field(default_factory=list)


def _needed(method: str, path: str) -> set[str]:
    """The ``repo:action`` grants a registry request needs."""
    parsed = urlsplit(path)
    match = _REPO_RE.match(parsed.path)
    if match is None:
        return set()
    repo = match.group(1)
    needed = {f"{repo}:pull"} if method in ("GET", "HEAD") else {f"{repo}:pull", f"{repo}:push"}
    source = parse_qs(parsed.query).get("from")
    if method == "POST" and source:
        needed.add(f"{source[0]}:pull")
    return needed


class FaultProxy:
    """Pass-through proxy to ``upstream`` (``host:port``) with configurable faults."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.records: list[Record] = []
        self.bearer: Bearer | None = None
        self.ignore_range = False  # strip Range headers: a server that always sends the whole blob
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.records.clear()

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    return fault
        return None

    def record(self, rec: Record) -> None:
        with self._lock:
            self.records.append(rec)

    def blob_uploads(self) -> list[Record]:
        """Requests that start, carry or finish a blob upload (POST/PATCH/PUT .../blobs/uploads/)."""
        with self._lock:
            return [r for r in self.records if r.method in ("POST", "PATCH", "PUT") and "/blobs/uploads/" in r.path]

    def blob_upload_bytes(self) -> int:
        return sum(r.body_bytes for r in self.blob_uploads())

    def enable_bearer(
        self, username: str | None = None, password: str | None = None, *, refresh_token: str | None = None
    ) -> Bearer:
        self.bearer = Bearer(username, password, refresh_token)
        return self.bearer


class _Handler(BaseHTTPRequestHandler):
    """Answers as the registry behind ``proxy`` does, with the faults and the token service it adds."""

    proxy: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    # -- body helpers -------------------------------------------------------------

    def _body_chunks(self, limit: int | None = None):  # type: ignore[no-untyped-def]
        """Yield the request body in chunks (Content-Length or chunked), up to ``limit``."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        left = int(self.headers.get("Content-Length") or 0)
        if limit is not None:
            left = min(left, limit)
        while left > 0:
            data = self.rfile.read(min(_CHUNK, left))
            if not data:
                return
            left -= len(data)
            yield data

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # -- behaviours ---------------------------------------------------------------

    def _drop(self, after: int) -> None:
        received = sum(len(c) for c in self._body_chunks(after))
        self.proxy.record(Record(self.command, self.path, 0, received, self.headers.get("Authorization", "")))
        self._abort()

    def _abort(self) -> None:
        # RST, not FIN: the client sees the transfer cut, as on a broken network.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _token(self) -> None:
        bearer = self.proxy.bearer
        assert bearer is not None
        query = parse_qs(urlsplit(self.path).query)
        scopes = tuple(query.get("scope", []))
        user = None
        auth = self.headers.get("Authorization", "")
        if self.command == "POST":
            # OAuth2 (as Docker sends an identity token): a form with the refresh token.
            form = parse_qs(b"".join(self._body_chunks()).decode())
            scopes = tuple(" ".join(form.get("scope", [])).split())
            grant, refresh = form.get("grant_type", [""])[0], form.get("refresh_token", [""])[0]
            if grant != "refresh_token" or bearer.refresh_token is None or refresh != bearer.refresh_token:
                self._reply(401, b'{"details":"bad refresh token"}', {"Content-Type": "application/json"})
                return
            user = "<token>"
        elif auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if (user, password) != (bearer.username, bearer.password):
                self._reply(401, b'{"details":"bad credentials"}', {"Content-Type": "application/json"})
                return
        elif bearer.username is not None:
            self._reply(401, b'{"details":"credentials required"}', {"Content-Type": "application/json"})
            return
        bearer.token_requests.append((user, scopes))
        granted: set[str] = set()
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            repo, _, actions = rest.rpartition(":")
            if kind == "repository":
                granted.update(f"{repo}:{a}" for a in actions.split(","))
        token = secrets.token_hex(16)
        bearer.grants[token] = granted
        key = "access_token" if self.command == "POST" else "token"  # OAuth2 answers access_token
        body = json.dumps({key: token, "expires_in": 300}).encode()
        self._reply(200, body, {"Content-Type": "application/json"})

    def _check_bearer(self) -> bool:
        """True when the request may go on; else a 401 challenge was sent."""
        bearer = self.proxy.bearer
        assert bearer is not None
        needed = _needed(self.command, self.path)
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        grants = bearer.grants.get(token)
        if grants is not None and needed <= grants:
            return True
        if grants is not None:
            bearer.violations.append(f"{self.command} {self.path}: token has {sorted(grants)}, needs {sorted(needed)}")
        for _ in self._body_chunks():
            pass
        realm = f"http://{self.headers.get('Host', self.proxy.host)}/token"
        challenge = f'Bearer realm="{realm}",service="{bearer.service}"'
        repos: dict[str, set[str]] = {}
        for grant in needed:
            repo, _, action = grant.rpartition(":")
            repos.setdefault(repo, set()).add(action)
        if repos:
            challenge += ',scope="' + " ".join(f"repository:{r}:{','.join(sorted(a))}" for r, a in repos.items())
            challenge += '"'
        body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
        self.proxy.record(Record(self.command, self.path, 401, 0, auth))
        self._reply(401, body, {"WWW-Authenticate": challenge, "Content-Type": "application/json"})
        return False

    def _handle(self) -> None:
        if self.proxy.bearer is not None and self.path.startswith("/token"):
            self._token()
            return
        if self.proxy.bearer is not None and self.path.startswith("/v2") and not self._check_bearer():
            return
        fault = self.proxy.take_fault(self.command, self.path)
        if fault is not None and fault.action == "drop":
            self._drop(fault.after_bytes)
            return
        if fault is not None and fault.action == "stall":
            self.proxy.record(Record(self.command, self.path, 0, 0, self.headers.get("Authorization", "")))
            fault.reached.set()
            fault.release.wait(fault.seconds)
            self._abort()
            return
        if fault is not None and fault.action == "status":
            received = sum(len(c) for c in self._body_chunks())
            headers = {"Content-Type": "application/json"}
            if fault.retry_after is not None:
                headers["Retry-After"] = fault.retry_after
            body = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "injected fault"}]}).encode()
            # Recorded before answering: a test may look as soon as its client has the answer.
            self.proxy.record(Record(self.command, self.path, fault.status, received, ""))
            self._reply(fault.status, body, headers)
            return
        self._forward(cut_after=fault.after_bytes if fault is not None else None)

    def _forward(self, cut_after: int | None = None) -> None:
        upstream = http.client.HTTPConnection(self.proxy.upstream, timeout=120)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
            body = b"".join(self._body_chunks()) if chunked else None
            for k, v in self.headers.items():
                if k.lower() in _HOP_BY_HOP or (k.lower() == "authorization" and self.proxy.bearer is not None):
                    continue
                if body is not None and k.lower() == "content-length":
                    continue
                if self.proxy.ignore_range and k.lower() == "range":
                    continue
                upstream.putheader(k, v)
            if body is not None:
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders()
            sent = 0
            for chunk in [body] if body is not None else self._body_chunks():
                upstream.send(chunk)
                sent += len(chunk)
            self._relay(upstream.getresponse(), sent, cut_after)
        finally:
            upstream.close()

    def _relay(self, response: http.client.HTTPResponse, sent: int, cut_after: int | None) -> None:
        """The upstream's answer, recorded and passed on (``cut_after``: its body cut short)."""
        data = None if response.getheader("Content-Length") is not None else response.read()
        auth = self.headers.get("Authorization", "")
        self.proxy.record(Record(self.command, self.path, response.status, sent, auth, self.headers.get("Range", "")))
        self.send_response(response.status, response.reason)
        for k, v in response.getheaders():
            if k.lower() not in _HOP_BY_HOP and not (data is not None and k.lower() == "content-length"):
                self.send_header(k, v)
        if data is not None:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data is not None:
            self.wfile.write(data)
        elif self.command != "HEAD":
            relayed = 0
            while chunk := response.read(_CHUNK):
                if cut_after is not None and relayed + len(chunk) > cut_after:
                    self.wfile.write(chunk[: cut_after - relayed])
                    self.wfile.flush()
                    # FIN, not RST: the client gets every byte sent, then a short body.
                    self.connection.shutdown(socket.SHUT_WR)
                    self.close_connection = True
                    return
                self.wfile.write(chunk)
                relayed += len(chunk)


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"proxy": proxy})
