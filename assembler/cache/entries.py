"""The cache's schema: every kind of entry, read and written through typed methods.

An entry is one record ``keys/<xx>/<key>.json`` (``{"kind": ..., ...}``) and the blobs it
names. Kinds:

- ``step``: a compile step's artifacts or a runtime step's layer (:class:`StepResult`);
- ``layer``: one layer made outside a step: a copy layer, a gzip conversion, a fitted layer;
- ``base``: a resolved, converted or bootstrapped base image (its manifest; the manifest
  names the config and layers);
- ``memo``: a small fact remembered to save work (a diff_id, a tree index, a source's
  digest by its stat fingerprint, buildah's version); it names no blob.

Files that are not records (step logs, kept step folders, source checkouts) are listed
and pruned by :mod:`assembler.cache.maintain`.

:meth:`Cache._entry` is the one place that decides an entry is usable: it parses the
record for its kind and checks every blob it names is present with its size. A record
that cannot be parsed, or whose blobs are gone, is dropped (a miss: the work is done
again), so an entry whose blob was pruned or damaged is never served. A hit stamps the
record's mtime: that is its last use for ``cache prune``. Records written before kinds
existed carry no ``kind``; :func:`kind_of` recognises them by their shape.

A step or base record taken from a registry step cache also names that entry
(``"origin"``: :class:`Origin`), so the provenance of every later build that uses it says
where it came from; a record made here has none, unless it was made from such entries
(:func:`built_on`). A kept folder restored from a registry (a compile cache) has its origin
in a record beside it (``<folder>.origin``: :meth:`Cache.folder_origin`), which holds for
as long as the folder holds anything: what a step builds in it later is still built on it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from assembler.archive.headers import file_state
from assembler.cache.store import Store
from assembler.cache.temps import temp_prefix
from assembler.errors import CorruptBlob, InvalidImage, InvalidRecord
from assembler.oci.digest import digest_hex
from assembler.oci.image import Image
from assembler.oci.layer import Layer

log = logging.getLogger(__name__)
Kind = Literal["step", "layer", "base", "memo"]
KINDS: tuple[Kind, ...] = ("step", "layer", "base", "memo")
_LAYER_FIELDS = ("digest", "size", "diff_id", "compression")
T = TypeVar("T")


@dataclass(frozen=True)
class Origin:
    """The registry step cache entry a record came from: its repository (``REG/REPO``), tag
    and manifest digest, and the key id of the trusted key that signed it ("": taken
    without ``--cache-trust``, so nobody vouched for it)."""

    repository: str
    tag: str
    digest: str
    signer: str = ""

    def to_json(self) -> dict[str, str]:
        return {"repository": self.repository, "tag": self.tag, "digest": self.digest, "signer": self.signer}

    @classmethod
    def from_json(cls, data: Any) -> Origin:
        """Raises KeyError, TypeError or ValueError when ``data`` is not one."""
        fields = [data["repository"], data["tag"], data["digest"], data.get("signer", "")]
        if not all(isinstance(f, str) for f in fields) or not fields[2].startswith("sha256:"):
            raise ValueError(f"not an origin: {data!r}")
        return cls(*fields)


def built_on(origins: Iterable[Origin | None]) -> Origin | None:
    """The origin of something made here from things of ``origins`` (None: made here from
    nothing taken elsewhere): the first nobody vouched for, else the first a trusted key
    signed. What is built on an unchecked entry is unchecked too, so no key of ours ever
    vouches for it."""
    taken = [o for o in origins if o is not None]
    return next((o for o in taken if not o.signer), taken[0] if taken else None)


def _origin_record(folder: Path) -> Path:
    return folder.with_name(folder.name + ".origin")


def _identity(folder: Path) -> list[int] | None:
    """The folder ``folder`` as a record names it (device, inode); None while it is absent
    or empty (a folder removed and made again is another folder)."""
    try:
        with os.scandir(folder) as entries:
            if next(iter(entries), None) is None:
                return None
        st = folder.stat()
    except FileNotFoundError:
        return None
    return [st.st_dev, st.st_ino]


@dataclass(frozen=True)
class StepResult:
    """What a step made: a compile step's artifacts by name, or a runtime step's layer."""

    step: str
    artifacts: Mapping[str, Layer] = field(default_factory=dict)
    layer: Layer | None = None

    def layers(self) -> list[Layer]:
        return [*self.artifacts.values(), *([self.layer] if self.layer is not None else [])]

    def to_json(self) -> dict[str, Any]:
        if self.layer is not None:
            return {"kind": "step", "step": self.step, "layer": self.layer.to_json()}
        return {"kind": "step", "step": self.step, "artifacts": {n: b.to_json() for n, b in self.artifacts.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepResult:
        """Raises KeyError, TypeError, ValueError or AttributeError when ``data`` is not one."""
        if "layer" in data:
            return cls(str(data["step"]), layer=Layer.from_json(data["layer"]))
        return cls(str(data["step"]), {str(n): Layer.from_json(b) for n, b in data["artifacts"].items()})


def kind_of(value: Mapping[str, Any]) -> Kind:
    """An entry's kind: as recorded, or (for records older than kinds) from its shape."""
    kind = value.get("kind")
    if kind in KINDS:
        return cast(Kind, kind)
    if "artifacts" in value or "layer" in value:
        return "step"
    if "manifest" in value:
        return "base"
    if all(f in value for f in _LAYER_FIELDS):
        return "layer"
    return "memo"


def parse(kind: Kind, value: Mapping[str, Any]) -> StepResult | Layer | str | Mapping[str, Any]:
    """The entry ``value`` as its kind's type (a base: its manifest digest). Raises
    KeyError, TypeError, ValueError or AttributeError when it does not fit the kind."""
    if kind_of(value) != kind:
        raise ValueError(f"a {kind_of(value)} entry where a {kind} entry was expected")
    if kind == "step":
        return StepResult.from_json(value)
    if kind == "layer":
        return Layer.from_json(value)
    if kind == "base":
        digest = value["manifest"]
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise ValueError(f"not a manifest digest: {digest!r}")
        return digest
    return value


def blobs_of(parsed: object) -> list[tuple[str, int]]:
    """The blobs (digest, size) a parsed step or layer entry names (a base's are in its manifest)."""
    if isinstance(parsed, StepResult):
        return [(b.digest, b.size) for b in parsed.layers()]
    if isinstance(parsed, Layer):
        return [(parsed.digest, parsed.size)]
    return []


# What reading a damaged record raises: our own parsers' errors (Layer.from_json,
# LayerIndex.from_json raise InvalidRecord; Image() raises InvalidImage) and JSON shape errors.
CORRUPT = (KeyError, TypeError, ValueError, AttributeError, IndexError, InvalidRecord, InvalidImage)


class Cache(Store):
    """The cache with its schema: typed entries over :class:`Store`'s blobs and records."""

    # -- the one check -------------------------------------------------------------------

    def read_record(self, path: Path) -> Mapping[str, Any]:
        """A record's JSON object. Raises FileNotFoundError, or ValueError when it is not one."""
        try:
            value = json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"not JSON: {e}") from e
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return value

    def drop_record(self, path: Path, why: str) -> None:
        log.warning("cache entry %s %s: dropped it, it will be made again", path.stem, why)
        path.unlink(missing_ok=True)

    def _entry(self, key: str, kind: Kind) -> StepResult | Layer | Image | Mapping[str, Any] | None:
        """The usable entry ``key`` of ``kind``, or None (a miss). Corrupt or dangling
        entries are dropped here, and nowhere else."""
        path = self._key_path(key)
        try:
            parsed = parse(kind, self.read_record(path))
        except FileNotFoundError:
            return None
        except (OSError, *CORRUPT) as e:
            self.drop_record(path, f"is unreadable ({e})")
            return None
        entry: StepResult | Layer | Image | Mapping[str, Any] | None
        if isinstance(parsed, str):  # a base: its manifest, config and layers must all be here
            entry = self.get_image(parsed)
            if entry is None:
                self.drop_record(path, f"names image {parsed}, which is not complete in the cache")
                return None
        elif not self.blobs_present(blobs_of(parsed)):
            self.drop_record(path, "names a blob that is not in the cache")
            return None
        else:
            entry = parsed
        try:
            os.utime(path)  # its last use, for `cache prune`
        except OSError:
            pass
        return entry

    # -- step results --------------------------------------------------------------------

    def step_result(self, key: str) -> StepResult | None:
        hit = self._entry(key, "step")
        return hit if isinstance(hit, StepResult) else None

    def put_step_result(self, key: str, result: StepResult, origin: Origin | None = None) -> None:
        """Record a step's result (its blobs must be stored already), taken from ``origin``."""
        self.put_key(key, {**result.to_json(), **({"origin": origin.to_json()} if origin else {})})

    def origin(self, key: str) -> Origin | None:
        """The registry step cache entry the record ``key`` was taken from (None: made here,
        or no such record)."""
        found = (self.get_key(key) or {}).get("origin")
        try:
            return Origin.from_json(found) if found is not None else None
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    # -- kept folders ---------------------------------------------------------------------

    def folder_origin(self, folder: Path) -> Origin | None:
        """The registry entry the kept folder ``folder`` (a step's, a ``shared_cache:`` one)
        was restored from, whatever was built in it since; None: made here, or empty (an
        empty folder holds nothing from anywhere; a record of a folder removed since does
        not count). A record that cannot be read is taken as unchecked: nobody vouches for
        the folder."""
        path = _origin_record(folder)
        try:
            identity = _identity(folder)
            if identity is None:
                return None
            record = self.read_record(path)
            bound = record.get("folder")
            if bound is not None and bound != identity:
                return None
            return Origin.from_json(record["origin"])
        except FileNotFoundError:
            return None
        except (OSError, KeyError, TypeError, ValueError, AttributeError) as e:
            # Fail closed: a record that is there but unreadable may have said "unchecked", and
            # taking the folder as made here would let this machine's key vouch for it.
            log.warning("the origin of %s (%s) is unreadable (%s): taking it as unchecked", folder, path, e)
            return Origin(repository=str(path), tag="", digest="sha256:" + "0" * 64)

    def put_folder_origin(self, folder: Path, origin: Origin | None) -> None:
        """Record (None: forget) that ``folder`` was restored from ``origin``: written before
        the folder is filled, it names whatever fills it; written again once it is, that
        folder only. Raises OSError."""
        path = _origin_record(folder)
        if origin is None:
            path.unlink(missing_ok=True)
            return
        record = {"origin": origin.to_json(), "folder": _identity(folder)}
        path.parent.mkdir(parents=True, exist_ok=True)
        # Whole or not at all: written under tmp/ (where a killed run's file is reclaimed), then renamed.
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(".tmp-"), dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(record, sort_keys=True).encode())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- layers made outside steps -------------------------------------------------------

    def layer(self, key: str) -> Layer | None:
        hit = self._entry(key, "layer")
        return hit if isinstance(hit, Layer) else None

    def put_layer(self, key: str, blob: Layer) -> None:
        self.put_key(key, {"kind": "layer", **blob.to_json()})

    # -- resolved bases ------------------------------------------------------------------

    def base_image(self, key: str) -> Image | None:
        hit = self._entry(key, "base")
        return hit if isinstance(hit, Image) else None

    def put_base_image(self, key: str, image: Image, origin: Origin | None = None) -> None:
        """Record a base image (its layers must be stored; its manifest and config are stored
        here), taken from ``origin``."""
        self.put_image(image)
        self.put_key(
            key, {"kind": "base", "manifest": image.digest, **({"origin": origin.to_json()} if origin else {})}
        )

    # -- memos ---------------------------------------------------------------------------

    def memo(self, key: str) -> Mapping[str, Any] | None:
        hit = self._entry(key, "memo")
        return hit if isinstance(hit, Mapping) else None

    def memo_as(self, key: str, read: Callable[[Mapping[str, Any]], T]) -> T | None:
        """The memo ``key`` as ``read`` makes it; one ``read`` cannot make (KeyError,
        TypeError, ValueError...) is dropped like any corrupt entry."""
        hit = self.memo(key)
        if hit is None:
            return None
        try:
            return read(hit)
        except CORRUPT as e:
            self.drop_record(self._key_path(key), f"is not what it should hold ({e!r})")
            return None

    def put_memo(self, key: str, value: Mapping[str, Any]) -> None:
        assert "kind" not in value, "a memo's fields may not include 'kind'"
        self.put_key(key, {"kind": "memo", **value})

    # -- blobs known whole ---------------------------------------------------------------

    def _blob_state(self, digest: str) -> list[int] | None:
        try:
            st = self.blob_path(digest).stat()
        except FileNotFoundError:
            return None
        return list(file_state(st))

    def vouch_blob(self, digest: str) -> None:
        """The blob ``digest`` was just written or read whole with its digest checked: until
        its file changes (inode, size or times), :meth:`blob_intact` need not read it."""
        state = self._blob_state(digest)
        if state is not None:
            self.put_memo("blob-whole-" + digest_hex(digest), {"state": state})

    def blob_intact(self, digest: str, size: int) -> bool:
        """Whether the blob ``digest`` is here with its bytes: read and hashed (a damaged one
        is dropped: False) unless vouched for and its file unchanged since. A rebuild that
        takes a GiB layer from the cache does not read it again to trust it; what reads its
        bytes for an output checks them all the same (:meth:`open_blob`)."""
        if not self.has_blob(digest, size):
            return False
        state = self._blob_state(digest)
        if (self.memo("blob-whole-" + digest_hex(digest)) or {}).get("state") == state:
            return True
        try:
            with self.open_blob(digest) as blob:
                while blob.read(1 << 20):
                    pass
        except CorruptBlob:
            return False
        self.vouch_blob(digest)
        return True

    # -- logs ----------------------------------------------------------------------------

    def log_path(self, step: str, key: str) -> Path:
        """Where the log of the step ``step`` run under ``key`` is written."""
        return self.root / "logs" / f"{step}-{key[:12]}.log"
