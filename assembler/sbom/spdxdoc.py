"""The pieces an SPDX 2.3 document is put together from.

Stable IDs derived from what they name, package entries with SPDX's NOASSERTION defaults,
package URLs, sha256 checksums, suppliers as SPDX writes people, and :class:`Doc`, the
document's packages and relationships by ID as :mod:`assembler.sbom.spdx` adds them.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import quote

from assembler.oci.digest import canonical_json, digest_hex
from assembler.oci.mutate import timestamp
from assembler.sbom.facts import BuildFacts
from assembler.sbom.packages import Inventory

NOASSERTION = "NOASSERTION"
NAMESPACE = "https://assemble.invalid/spdx"  # .invalid: a name, never fetched
_ID_CHARS = re.compile(r"[^A-Za-z0-9.-]+")
# What SPDX tools accept as a download location or homepage (a host with a dotted name).
_URL = re.compile(
    r"^(git\+)?(https?|ssh|git|ftp|sftp)://([\w.~-]+@)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,5}"
    r"(:[0-9]{1,5})?(/\S*)?$"
)
_PERSON = re.compile(r"^([^<>()]+?)\s*<([^<>()\s]+)>$")
Json = dict[str, Any]


def spdx_id(kind: str, *parts: str) -> str:
    """A stable SPDX ID: readable, and unique through a digest of what it names."""
    tag = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]
    return f"SPDXRef-{kind}-{_ID_CHARS.sub('-', parts[0]).strip('-')[:60]}-{tag}"


def url_or_none(text: str) -> str | None:
    """``text`` where SPDX tools take it as a location (a URL with a dotted host), else None."""
    return text if _URL.match(text) else None


def package(spdxid: str, name: str, version: str, **more: Any) -> Json:
    """A package entry: NOASSERTION where ``more`` says nothing; empty values are left out."""
    pkg: Json = {
        "SPDXID": spdxid,
        "name": name,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "supplier": NOASSERTION,
    }
    if version:
        pkg["versionInfo"] = version
    pkg.update({k: v for k, v in more.items() if v not in (None, "", [])})
    return pkg


def package_url(kind: str, namespace: str, name: str, version: str, qualifiers: dict[str, str]) -> Json:
    """An external reference to the package URL ``pkg:KIND/NAMESPACE/NAME@VERSION?QUALIFIERS``."""
    ns = f"{quote(namespace, safe='')}/" if namespace else ""
    quals = "&".join(f"{k}={quote(v, safe='')}" for k, v in sorted(qualifiers.items()) if v)
    locator = f"pkg:{kind}/{ns}{quote(name, safe='')}@{quote(version, safe='')}" + (f"?{quals}" if quals else "")
    return {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": locator}


def sha256_checksums(digest: str) -> list[Json]:
    """The checksums of an entry whose sha256 is ``digest`` (``sha256:HEX``)."""
    return [{"algorithm": "SHA256", "checksumValue": digest_hex(digest)}]


def person(text: str) -> str | None:
    """A supplier as SPDX writes a person (``Person: NAME (EMAIL)``), from ``Name <email>``; None for nothing usable."""
    match = _PERSON.match(text.strip())
    if match:
        return f"Person: {match.group(1)} ({match.group(2)})"
    name = text.replace("(", " ").replace(")", " ").strip()
    return f"Person: {name}" if name and "<" not in name else None


class Doc:
    """The document as it is put together: packages and relationships by ID."""

    def __init__(self, facts: BuildFacts, inventory: Inventory) -> None:
        self.facts = facts
        self.inventory = inventory
        self.packages: dict[str, Json] = {}
        self.license_refs: dict[str, str] = {}  # LicenseRef id -> the text it stands for
        self.relationships: set[tuple[str, str, str]] = set()
        self.annotator = f"Tool: assemble-{facts.tool or 'unknown'}"
        self.created = timestamp(facts.epoch)

    def relate(self, a: str, kind: str, b: str) -> None:
        self.relationships.add((a, kind, b))

    def add(self, pkg: Json) -> str:
        self.packages[pkg["SPDXID"]] = pkg
        return str(pkg["SPDXID"])

    def annotate(self, pkg: Json, fields: Json) -> None:
        pkg["annotations"] = [
            {
                "annotationDate": self.created,
                "annotationType": "OTHER",
                "annotator": self.annotator,
                "comment": canonical_json(fields).decode(),
            }
        ]
