"""What a walk obtains before any step runs on it: its bases (:meth:`Obtained.base`: read,
bootstrapped or made, as the walk's mode does) and sources (:meth:`Obtained.source`), and
buildah's version, which every step key holds. Each is decided once, whichever thread
asks first (:class:`Once`), and kept for the walk's image, labels and provenance.
"""

from __future__ import annotations

import threading
from functools import partial

from assembler.cache.programs import program_version
from assembler.compile import sources as srcs
from assembler.compile.buildah import Buildah
from assembler.debian import bootstrap as boot
from assembler.errors import AptRefused
from assembler.manifest.load.loaded import Loaded
from assembler.manifest.lock.debpins import DebLocked
from assembler.manifest.schema import model as m
from assembler.pipeline.image.bases import Base, base_context, bootstrap_key, bootstrap_spec
from assembler.pipeline.options import Event
from assembler.pipeline.store.stepstore import note_taken
from assembler.pipeline.walk.modes import BaseWant, Services
from assembler.transports import Context


class Once:
    """The lock under which each thing (a base, a source, a step) is decided, once for all."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def __call__(self, what: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(what, threading.Lock())


class Obtained:
    """The bases and sources of one walk of ``loaded``, obtained through its services' mode."""

    def __init__(self, loaded: Loaded, ctx: Context, services: Services, once: Once) -> None:
        self.loaded = loaded
        self.man = loaded.manifest
        self.ctx = ctx
        self.mode = services.mode
        self.store = services.steps
        self.origins = services.origins
        self.report = services.report
        self.once = once
        self.bases: dict[str, Base | None] = {}
        self.sources: dict[str, srcs.Source | None] = {}
        self._tool: str | None = None

    def tool(self) -> str:
        """buildah's version (part of step keys); without buildah, the one last recorded."""
        with self.once("tool"):
            if self._tool is None:
                buildah = Buildah(self.ctx.runner, storage=self.ctx.cache.root / "buildah")
                found = self.ctx.runner.which("buildah")
                self._tool = program_version(
                    self.ctx.cache,
                    "buildah",
                    found,
                    buildah.version,
                    record=self.mode.records,
                    missing="buildah-missing",
                )
            return self._tool

    def locked_debs(self, where: str) -> DebLocked | None:
        """What the lock installs at ``where`` (``apt:bases.NAME``, ``apt:packages-1``), if it does."""
        lock = self.loaded.lock
        return lock.debian.get(where) if lock is not None else None

    def bootstrap(self, name: str, spec: m.BootstrapBase) -> Base | None:
        """A bootstrapped base: from the cache, else made (a build) or None (a plan)."""
        bspec, _ = bootstrap_spec(spec)
        locked = self.locked_debs(f"apt:bases.{name}")
        ctx = base_context(self.ctx, spec)  # its own platform, if it names one
        key, what = bootstrap_key(ctx, spec, record=self.mode.records, locked=locked)
        image = ctx.cache.base_image(key) if self.store.vouched(key, f"base {name}") else None
        if image is not None:
            note_taken(self.store, self.origins, key, f"base {name}", image.diff_ids)
        else:
            make = partial(
                boot.make,
                bspec,
                key,
                cache=ctx.cache,
                runner=ctx.runner,
                platform=ctx.platform,
                epoch=ctx.epoch,
                compression=ctx.compression,
                locked=locked,
            )
            try:
                image = self.mode.maker.missing(make)
            except AptRefused as e:  # the manifest's packages: said where they are written
                raise self.loaded.error(("bases", name, "bootstrap", "packages"), e.message, hint=e.hint) from None
        return Base(name, image, what) if image is not None else None

    def base(self, name: str) -> Base | None:
        """The base ``name``: obtained by the mode (None: not known yet, a plan)."""
        with self.once(f"base:{name}"):
            if name not in self.bases:
                self.report(Event("base", {"name": name, "state": "resolving"}))
                base = self.bases[name] = self.mode.obtain_base(self._want(name))
                if base is not None:
                    fields = {"name": name, "state": "ready", "digest": base.image.digest, "what": base.what}
                    self.report(Event("base", fields))
            return self.bases[name]

    def _want(self, name: str) -> BaseWant:
        spec = self.man.bases[name]
        if not isinstance(spec, m.BootstrapBase):
            return BaseWant(name, spec, self.loaded, self.ctx, None, lambda: None)
        locked = self.locked_debs(f"apt:bases.{name}")
        ctx = base_context(self.ctx, spec)
        return BaseWant(name, spec, self.loaded, ctx, locked, partial(self.bootstrap, name, spec))

    def source(self, name: str) -> srcs.Source | None:
        """The source ``name``: fetched (a build) or as last fetched (a plan; None: never)."""
        with self.once(f"source:{name}"):
            if name not in self.sources:
                self.sources[name] = self.mode.obtain_source(name, self.man.sources[name], self.loaded, self.ctx)
            return self.sources[name]
