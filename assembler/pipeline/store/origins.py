"""Where what a walk uses came from: the registry step cache entries it takes (in this build,
or in an earlier one into the local cache: the record names them, :class:`Origin`), and
what it makes from them.

What is made here from layers that came from an entry is built on that entry
(:func:`assembler.cache.built_on`): a step whose inputs, base, image below or kept folders
came from an entry nobody vouched for is unchecked too, in its record, so this machine's
``--cache-sign`` key never vouches for it and the provenance names the entry it is built on.

Without ``--cache-trust``, using entries nobody vouched for is one warning a run for each
repository they came from, however many entries: such an entry may be anyone's who can
push to that repository.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from assembler.cache import Origin, built_on
from assembler.pipeline.options import Event, Reporter


class Origins:
    """The origins a walk met, by entry key and by layer; ``trusted``: ``--cache-trust``
    is given (entries are checked, nothing to warn about)."""

    def __init__(self, *, trusted: bool, report: Reporter) -> None:
        self.trusted = trusted
        self.report = report
        # The entries used that came from a registry step cache (now or in an earlier build),
        # or were made from what did, by key: what each is and where it came from (the
        # provenance names them).
        self.taken: dict[str, tuple[str, Origin]] = {}
        self._layers: dict[str, Origin] = {}  # diff_id -> the entry the layer came from or is built on
        self._warned: set[str] = set()  # repositories whose unchecked entries were warned about
        self._lock = threading.Lock()

    def note(self, key: str, what: str, origin: Origin, diff_ids: Iterable[str] = ()) -> None:
        """The entry ``key`` (``what``, its layers ``diff_ids``), from ``origin``, is used."""
        with self._lock:
            self.taken[key] = (what, origin)
            for diff_id in diff_ids:
                self._layers[diff_id] = built_on([self._layers.get(diff_id), origin]) or origin
        self.used(origin)

    def origin_of(self, key: str) -> Origin | None:
        """The entry ``key``, used in this walk, came from or is built on (None: made here
        from nothing taken, or not used)."""
        with self._lock:
            taken = self.taken.get(key)
        return taken[1] if taken is not None else None

    def carry(self, made: str, source: str) -> None:
        """The layer ``made`` (a layer fitted onto an image) is made from the layer ``source``."""
        with self._lock:
            if source in self._layers:
                self._layers[made] = self._layers[source]

    def below(self, diff_ids: Iterable[str]) -> Origin | None:
        """The entry what is made here from the layers ``diff_ids`` is built on (None: none
        of them came from a registry step cache)."""
        with self._lock:
            return built_on(self._layers.get(d) for d in diff_ids)

    def used(self, *origins: Origin) -> None:
        """Entries from ``origins`` are used: for those nobody vouched for, without
        ``--cache-trust``, one warning a run for each repository they came from."""
        for origin in origins:
            if origin.signer or self.trusted:
                continue
            with self._lock:
                if origin.repository in self._warned:
                    continue
                self._warned.add(origin.repository)
            text = (
                f"step cache docker://{origin.repository}: its entries are used unchecked (nobody vouched "
                "for who made them); --cache-trust PUB would use only those a trusted key signed"
            )
            self.report(Event("warning", {"text": text}))
