"""What a lock pins besides Python sets: a base's tag to the digest it names now, a git
source's branch or tag to its commit (for ``assemble lock``). Hosts this machine cannot
reach are found first (a registry or git server that is not there answers in seconds, not
after minutes of retries): the pin is then *unresolved*, with the host and why."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from urllib.parse import urlsplit

from assembler.errors import AssemblerError
from assembler.manifest.text.urls import redacted, scrubbed
from assembler.oci.descriptor import Platform
from assembler.oci.digest import sha256_digest
from assembler.oci.mediatypes import INDEX_TYPES
from assembler.oci.reference import parse_ref
from assembler.proc import Runner
from assembler.registry.types import RegistryOptions

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def base_digest(text: str, *, options: RegistryOptions, platform: str | None = None) -> tuple[str | None, str | None]:
    """(the digest a ``docker://`` base's tag names now, or why there is none): of the
    ``platform``'s manifest where the tag names an index, so each platform's pin is its own."""
    ref = parse_ref(text)
    if ref.name is None:
        return None, f"{text}: not a registry reference"
    if ref.name.digest:
        return ref.name.digest, None
    # The registry client and requests only when a tag is looked up (a build imports this).
    from assembler.fetch.pinned import unreachable
    from assembler.registry.http import api_host

    host = api_host(ref.name.registry)
    why = unreachable(f"{'https' if options.tls_verify else 'http'}://{host}/v2/")
    if why is not None:
        return None, f"registry {host} cannot be reached from here ({why})"
    from assembler.registry.client import Registry

    quick = replace(options, retries=min(options.retries, 3), timeout=min(options.timeout, 30.0))
    try:
        with Registry(ref.name.registry, options=quick) as registry:
            body, media_type = registry.fetch_manifest(ref.name.repository, ref.name.tag)
    except AssemblerError as e:
        return None, scrubbed(str(e).splitlines()[0])[:300]
    if platform is None or media_type not in INDEX_TYPES:
        return sha256_digest(body), None
    return _platform_digest(body, platform, text)


def _platform_digest(body: bytes, platform: str, text: str) -> tuple[str | None, str | None]:
    """The digest of ``platform``'s manifest in an index's ``body``."""
    wanted = Platform.parse(platform)
    try:
        entries = json.loads(body)["manifests"]
        for entry in entries:
            if "platform" in entry and Platform.from_json(entry["platform"]).matches(wanted):
                return str(entry["digest"]), None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        return None, f"{text}: not an image index: {e!r}"
    return None, f"{text}: the index has no manifest for {platform}"


def git_commit(url: str, ref: str, *, runner: Runner) -> tuple[str | None, str | None]:
    """(the commit a git source's ref names now, or why there is none: naming the URL
    without its credentials). A commit is itself."""
    if _COMMIT.match(ref):
        return ref, None
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        from assembler.fetch.pinned import unreachable

        why = unreachable(f"{parts.scheme}://{parts.netloc}/")
        if why is not None:
            return None, f"{urlsplit(redacted(url)).netloc} cannot be reached from here ({why})"
    try:
        out = runner.run(
            ["git", "ls-remote", url, ref, f"{ref}^{{}}"], env={"GIT_TERMINAL_PROMPT": "0"}, timeout=60
        ).stdout
    except AssemblerError as e:
        return None, scrubbed(str(e).splitlines()[0])[:300]
    lines = [line.split("\t") for line in out.splitlines() if "\t" in line]
    peeled = [sha for sha, name in lines if name.endswith("^{}")]
    found = peeled or [sha for sha, _ in lines]
    if not found:
        return None, f"{redacted(url)} has no branch or tag {ref!r}"
    return found[0], None
