"""A manifest's models gathered and packed for a build (:func:`prepare`), and locked
(:func:`lock_all`, for ``assemble lock``)."""

from __future__ import annotations

from collections.abc import Callable

from assembler.cache import Cache
from assembler.manifest.load.loaded import Loaded
from assembler.manifest.text.urls import redacted
from assembler.weights import lock
from assembler.weights.hub import Hub
from assembler.weights.pack import Packed, pack
from assembler.weights.sources import Gathered, gather


def _gathered(loaded: Loaded, cache: Cache, hub: Callable[[], Hub], *, use_lock: bool) -> list[Gathered]:
    locked = lock.read(lock.lock_path(loaded.path)) if use_lock else {}
    return [
        gather(name, spec, folder=loaded.folder, cache=cache, locked=locked.get(name), hub=hub)
        for name, spec in sorted(loaded.manifest.weights.items())
    ]


def prepare(
    loaded: Loaded, cache: Cache, *, warn: Callable[[str], None], hub: Callable[[], Hub] = Hub.from_env
) -> list[Packed]:
    """Every model of the manifest, its files in the cache as the lock has them, packed."""
    out = []
    for g in _gathered(loaded, cache, hub, use_lock=True):
        if not g.locked:
            warn(f"weights {g.name}: not locked (taken as {redacted(g.spec.source)} is now): run assemble lock")
        out.append(pack(g.name, g.spec.at, g.files, source=g.spec.source, revision=g.revision, cache=cache))
    return out


def described(loaded: Loaded) -> dict[str, str]:
    """Each model in words, for a plan: its source, where it goes, and what its lock pins
    (nothing read but the lock: a plan fetches no weight)."""
    locked = lock.read(lock.lock_path(loaded.path))
    out = {}
    for name, spec in sorted(loaded.manifest.weights.items()):
        entry = locked.get(name)
        if entry is None or not entry.matches(spec):
            state = "not locked" if entry is None else "the lock is stale (source, include or exclude changed)"
        else:
            size = sum(f.size for f in entry.files)
            at = f" at {entry.revision[:12]}" if entry.revision else ""
            state = f"locked{at}: {len(entry.files)} file(s), {size / 2**20:.1f} MiB"
        out[name] = f"{redacted(spec.source)} -> {spec.at} ({state})"
    return out


def lock_all(loaded: Loaded, cache: Cache, *, hub: Callable[[], Hub] = Hub.from_env) -> tuple[int, bool]:
    """Write the manifest's weights lock from its models as they are now (an hf:// revision
    resolved anew); (how many models, whether the file changed). No models: no file."""
    path = lock.lock_path(loaded.path)
    if not loaded.manifest.weights:
        return 0, False
    models = {g.name: g.as_locked() for g in _gathered(loaded, cache, hub, use_lock=False)}
    return len(models), lock.write(path, models)
