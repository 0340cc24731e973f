"""What to do about what the cache does not hold: a :class:`Maker`.

A plan and a build walk a manifest the same way (:mod:`assembler.pipeline.walk.walk`) and look
up the same keys; they differ in what they do on a miss. :data:`LOOKUP` (a plan) only
looks up what exists and writes nothing: what is missing is None, "not known until
built". :data:`MAKE` (a build) makes what is missing and records it. The layers made
without a container (:mod:`assembler.pipeline.layers.setup`,
:mod:`assembler.pipeline.layers.prebuilt_layers`, :mod:`assembler.pipeline.layers.cutlayers`) are given
a Maker: in a walk, its mode (:class:`assembler.pipeline.walk.modes.Mode`, which is a Maker
that does as :data:`LOOKUP` or :data:`MAKE` does, and owns the rest of what a plan and a
build do differently); alone (a test), one of these two."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Maker(Protocol):
    """What to do with something the cache does not hold (see the module's doc)."""

    def missing(self, make: Callable[[], T]) -> T | None:
        """Something not found: what ``make`` makes (a build), or None (a plan)."""
        ...

    def by_content(self, find: Callable[[], T | None], make: Callable[[], T]) -> T | None:
        """Something named by its content, found by reading all of it (host files: hashed)
        or made from it (written): what ``find`` finds (a plan), or what ``make`` makes (a
        build, which records it). A build's walk is given what its plan found first
        (:attr:`~assembler.pipeline.layers.kinds.copy.Copies.found`), so ``make`` runs
        only for what the plan did not find."""
        ...

    def keep(self, write: Callable[[], object]) -> None:
        """Record something in the cache with ``write`` (a build); a plan writes nothing."""
        ...


class LookUp:
    """A plan's: looks up, makes nothing, writes nothing."""

    def missing(self, make: Callable[[], T]) -> T | None:
        return None

    def by_content(self, find: Callable[[], T | None], make: Callable[[], T]) -> T | None:
        return find()

    def keep(self, write: Callable[[], object]) -> None:
        pass


class MakeMissing:
    """A build's: makes what is missing and records it."""

    def missing(self, make: Callable[[], T]) -> T | None:
        return make()

    def by_content(self, find: Callable[[], T | None], make: Callable[[], T]) -> T | None:
        return make()

    def keep(self, write: Callable[[], object]) -> None:
        write()


LOOKUP: Maker = LookUp()
MAKE: Maker = MakeMissing()
