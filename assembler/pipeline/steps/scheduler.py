"""How much of a build runs at once, and how it stops: a :class:`Scheduler` around its executor.

With ``jobs`` > 1, each compile step waits in a thread of its own for the steps it depends
on (:meth:`Scheduler.side_by_side`) while the layers are stacked (runtime steps run)
meanwhile; at most ``jobs`` steps (or base bootstraps) hold a slot at once
(:meth:`Scheduler.slot`). The first failure, or Ctrl-C, stops the others: the runner
cancels their programs (their containers are removed), no step starts after it, an
executor waiting on something gives up (``stop``), and that first error is raised.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from contextlib import contextmanager
from typing import TypeVar

from assembler.errors import Cancelled
from assembler.oci.layer import Layer
from assembler.pipeline.steps.jobs import CompileJob, Executor
from assembler.proc import Runner

T = TypeVar("T")


class Scheduler:
    """``executor`` with ``jobs`` slots, a first error and cancellation (see the module's doc)."""

    def __init__(self, executor: Executor, runner: Runner, *, jobs: int) -> None:
        self.executor = executor
        self.runner = runner
        self.jobs = max(1, jobs)
        self._slots = threading.BoundedSemaphore(self.jobs)
        self._lock = threading.Lock()
        self._failed = threading.Event()
        self._first_error: BaseException | None = None

    def stopping(self) -> bool:
        """Whether the build is being given up (a step failed, or Ctrl-C)."""
        return self._failed.is_set()

    @contextmanager
    def slot(self, what: str) -> Iterator[None]:
        """One of the ``jobs`` slots, for making ``what``; Cancelled once the build is given up."""
        while not self._slots.acquire(timeout=0.2):
            if self._failed.is_set():
                raise Cancelled(f"{what}: not started, the build is stopping")
        try:
            if self._failed.is_set():
                raise Cancelled(f"{what}: not started, the build is stopping")
            yield
        finally:
            self._slots.release()

    def run_compile(self, job: CompileJob) -> dict[str, Layer]:
        """``job`` run by the executor (in a slot the caller holds), stopped when the build is."""
        return self.executor.run_compile(job, stop=self.stopping)

    def give_up(self, error: BaseException) -> None:
        """The first failure stops the build: running programs are killed, no step starts."""
        with self._lock:
            if self._first_error is None:
                self._first_error = error
            self._failed.set()
        self.runner.cancel()

    def side_by_side(self, names: Sequence[str], task: Callable[[str], object], main: Callable[[], T]) -> T:
        """``main()``, while ``task(name)`` runs for each of ``names`` in a thread of its own
        (most of them wait: the slots bound the work); every task finished. The first error
        of any of them (or Ctrl-C) stops the rest and is raised."""
        with ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix="step") as pool:
            futures: list[Future[object]] = [pool.submit(self._task, task, name) for name in names]
            try:
                made = main()
                for future in futures:
                    future.result()
                return made
            except BaseException as e:
                self.give_up(e)
                wait_all(futures)
                first = self._first_error
                if first is not None and first is not e:
                    raise first from None
                raise

    def _task(self, task: Callable[[str], object], name: str) -> object:
        try:
            return task(name)
        except BaseException as e:
            self.give_up(e)
            raise
