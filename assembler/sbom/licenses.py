"""Licenses as the packages declare them, and as SPDX expressions.

Where a package's license comes from:

- Debian: ``/usr/share/doc/<package>/copyright`` when it is machine-readable (DEP-5,
  ``Format: .../copyright-format/1.0/``): the first line of the ``License:`` field of its
  ``Files: *`` paragraph (:func:`dep5_license`); any other copyright file declares nothing;
- Python: ``License-Expression`` (PEP 639), else its ``License ::`` classifiers when each
  names one license exactly (``Apache Software License`` and ``BSD License`` name no
  version: with one of those the classifiers say nothing), else a ``License:`` field that is an SPDX expression
  (:func:`python_license`);
- apk's ``L:`` and rpm's LICENSE tag, as written.

:func:`spdx_license` turns that text into what an SPDX document accepts: an expression of
the SPDX license ids this module knows (Debian's short names mapped: ``GPL-2+`` is
``GPL-2.0-or-later``, ``Expat`` is ``MIT``), or else ``LicenseRef-<text>`` with the
original text as its extracted licensing info. The ids are a fixed list of the common ones
(checked against the SPDX list by the tests): a real SPDX id missing from it becomes a
LicenseRef, never an invalid expression.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import BinaryIO

NOASSERTION = "NOASSERTION"
_IDS = """0BSD AFL-3.0 AGPL-3.0-only AGPL-3.0-or-later Apache-1.1 Apache-2.0 APSL-2.0 Artistic-1.0 Artistic-1.0-Perl
Artistic-2.0 Beerware BlueOak-1.0.0 BSD-1-Clause BSD-2-Clause BSD-2-Clause-Patent BSD-3-Clause BSD-3-Clause-Clear
BSD-4-Clause BSL-1.0 bzip2-1.0.6 CC-BY-3.0 CC-BY-4.0 CC-BY-SA-3.0 CC-BY-SA-4.0 CC0-1.0 CDDL-1.0 CDDL-1.1 curl
ECL-2.0 EPL-1.0 EPL-2.0 EUPL-1.2 FSFAP FSFUL FSFULLR FTL GFDL-1.2-only GFDL-1.2-or-later GFDL-1.3-only
GFDL-1.3-or-later GPL-1.0-only GPL-1.0-or-later GPL-2.0-only GPL-2.0-or-later GPL-3.0-only GPL-3.0-or-later HPND
ICU IJG Info-ZIP ISC LGPL-2.0-only LGPL-2.0-or-later LGPL-2.1-only LGPL-2.1-or-later LGPL-3.0-only
LGPL-3.0-or-later Libpng libtiff LPPL-1.3c MIT MIT-0 MPL-1.1 MPL-2.0 MS-PL NCSA OFL-1.1 OpenSSL PHP-3.01
PostgreSQL PSF-2.0 Python-2.0 Ruby Sleepycat TCL Unicode-DFS-2016 Unicode-3.0 Unlicense UPL-1.0 Vim W3C WTFPL X11
Zlib ZPL-2.1""".split()  # noqa: SIM905 (a list of words, read as one)
_EXCEPTIONS = """Autoconf-exception-2.0 Autoconf-exception-3.0 Bison-exception-2.2 Classpath-exception-2.0
Font-exception-2.0 GCC-exception-2.0 GCC-exception-3.1 LLVM-exception Linux-syscall-note
OpenJDK-assembly-exception-1.0""".split()  # noqa: SIM905
_KNOWN = {i.lower(): i for i in _IDS}
_KNOWN_EXCEPTIONS = {i.lower(): i for i in _EXCEPTIONS}
_DEBIAN = {
    "expat": "MIT",
    "zlib": "Zlib",
    "psf-2": "PSF-2.0",
    "cc0": "CC0-1.0",
    "apache-2": "Apache-2.0",
    "public-domain": "LicenseRef-public-domain",
    "bsd-2": "BSD-2-Clause",
    "bsd-3": "BSD-3-Clause",
    "mpl-2": "MPL-2.0",
    "artistic-2": "Artistic-2.0",
    "boost-1.0": "BSL-1.0",
    "ofl-1.1": "OFL-1.1",
}
# Debian names GPL-2, GPL-2+, LGPL-2.1+, GFDL-1.3 ...: the version's "only" or "or-later" SPDX id.
_DEBIAN_GNU = re.compile(r"^(a?gpl|lgpl|gfdl)-([0-9])(\.[0-9])?(\+?)$", re.IGNORECASE)
_SPDX_GNU = re.compile(r"^((?:a?gpl|lgpl|gfdl)-[0-9]\.[0-9])(\+?)$", re.IGNORECASE)
_CLASSIFIERS = {
    "MIT License": "MIT",
    "ISC License (ISCL)": "ISC",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "GNU General Public License v2 (GPLv2)": "GPL-2.0-only",
    "GNU General Public License v2 or later (GPLv2+)": "GPL-2.0-or-later",
    "GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
    "GNU General Public License v3 or later (GPLv3+)": "GPL-3.0-or-later",
    "GNU Lesser General Public License v2 (LGPLv2)": "LGPL-2.0-only",
    "GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.0-or-later",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
    "GNU Lesser General Public License v3 or later (LGPLv3+)": "LGPL-3.0-or-later",
    "GNU Affero General Public License v3": "AGPL-3.0-only",
    "GNU Affero General Public License v3 or later (AGPLv3+)": "AGPL-3.0-or-later",
    "Python Software Foundation License": "PSF-2.0",
    "The Unlicense (Unlicense)": "Unlicense",
    "zlib/libpng License": "Zlib",
    "Boost Software License 1.0 (BSL-1.0)": "BSL-1.0",
    "Eclipse Public License 2.0 (EPL-2.0)": "EPL-2.0",
    "Universal Permissive License (UPL)": "UPL-1.0",
    "CC0 1.0 Universal (CC0 1.0) Public Domain Dedication": "CC0-1.0",
}
# Classifiers that group licenses and name none (License :: OSI Approved :: MIT License names MIT).
_UMBRELLAS = {"OSI Approved", "DFSG approved"}
_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_REF_CHARS = re.compile(r"[^A-Za-z0-9.]+")
_DEP5_FORMAT = "copyright-format/1.0"
_COPYRIGHT_LIMIT = 1 << 20  # a copyright file is read up to its Files: * paragraph, at most this


def _term(word: str, *, debian: bool) -> str | None:
    """A license id as SPDX writes it, or None."""
    low = word.lower()
    if low in _KNOWN:
        return _KNOWN[low]
    if low.startswith("licenseref-") and len(word) > 11 and not _REF_CHARS.search(word[11:].replace("-", "")):
        return word
    gnu = _SPDX_GNU.match(word)  # SPDX's deprecated GPL-2.0 and GPL-2.0+ (and LGPL, AGPL, GFDL)
    if gnu:
        return _KNOWN.get(f"{gnu.group(1).lower()}-{'or-later' if gnu.group(2) else 'only'}")
    if word.endswith("+") and low[:-1] in _KNOWN:
        return _KNOWN[low[:-1]] + "+"
    if not debian:
        return None
    gnu = _DEBIAN_GNU.match(word)
    if gnu:
        family, major, minor, later = gnu.groups()
        return _KNOWN.get(f"{family.lower()}-{major}{minor or '.0'}-{'or-later' if later else 'only'}")
    return _DEBIAN.get(low)


def _expression(text: str, *, debian: bool) -> str | None:
    """``text`` as a valid SPDX expression of known ids, or None."""
    out: list[str] = []
    depth, expect_term = 0, True
    tokens = _TOKEN.findall(text)
    i = 0
    while i < len(tokens):
        token, upper = tokens[i], tokens[i].upper()
        if token == "(" and expect_term:
            depth += 1
            out.append(token)
        elif token == ")" and not expect_term and depth > 0:
            depth -= 1
            out.append(token)
        elif upper in ("AND", "OR") and not expect_term:
            out.append(upper)
            expect_term = True
        elif upper == "WITH" and not expect_term and i + 1 < len(tokens):
            exception = _KNOWN_EXCEPTIONS.get(tokens[i + 1].lower())
            if exception is None:
                return None
            out += ["WITH", exception]
            i += 1
        elif expect_term and (term := _term(token, debian=debian)) is not None:
            out.append(term)
            expect_term = False
        else:
            return None
        i += 1
    if not out or expect_term or depth:
        return None
    return " ".join(out).replace("( ", "(").replace(" )", ")")


def license_ref(text: str) -> str:
    """The LicenseRef id that stands for ``text`` (letters, digits, '.' and '-'); where
    those change the text, a digest of it keeps two texts apart."""
    name = _REF_CHARS.sub("-", text).strip("-")[:64]
    if name == text:
        return f"LicenseRef-{name}"
    return f"LicenseRef-{name + '-' if name else ''}{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def spdx_license(text: str, *, debian: bool = False) -> tuple[str, dict[str, str]]:
    """What an SPDX document declares for a package's license ``text``, and the texts of
    the LicenseRefs it uses (id -> original text). ``debian``: map Debian's short names."""
    text = " ".join(text.split())
    if not text:
        return NOASSERTION, {}
    found = _expression(text, debian=debian)
    if found is None:
        ref = license_ref(text)
        return ref, {ref: text}
    refs = {t: t.removeprefix("LicenseRef-") for t in _TOKEN.findall(found) if t.startswith("LicenseRef-")}
    return found, refs


def python_license(expression: str, classifiers: Iterable[str], field: str) -> str:
    """A Python distribution's declared license (PEP 639's order); "" when it names none."""
    if expression.strip():
        return " ".join(expression.split())
    named = {c.rpartition("::")[2].strip() for c in classifiers if c.startswith("License ::")} - _UMBRELLAS
    if named and named <= _CLASSIFIERS.keys():  # one unmapped (BSD License, Public Domain): the list is not whole
        return " AND ".join(sorted({_CLASSIFIERS[n] for n in named}))  # which apply is not said; all are listed
    short = " ".join(field.split())
    return short if len(short) <= 100 and _expression(short, debian=False) is not None else ""


def _lines(data: BinaryIO) -> Iterator[str]:
    """The lines of ``data`` (only ``read`` is needed), up to _COPYRIGHT_LIMIT bytes."""
    rest, read = b"", 0
    while read < _COPYRIGHT_LIMIT:
        chunk = data.read(min(1 << 16, _COPYRIGHT_LIMIT - read))
        if not chunk:
            break
        read += len(chunk)
        *lines, rest = (rest + chunk).split(b"\n")
        yield from (line.decode("utf-8", "replace").rstrip("\r") for line in lines)
    if rest:
        yield rest.decode("utf-8", "replace").rstrip("\r")


def deb822_paragraphs(lines: Iterable[str], *, lower_keys: bool = False) -> Iterator[dict[str, str]]:
    """deb822 paragraphs (dpkg's status, DEP-5 copyright files): the first line of each
    field; continuation lines are dropped."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            if fields:
                yield fields
            fields = {}
        elif not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            fields[(key.strip().lower() if lower_keys else key.strip())] = value.strip()
    if fields:
        yield fields


def _paragraphs(data: BinaryIO) -> Iterator[dict[str, str]]:
    """The paragraphs of ``data`` (keys lower-cased), read up to _COPYRIGHT_LIMIT bytes."""
    return deb822_paragraphs(_lines(data), lower_keys=True)


def dep5_license(data: BinaryIO) -> str:
    """The first line of the ``License:`` of the ``Files: *`` paragraph of a machine-readable
    (DEP-5) Debian copyright file; "" when it is not one or has no such paragraph."""
    paragraphs = _paragraphs(data)
    header = next(paragraphs, {})
    if _DEP5_FORMAT not in header.get("format", ""):
        return ""
    return next((p.get("license", "") for p in paragraphs if p.get("files") == "*"), "")


def extracted_infos(refs: Mapping[str, str]) -> list[dict[str, str]]:
    """``hasExtractedLicensingInfos`` entries for LicenseRef ids (id -> original text)."""
    return [{"licenseId": ref, "extractedText": text, "name": text[:80]} for ref, text in sorted(refs.items())]
