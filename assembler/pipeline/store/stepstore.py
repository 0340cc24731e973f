"""Where a walk looks up and shares what its steps make: a :class:`StepStore`.

:class:`LocalSteps` is the local cache's records (step results, bootstrapped bases, ``pip:``
and ``url:`` layers), each used only where ``--cache-trust`` vouches for it.
:class:`RegistrySteps` wraps a store with a registry step cache (``--cache-from`` /
``--cache-to``, or what a plan looks in), as a decorator with the same interface: what the
store lacks is looked up in the registry, what is made or taken is exported to it, and a
blob of an entry from there is brought in when something needs it. A walk is given one
store and never asks which it has.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from assembler.cache import Cache, Origin, StepResult
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.pipeline.options import Event, RemoteSteps, Reporter
from assembler.pipeline.store.origins import Origins
from assembler.pipeline.store.prebuilt_checks import Check


class StepStore(Protocol):
    """The step records a walk reads and shares (see the module's doc)."""

    def vouched(self, key: str, what: str) -> bool:
        """Whether the local entry ``key`` (``what``) may be used (``--cache-trust``)."""
        ...

    def fetch(self, key: str, what: str, *, local_what: str = "", check: Check | None = None) -> StepResult | None:
        """The result ``key`` (of ``what``; ``local_what`` names it in a warning about the
        local entry, ``what`` when empty): the local record when vouched for, else the
        registry's, checked with ``check`` where given (None: not held)."""
        ...

    def from_registry(self, key: str) -> bool:
        """Whether ``fetch`` found ``key`` in a registry step cache, not here."""
        ...

    def origin(self, key: str) -> Origin | None:
        """Where the entry ``key`` came from, if from a registry step cache."""
        ...

    def export(self, key: str, result: StepResult) -> None:
        """``result`` (recorded here) shared beyond the local cache (``--cache-to``)."""
        ...

    def ensure(self, blob: Layer) -> None:
        """``blob`` in the local cache now that it is needed (an entry from a registry)."""
        ...

    def holds(self, blob: Layer) -> bool:
        """Whether ``blob`` can be read without fetching it (a plan fetches nothing)."""
        ...

    def fetch_base(self, key: str, what: str) -> Image | None:
        """The bootstrapped base ``key`` from a registry step cache, where the local cache
        has none it may use (its layers not fetched: :meth:`ensure_base`)."""
        ...

    def ensure_base(self, key: str) -> None: ...

    def export_base(self, key: str, image: Image) -> None: ...

    def counts(self) -> dict[str, int]:
        """What the registry step cache did (``--json``'s ``step_cache``; empty: none)."""
        ...

    def close(self) -> None: ...


class Counted(Protocol):
    """What :class:`RegistrySteps` reports on and closes: its registry caches as one."""

    def counts(self) -> dict[str, int]: ...

    def close(self) -> None: ...


class LocalSteps:
    """The local cache's records; under ``--cache-trust`` (``trusted``: its key ids), one
    taken from a registry step cache is used only if a trusted key signed it."""

    def __init__(self, cache: Cache, *, trusted: frozenset[str], report: Reporter) -> None:
        self.cache = cache
        self.trusted = trusted
        self.report = report
        self._unvouched: set[str] = set()  # local entries --cache-trust refused (warned about once)

    def vouched(self, key: str, what: str) -> bool:
        """A record taken unchecked is a warning and a miss: it is fetched or made again."""
        origin = self.cache.origin(key) if self.trusted else None
        if origin is None or origin.signer in self.trusted:
            return True
        if key not in self._unvouched:
            self._unvouched.add(key)
            where = f"docker://{origin.repository}:{origin.tag}"
            self.report(Event("warning", {"text": f"{what}: the local cache took it from {where} unchecked; not used"}))
        return False

    def fetch(self, key: str, what: str, *, local_what: str = "", check: Check | None = None) -> StepResult | None:
        # Verified by the cache: parsed, every blob present.
        return self.cache.step_result(key) if self.vouched(key, local_what or what) else None

    def from_registry(self, key: str) -> bool:
        return False

    def origin(self, key: str) -> Origin | None:
        return self.cache.origin(key)

    def export(self, key: str, result: StepResult) -> None:
        pass  # recorded in the cache by whoever made it: nowhere else to share it

    def ensure(self, blob: Layer) -> None:
        pass  # a local result's blobs are all here (checked when it was read)

    def holds(self, blob: Layer) -> bool:
        return True

    def fetch_base(self, key: str, what: str) -> Image | None:
        return None

    def ensure_base(self, key: str) -> None:
        pass

    def export_base(self, key: str, image: Image) -> None:
        pass

    def counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


class RegistrySteps:
    """``local`` with the registry step cache ``remote`` behind it (see the module's doc);
    ``caches`` (default ``remote``) is what is counted and closed with it: a build's
    compile caches and facts are of the same repositories."""

    def __init__(self, local: LocalSteps, remote: RemoteSteps, *, caches: Counted | None = None) -> None:
        self.local = local
        self.remote = remote
        self.caches: Counted = caches if caches is not None else remote
        self._found: set[str] = set()  # the keys found there, not here

    def vouched(self, key: str, what: str) -> bool:
        return self.local.vouched(key, what)

    def fetch(self, key: str, what: str, *, local_what: str = "", check: Check | None = None) -> StepResult | None:
        hit = self.local.fetch(key, what, local_what=local_what)
        if hit is None and (hit := self.remote.fetch(key, what, check)) is not None:
            self._found.add(key)  # verified by digest, then stored locally
        return hit

    def from_registry(self, key: str) -> bool:
        return key in self._found

    def origin(self, key: str) -> Origin | None:
        return self.remote.origin(key) or self.local.origin(key)

    def export(self, key: str, result: StepResult) -> None:
        self.remote.export(key, result)

    def ensure(self, blob: Layer) -> None:
        self.remote.ensure(blob)

    def holds(self, blob: Layer) -> bool:
        return self.local.cache.has_blob(blob.digest, blob.size)

    def fetch_base(self, key: str, what: str) -> Image | None:
        if self.local.cache.base_image(key) is not None and self.local.vouched(key, what):
            return None  # here, and usable: the walk takes it from the cache
        return self.remote.fetch_base(key, what)

    def ensure_base(self, key: str) -> None:
        self.remote.ensure_base(key)

    def export_base(self, key: str, image: Image) -> None:
        self.remote.export_base(key, image)

    def counts(self) -> dict[str, int]:
        return self.caches.counts()

    def close(self) -> None:
        self.caches.close()


def step_result(store: StepStore, key: str, what: str) -> StepResult | None:
    """The result ``key`` of step ``what`` (see :meth:`StepStore.fetch`), exported to
    ``--cache-to`` when found (an entry of another repository, or one made before)."""
    hit = store.fetch(key, what, local_what=f"step {what}")
    if hit is not None:
        store.export(key, hit)
    return hit


def note_taken(store: StepStore, origins: Origins, key: str, what: str, diff_ids: Iterable[str] = ()) -> None:
    """The entry ``key`` (``what``, its layers ``diff_ids``) is used: noted in ``origins``
    if it came from a registry step cache (or was made from what did)."""
    origin = store.origin(key)
    if origin is not None:
        origins.note(key, what, origin, diff_ids)
