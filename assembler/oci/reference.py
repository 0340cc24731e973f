"""References: registry image names and the containers-transports syntax skopeo users know.

``docker://HOST/REPO:TAG``, ``docker://HOST/REPO@sha256:...``, ``oci:DIR[:TAG]``,
``oci-archive:FILE[:TAG]``, ``docker-archive:FILE[:REF]``, ``rootfs:FILE.tar[.gz|.zst]``,
``sif:FILE``, ``sqsh:FILE`` (an Enroot image), ``oras://HOST/REPO:TAG`` (a SIF file as an
OCI artifact) and ``scratch``.
As in containers/image, the path ends at the first ``:``. How each transport's references
are written is its :class:`Syntax`, data this module parses by; a format added from outside
the built-in ones brings its own (:func:`register_syntax`, through
:func:`assembler.transports.formats.register`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from assembler.errors import BadReference
from assembler.oci.digest import is_digest

DEFAULT_REGISTRY = "docker.io"
_REPO_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_REPO_COMPONENT}(?:/{_REPO_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")

TagRule = Literal["none", "tag", "name", "step"]
Role = Literal["image", "base", "output", "files"]


@dataclass(frozen=True)
class Syntax:
    """What a reference of one format looks like: the part of a format the pure model holds
    (its other verbs are :mod:`assembler.transports.formats`').

    ``url``: ``NAME://HOST/REPO:TAG`` (a registry name); ``bare``: the word alone
    (``scratch``); else ``NAME:PATH[:TAG]``, the path ending at the first ``:``, with
    ``tag`` saying what may follow it: nothing (``none``), a tag (``tag``), an image name
    (``name``, docker-archive's), or a step that must be named (``step``, with ``form``
    shown). ``role``: an image read and written (``image``), only read (``base``), only
    written (``output``: ``what`` it holds, as "... cannot be a base" says), or files, no
    image (``files``). ``form`` is how the error of a reference that is none shows it.
    """

    form: str
    url: bool = False
    bare: bool = False
    tag: TagRule = "tag"
    role: Role = "image"
    what: str = ""


# The syntax of every format, by transport, in the order an error lists them. The formats
# themselves (reading, writing, referrers, signatures) are above this floor; a reference is
# parsed here because manifests (assembler.manifest) are checked below them. A format from
# elsewhere brings its syntax through assembler.transports.formats.register.
_SYNTAXES: dict[str, Syntax] = {
    "docker": Syntax("docker://HOST/REPO:TAG", url=True),
    "oci": Syntax("oci:DIR[:TAG]"),
    "oci-archive": Syntax("oci-archive:FILE[:TAG]"),
    "docker-archive": Syntax("docker-archive:FILE[:REF]", tag="name"),
    "rootfs": Syntax("rootfs:FILE.tar", tag="none", role="base"),
    "sif": Syntax("sif:FILE", tag="none", role="output", what="a SIF file"),
    "sqsh": Syntax("sqsh:FILE (Enroot)", tag="none", role="output", what="an Enroot squashfs"),
    "oras": Syntax("oras://HOST/REPO:TAG (a SIF)", url=True, role="output", what="a SIF file"),
    # a step's artifacts as files (pipeline.runs.artifacts), not an image
    "artifact": Syntax("artifact:DIR:STEP[.ARTIFACT] (files)", tag="step", role="files"),
    "scratch": Syntax("scratch", bare=True, role="base"),
}


def register_syntax(transport: str, syntax: Syntax) -> None:
    """Make ``transport`` a reference :func:`parse_ref` accepts, written as ``syntax`` says
    (a format registered from outside the built-in table); ValueError for a name taken by
    another syntax, or one that is not a lowercase word."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", transport):
        raise ValueError(f"{transport!r}: a transport is a lowercase word")
    known = _SYNTAXES.get(transport)
    if known is not None and known != syntax:
        raise ValueError(f"{transport}: already a reference, written {known.form}")
    _SYNTAXES[transport] = syntax


def output_forms() -> list[str]:
    """How each reference an image or its files can be written to looks (``-o``'s help),
    in the table's order: every syntax but those only read (bases)."""
    return [syntax.form for syntax in _SYNTAXES.values() if syntax.role != "base"]


def syntax_of(transport: str) -> Syntax | None:
    """How a reference of ``transport`` is written; None for no known transport."""
    return _SYNTAXES.get(transport)


@dataclass(frozen=True)
class ImageName:
    """A registry image name: ``registry/repository`` plus a tag or a digest.

    ``short`` is the name as written when it named no registry (``ubuntu``,
    ``nvidia/cuda``): such a name is Docker Hub's, unless registries.conf resolves short
    names otherwise (:mod:`assembler.registry.conf`). It takes no part in comparisons.
    """

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""
    short: str = field(default="", compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> ImageName:
        """Parse ``[host[:port]/]repo[:tag][@digest]`` with Docker's defaults; BadReference."""
        rest = text.strip()
        digest = ""
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not is_digest(digest):
                raise BadReference(f"{text!r}: digest must be sha256:<64 hex>")
        first, _, remainder = rest.partition("/")
        qualified = bool(remainder) and ("." in first or ":" in first or first == "localhost")
        registry, path = (first, remainder) if qualified else (DEFAULT_REGISTRY, rest)
        tag = ""
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            path, tag = path.rsplit(":", 1)
            if not _TAG_RE.match(tag):
                raise BadReference(f"{text!r}: invalid tag {tag!r}")
        short = "" if qualified else path
        if registry == DEFAULT_REGISTRY and "/" not in path:
            path = "library/" + path
        if not _REPO_RE.match(path):
            raise BadReference(f"{text!r}: invalid repository name {path!r} (lowercase letters, digits, . _ - /)")
        if not tag and not digest:
            tag = "latest"
        return cls(registry, path, tag, digest, short)

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest if pinned, else the tag."""
        return self.digest or self.tag

    def with_reference(self, reference: str) -> ImageName:
        if is_digest(reference):
            return replace(self, tag="", digest=reference)
        return replace(self, tag=reference, digest="")

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


@dataclass(frozen=True)
class Ref:
    """A parsed transport reference."""

    transport: str
    path: str = ""
    tag: str = ""
    name: ImageName | None = None

    @property
    def syntax(self) -> Syntax:
        """How a reference of this transport is written (KeyError for none registered)."""
        return _SYNTAXES[self.transport]

    @property
    def base_only(self) -> bool:
        """Whether this names an image that is only read (``rootfs:``, ``scratch``), never written."""
        return self.syntax.role == "base"

    @property
    def not_a_base(self) -> str | None:
        """What this names when it holds no image a build can start from (a SIF, an Enroot
        squashfs: outputs only), else None."""
        return self.syntax.what if self.syntax.role == "output" else None

    @property
    def holds_files(self) -> bool:
        """Whether this is an ``artifact:DIR:STEP`` output: a step's artifacts as files, no image."""
        return self.syntax.role == "files"

    def __str__(self) -> str:
        syntax = _SYNTAXES.get(self.transport)
        if syntax is not None and syntax.bare:
            return self.transport
        if syntax is not None and syntax.url:
            return f"{self.transport}://{self.name}"
        return f"{self.transport}:{self.path}" + (f":{self.tag}" if self.tag else "")


def parse_ref(text: str) -> Ref:
    """Parse a transport reference; BadReference saying what is wrong and what is accepted."""
    value = text.strip()
    bare = _SYNTAXES.get(value)
    if bare is not None and bare.bare:
        return Ref(value)
    for scheme, known in _SYNTAXES.items():
        if known.url and value.startswith(f"{scheme}://"):
            return Ref(scheme, name=ImageName.parse(value[len(scheme) + 3 :]))
    transport, sep, rest = value.partition(":")
    syntax = _SYNTAXES.get(transport)
    if not sep or syntax is None or syntax.url or syntax.bare:
        forms = [s.form for s in _SYNTAXES.values()]
        accepted = ", ".join(forms[:-1]) + " or " + forms[-1]
        raise BadReference(f"{text!r} is not a reference: use {accepted}")
    path, _, tag = rest.partition(":")
    if not path:
        raise BadReference(f"{text!r}: no path after '{transport}:'")
    _check_tag(text, transport, syntax, tag)
    return Ref(transport, path=path, tag=tag)


def _check_tag(text: str, transport: str, syntax: Syntax, tag: str) -> None:
    """BadReference when what follows the path is not what ``syntax`` allows there."""
    if syntax.tag == "tag" and tag and not _TAG_RE.match(tag):
        raise BadReference(f"{text!r}: invalid tag {tag!r}")
    if syntax.tag == "none" and tag:
        raise BadReference(f"{text!r}: {transport}: takes a file path only")
    if syntax.tag == "name" and tag:
        ImageName.parse(tag)  # validates
    if syntax.tag == "step" and not tag:
        raise BadReference(f"{text!r}: {syntax.form.split()[0]} names the step (and artifact) to write")


def without_folder(text: str) -> str:
    """The reference ``text`` as an output may carry it: a file or folder one (``oci:``,
    ``oci-archive:``, ``docker-archive:``, ``rootfs:``...) named by its last component
    alone (``oci:/srv/x/demo:latest`` -> ``oci:demo:latest``), so that no output's bytes
    depend on where on this host its source lies; a registry reference, and text that is
    no reference (``assemble:NAME``), unchanged."""
    try:
        ref = parse_ref(text)
    except BadReference:
        return text
    if not ref.path:
        return text
    return str(replace(ref, path=os.path.basename(ref.path.rstrip("/")) or ref.path))


def absolute_ref(ref: Ref, base_dir: Path) -> Ref:
    """``ref`` with a relative path made absolute against ``base_dir``, symlinks not
    followed: an output that is a symlink is the link, not what it points to."""
    if ref.path and not Path(ref.path).is_absolute():
        return replace(ref, path=os.path.abspath(base_dir / ref.path))
    return ref
