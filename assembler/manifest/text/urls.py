"""URLs as they are written down: never with their secrets.

A URL a manifest or a requirements file gives may carry a credential: a user name and
password (``https://USER:TOKEN@host/simple``, pip's ``${VAR}`` form expanded), or a signed
query string (``?X-Amz-Signature=...``, an Azure SAS's ``sig=``, a ``token=``). The tool
needs it to fetch, so it stays where the fetch is made: in memory for the request, in the
environment of the program that fetches (uv), in netrc or the program's own auth file.
Everything that records a URL records :func:`redacted` of it: the lock (a set's indexes
and requirements, a git source's key), a ``pylock.toml``'s file URLs, the weights lock and
the model's pushed config, the SBOM and the provenance, the labels, and the messages.

The rule, one for every record: the userinfo goes (a bare user name of an ``ssh://`` URL
stays: it is a login, its key is elsewhere; a ``docker://`` or ``hf://`` reference has
none), and the query string goes whole when any parameter's name is a credential's
(:data:`_SECRET_PARAMS`): a presigned URL's other parameters mean nothing without its
signature, and a name that only looks like one (``author=``) costs the record its query,
never leaks a secret into it. Nothing else changes: a URL without either comes back as the
same string, so a lock written before keeps its keys.

What the redacted URL still says is enough to fetch again where the credential comes back
from outside the record: :func:`with_credentials` gives a recorded URL (a lock's index, a
file on an index's host) the credentials of the URL the manifest names for that host now,
as pip applies an index's credentials to the files it serves; requests and uv read netrc
themselves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

# A parameter's name (lowercase, ``-`` as ``_``) is a credential's when it starts with
# AWS's or Google's signing prefix, is one of an Azure SAS's fields, or names a signature,
# a token, a key, a password, a secret, auth or a policy (CloudFront's signed URLs).
_SECRET_PARAMS = re.compile(
    r"^(x_amz_|x_goog_)|^(sv|ss|srt|sp|se|st|spr|sr|si|sdd|skoid|sktid|skt|ske|sks|skv|saoid|suoid|scid)$"
    r"|sig|token|key|pass|secret|auth|credential|policy"
)
# A URL inside a text: a scheme, ``://``, then up to a space, a quote or an angle bracket.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_SSH = ("ssh", "git+ssh", "svn+ssh")
# The schemes (after a VCS's ``git+``) whose URLs are read here: others are no such URL
# (``docker://ubuntu@sha256:...``, ``hf://REPO@REVISION``: their ``@`` is no userinfo's).
_SCHEMES = frozenset({"http", "https", "ftp", "ftps", "sftp", "ssh", "git", "svn", "hg", "bzr", "s3", "gs"})


def _parts(url: str) -> tuple[str, str, str, str, str] | None:
    """(scheme, userinfo, host[:port], path, rest: ``?query#fragment``) by string cuts
    (never re-joined by urllib, which would change a URL's spelling); None for no URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower().rpartition("+")[2] not in _SCHEMES:
        return None
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    cut = min((i for i in (tail.find(c) for c in "?#") if i >= 0), default=len(tail))
    return scheme, userinfo if at else "", host, tail[:cut], tail[cut:]


def _secret_query(query: str) -> bool:
    names = (unquote(p.partition("=")[0]).strip().lower().replace("-", "_") for p in re.split(r"[&;]", query))
    return any(_SECRET_PARAMS.search(name) for name in names if name)


def redacted(url: str) -> str:
    """``url`` as it is recorded: without its userinfo, and without its query string when a
    parameter of it is a credential's (the module's rule); the same string when it has neither."""
    parts = _parts(url)
    if parts is None:
        return url
    scheme, userinfo, host, path, rest = parts
    keep_user = scheme.lower() in _SSH and userinfo and ":" not in userinfo
    query, hashmark, fragment = rest.partition("#")
    if query.startswith("?") and _secret_query(query[1:]):
        query = ""
    elif not userinfo or keep_user:
        return url
    login = f"{userinfo}@" if keep_user else ""
    return f"{scheme}://{login}{host}{path}{query}{hashmark}{fragment}"


def scrubbed(text: str) -> str:
    """``text`` (a message, a requirement, another program's output) with every URL in it
    :func:`redacted`."""

    def one(found: re.Match[str]) -> str:
        url = found.group(0)
        core = url.rstrip(".,;:!?)]}")  # the sentence's punctuation after it is no part of it
        return redacted(core) + url[len(core) :]

    return _URL_IN_TEXT.sub(one, text)


def _origin(url: str) -> tuple[str, str] | None:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "", parts.port)
    except ValueError:  # a port that is no number
        return None
    return (parts.scheme.lower(), f"{host[0]}:{host[1] or ''}") if host[0] else None


def with_credentials(url: str, known: Iterable[str]) -> str:
    """``url`` (recorded, or a file an index lists) as it is fetched: the one of ``known``
    (the URLs the manifest names now, credentials and all) that it is the record of, else,
    when it has no userinfo, with the userinfo of the first of ``known`` on its scheme, host
    and port (pip's rule: an index's credentials go to the files on its host, never elsewhere).
    ``url`` itself where none fits (netrc, read by requests and uv, may still answer)."""
    urls = list(known)
    for candidate in urls:
        if candidate != url and redacted(candidate) == url:
            return candidate
    parts = _parts(url)
    if parts is None or parts[1]:
        return url
    origin = _origin(url)
    for candidate in urls:
        given = _parts(candidate)
        if given is not None and given[1] and origin is not None and _origin(candidate) == origin:
            scheme, _, host, path, rest = parts
            return f"{scheme}://{given[1]}@{host}{path}{rest}"
    return url
