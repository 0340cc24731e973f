"""A Hugging Face repository's files at a commit, through the Hub's HTTP API (as
``huggingface_hub`` calls it): ``/api/models/REPO/revision/REV`` names the commit a branch
or tag stands for, ``/api/models/REPO/tree/COMMIT?recursive=true`` lists the files (pages
linked by ``Link: <...>; rel="next"``; a file in LFS with its content's sha256 as
``lfs.oid``), ``/REPO/resolve/COMMIT/PATH`` serves one. ``HF_ENDPOINT`` names the server
(``https://huggingface.co``), ``HF_TOKEN`` (or ``HUGGING_FACE_HUB_TOKEN``) is sent as a
bearer token. Every answer is bounded and checked before it is used."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin

from assembler.errors import InputError, NotFound
from assembler.weights.files import plain_path

DEFAULT_ENDPOINT = "https://huggingface.co"
MAX_ANSWER = 16 << 20  # one API answer (a page of a tree listing is far less)
MAX_PAGES = 1000
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


@dataclass(frozen=True)
class HubFile:
    """A file of a repository: its content's sha256 when the Hub knows it (LFS), else None."""

    path: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class Hub:
    """The Hub at ``endpoint``, asked with ``token`` (None: anonymously)."""

    endpoint: str = DEFAULT_ENDPOINT
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Hub:
        env = os.environ if env is None else env
        token = env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN") or None
        return cls((env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"), token)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _json(self, url: str, what: str) -> tuple[Mapping[str, str], object]:
        from assembler.fetch.pinned import fetch_answer  # requests: only when the Hub is asked

        try:
            headers, body = fetch_answer(
                url, headers={**self.headers, "Accept": "application/json"}, what=what, max_bytes=MAX_ANSWER
            )
        except NotFound as e:
            if "HTTP 401" in e.message or "HTTP 403" in e.message or "404" in e.message:
                who = "with HF_TOKEN's token" if self.token else "anonymously (no HF_TOKEN)"
                raise InputError(
                    f"{e.message} (asked {who})",
                    hint="check the repository and revision; a gated or private one needs HF_TOKEN set to a token "
                    "that may read it",
                ) from None
            raise
        try:
            return headers, json.loads(body)
        except ValueError as e:
            raise InputError(f"{what}: {url} answered with what is not JSON: {e}") from None

    def commit(self, repo: str, revision: str, *, what: str) -> str:
        """The commit ``revision`` (a branch, tag or commit) of model ``repo`` stands for."""
        url = f"{self.endpoint}/api/models/{repo}/revision/{quote(revision, safe='')}"
        _, answer = self._json(url, what)
        sha = answer.get("sha") if isinstance(answer, dict) else None
        if not isinstance(sha, str) or _COMMIT.match(sha) is None:
            raise InputError(f"{what}: {url} names no commit (its 'sha' is {sha!r})")
        return sha

    def files(self, repo: str, commit: str, *, what: str) -> list[HubFile]:
        """Every file of ``repo`` at ``commit``, sorted by path."""
        url: str | None = f"{self.endpoint}/api/models/{repo}/tree/{commit}?recursive=true"
        found: dict[str, HubFile] = {}
        for _ in range(MAX_PAGES):
            if url is None:
                return [found[p] for p in sorted(found)]
            headers, answer = self._json(url, what)
            if not isinstance(answer, list):
                raise InputError(f"{what}: {url} is not a list of files")
            for entry in answer:
                file = _file(entry, url, what)
                if file is not None:
                    found[file.path] = file
            url = _next_page(url, headers)
            if url is not None and not url.startswith(self.endpoint + "/"):  # the token goes nowhere else
                raise InputError(f"{what}: the Hub's next page of {repo} is on another server: {url}")
        raise InputError(f"{what}: the listing of {repo} has more than {MAX_PAGES} pages")

    def file_url(self, repo: str, commit: str, path: str) -> str:
        return f"{self.endpoint}/{repo}/resolve/{commit}/{quote(path)}"


def _file(entry: object, url: str, what: str) -> HubFile | None:
    """A listed file (None for a folder), its fields checked."""
    if not isinstance(entry, dict) or entry.get("type") not in ("file", "directory"):
        raise InputError(f"{what}: {url} lists an entry that is neither a file nor a folder: {str(entry)[:200]}")
    if entry["type"] != "file":
        return None
    path, size, lfs = entry.get("path"), entry.get("size"), entry.get("lfs")
    if not isinstance(path, str) or plain_path(path) is None:
        raise InputError(f"{what}: {url} lists a file named {path!r}, not a plain relative path")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InputError(f"{what}: {url} lists {path} with the size {size!r}")
    sha256 = None
    if isinstance(lfs, dict):
        oid = lfs.get("oid") or lfs.get("sha256")
        if not isinstance(oid, str) or _SHA256.match(oid) is None:
            raise InputError(f"{what}: {url} lists {path} in LFS with the sha256 {oid!r}")
        sha256 = oid
    return HubFile(path, size, sha256)


def _next_page(url: str, headers: Mapping[str, str]) -> str | None:
    link = next((v for k, v in headers.items() if k.lower() == "link"), "")
    found = _NEXT.search(link)
    return urljoin(url, found[1]) if found else None
