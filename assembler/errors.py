"""The one exception tree of `assemble`.

Every error the library raises on purpose is an :class:`AssemblerError`. The CLI turns
it into ``error: <message>`` (plus ``hint: <hint>`` where there is one) and an exit code;
anything else reaching the CLI is a bug and gets a traceback.

::

    AssemblerError                      exit 1: the build or the run failed
    ├── InputError                      exit 2: the user's input is wrong
    │   ├── ManifestError               file:line: field: message
    │   ├── BadReference                a transport reference that does not parse
    │   ├── BadPlatform                 a platform that is not os/arch[/variant]
    │   ├── UnsafePath                  an archive entry or a copy escaping its root
    │   ├── InvalidArchive              a tar or file tree that cannot become a layer
    │   ├── AptRefused                  Debian packages apt will not install (no such package...)
    │   └── NotACache                   a --cache folder of the user's or of another tool (a CacheError too)
    ├── NotFound                        an image, blob, tag or file that is not there
    ├── DigestMismatch                  bytes that do not hash to what was promised
    │   └── CorruptBlob                 a cached blob that does not (dropped; a build retries)
    ├── InvalidImage                    an image that fails validation
    │   └── BadToc                      a zstd:chunked TOC or tar-split that does not say what the tar holds
    ├── InvalidRecord                   a stored or exchanged JSON record of the wrong shape
    ├── ToolError                       an external program failed or is missing
    │   ├── StepFailed                  a compile or runtime step's command failed
    │   └── TimedOut                    a program ran past its time limit (and was stopped)
    ├── TestFailed                      a test of the built image failed (no output is written)
    ├── RegistryError                   a registry said no (after retries)
    │   └── Unreachable                 a registry host that does not resolve, refuses or never answers
    ├── HostsUnreachable                hosts a build needs that do not answer (checked before it starts)
    ├── CacheError                      the cache directory cannot be used
    ├── MissingDependencies             ELF files an image adds cannot load in it (libraries, versions)
    ├── SignatureError                  no signature (or attestation) by the key over the image
    └── Cancelled                       a step given up: another one failed (or Ctrl-C)

Expected failures carry fields (``status``, ``argv``, ``returncode``, ``log_tail``...), not
only text, so callers can decide without parsing messages. ``ValueError`` and
``TypeError`` from the library mean a caller broke a contract (a bug), never bad input.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class AssemblerError(Exception):
    """Base of every error raised on purpose. ``hint`` tells the user what to do."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InputError(AssemblerError):
    """The user's input (manifest, flags, references, files) is wrong: exit 2."""

    exit_code = 2


class ManifestError(InputError):
    """A manifest or recipe problem, located at ``file:line: field``."""

    def __init__(
        self,
        message: str,
        *,
        file: Path | str | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.detail = message
        where = ""
        if self.file is not None:
            where = self.file + (f":{line}" if line is not None else "") + ": "
        if field:
            where += f"{field}: "
        super().__init__(where + message, hint=hint)


class BadReference(InputError):
    """A transport reference (``oci:DIR:TAG``, ``docker://...``) that does not parse."""


class BadPlatform(InputError):
    """A platform (``--platform``, a manifest's ``platform``) that is not ``os/arch[/variant]``."""


class UnsafePath(InputError):
    """An archive entry, link or copy source that would escape its root."""


class InvalidArchive(InputError):
    """A tar archive or file tree that cannot become a layer: a hard link to a file it
    does not have, a file that ended early (it changed while read), a field too big for tar."""


class AptRefused(InputError):
    """apt would not install what a manifest asks (a bootstrap's packages, a ``packages:``
    layer, a step's): ``packages`` names each it refused, ``reasons`` holds apt's own words
    for each, in the same order. The manifest is at fault, not the mirror or the host."""

    def __init__(
        self, message: str, *, packages: Sequence[str], reasons: Sequence[str], hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.packages = tuple(packages)
        self.reasons = tuple(reasons)


class NotFound(AssemblerError):
    """An image, tag, blob, base or file that does not exist."""


class DigestMismatch(AssemblerError):
    """Bytes whose sha256 is not the digest they were promised to have."""

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        super().__init__(f"{message}: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class CorruptBlob(DigestMismatch):
    """A blob in the cache whose bytes are not its digest. It has been dropped already,
    so building again rebuilds or re-fetches it (``build`` does that once by itself)."""


class InvalidImage(AssemblerError):
    """An image whose manifest, config or blobs fail validation (malformed JSON, a
    descriptor without a sha256 digest, an unknown media type...)."""


class BadToc(InvalidImage):
    """A zstd:chunked layer whose TOC or tar-split does not say what its tar holds (a
    partial pull would make other files than every reader of the tar sees), or that
    cannot be checked. ``member``: the tar entry or TOC entry at fault, where there is one."""

    def __init__(self, message: str, *, member: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.member = member


class InvalidRecord(AssemblerError):
    """A JSON record we stored or were handed (a cache entry, the build agent's answer)
    without the expected shape. A cache reads it as a miss."""


class ToolError(AssemblerError):
    """An external program failed, or is missing."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        returncode: int | None = None,
        stderr_tail: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class StepFailed(ToolError):
    """A compile or runtime step's command exited non-zero."""

    def __init__(
        self,
        message: str,
        *,
        step: str,
        command: str,
        argv: Sequence[str] = (),
        returncode: int | None = None,
        log_path: Path | None = None,
        log_tail: str = "",
        hint: str | None = None,
        kept_container: str | None = None,
    ) -> None:
        super().__init__(message, argv=argv, returncode=returncode, stderr_tail=log_tail, hint=hint)
        self.step = step
        self.command = command
        self.log_path = log_path
        self.log_tail = log_tail
        self.kept_container = kept_container  # --keep-failed: the step's container, left to be entered


class TimedOut(ToolError):
    """A program ran past its time limit and was stopped; ``stderr_tail`` holds the last
    of what it printed, ``seconds`` the limit."""

    def __init__(self, message: str, *, argv: Sequence[str] = (), seconds: float, stderr_tail: str = "") -> None:
        super().__init__(message, argv=argv, stderr_tail=stderr_tail)
        self.seconds = seconds


class TestFailed(AssemblerError):
    """Tests of a built image failed (``tests:``): ``failed`` names them; ``argv``,
    ``returncode``, ``log_tail`` and ``log_path`` are the first one's, as a step's are."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        message: str,
        *,
        failed: Sequence[str],
        argv: Sequence[str] = (),
        returncode: int | None = None,
        log_tail: str = "",
        log_path: Path | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.failed = tuple(failed)
        self.argv = tuple(argv)
        self.returncode = returncode
        self.log_tail = log_tail
        self.log_path = log_path


class RegistryError(AssemblerError):
    """A registry refused or kept failing a request (after the bounded retries)."""

    def __init__(
        self,
        message: str,
        *,
        registry: str = "",
        status: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.registry = registry
        self.status = status


class Unreachable(RegistryError):
    """A registry host that cannot be reached at all: its name does not resolve, it refuses
    connections, or it accepts them and never answers. ``host`` is the host that failed
    (the registry's, or its token server's), ``why`` how."""

    def __init__(
        self, message: str, *, registry: str = "", host: str = "", why: str = "", hint: str | None = None
    ) -> None:
        super().__init__(message, registry=registry, hint=hint)
        self.host = host
        self.why = why


class HostsUnreachable(AssemblerError):
    """Hosts a build will reach do not answer, found before anything is built: ``hosts``
    maps each to why (its name does not resolve, it refuses, no answer in time, TLS)."""

    def __init__(self, message: str, *, hosts: dict[str, str], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.hosts = hosts


class CacheError(AssemblerError):
    """The cache directory cannot be created, read or written."""


class NotACache(InputError, CacheError):
    """A ``--cache`` folder that is not a cache of assemble (a project folder, cargo's
    ``target/`` with its own ``CACHEDIR.TAG``): refused, never filled nor pruned. Bad
    input (exit 2), and a :class:`CacheError` to whoever catches those."""


class MissingDependencies(AssemblerError):
    """ELF files a build's layers add need libraries, symbol versions or a loader the
    image lacks. ``misses`` holds the dependency check's findings (``assembler.deps.Miss``)."""

    def __init__(self, message: str, *, misses: Sequence[object] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.misses = tuple(misses)


class SignatureError(AssemblerError):
    """``assemble verify``: the image has no cosign signature (or no attestation of the
    type asked for) by the key, over its digest. ``rejected`` says why each one found failed."""

    def __init__(self, message: str, *, rejected: Sequence[str] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.rejected = tuple(rejected)


class Cancelled(AssemblerError):
    """A step given up because another step of the same build failed (or Ctrl-C)."""
