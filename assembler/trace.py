"""What a run of this process touched, as Python's audit hooks and its stat calls see it:
the files it opened (to read or to write), the folders it listed, the paths it only looked
at (``os.stat``, ``os.lstat``, ``os.access``: an existence test, a program's identity),
whether it started a program, and whether it reached a host before its outputs. ``assemble``'s up-to-date
check (:mod:`assembler.cli.uptodate`) records a build's trace and later compares it with
the files as they are, as make and ninja compare times, but for every path the build's
decision read, found by watching rather than listed by hand (fabricate and memoize.py
trace their commands the same way, through strace).

A trace stops at the first program started (its reads are not visible here), change of
the working folder or host reached in its ``inputs`` phase, and is then ``spoiled``:
nothing of it is used. What a thread does under :func:`housekeeping` is not traced, nor
the import system's bytecode cache (``__pycache__``: a module counts by its source). The
process has one audit hook (one cannot be removed), which returns at once while no trace
runs; ``os.stat`` and its kin are wrapped only while one does.

Nor is a path under ``/proc`` or ``/sys``: the kernel makes those files up as they are
read, with times of its own choosing (a process's ``/proc/self`` files are as new as the
process), so a time says nothing of what one held (the mount table, read by every build
that makes a workspace, always looked changed, and no such build was recorded: issue 70).
What a build decides from one is noted instead as a fact (:func:`learned`: the filesystem
buildah's storage is on, say), which the record keeps and a replay learns again and
compares by value. Code that decides from such a file notes what it learned, or the
replay does not see it change.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

_SPAWNS = frozenset(
    {"subprocess.Popen", "os.posix_spawn", "os.exec", "os.fork", "os.forkpty", "os.system", "pty.spawn"}
)
_WRITES = ("os.remove", "os.rmdir", "os.chmod", "os.chown", "os.truncate", "shutil.rmtree")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# The kernel's own files (see the module's doc): no path identity, a fact instead.
_HOST_STATE = ("/proc", "/sys")
_UNDER_HOST_STATE = tuple(f"{top}/" for top in _HOST_STATE)


_local = threading.local()


class _State:
    def __init__(self) -> None:
        self.active: Trace | None = None
        self.saved: dict[str, Callable[..., Any]] = {}
        self.lock = threading.Lock()


_state = _State()
_hooked = False  # the one audit hook of the process, installed by the first trace


def _depth() -> int:
    depth: int = getattr(_local, "depth", 0)
    return depth


@contextlib.contextmanager
def housekeeping() -> Iterator[None]:
    """What this thread does meanwhile is no input of the run (a cache's sweep of its
    leftover temporary files): not traced."""
    _local.depth = _depth() + 1
    try:
        yield
    finally:
        _local.depth -= 1


def learned(kind: str, subject: str, value: Any) -> None:
    """The running trace's build decided from ``value``, a fact of ``kind`` about
    ``subject`` read where a file's identity says nothing (``/proc``): its record keeps it
    and a replay learns it again by the function the record's table names for ``kind``
    (:data:`assembler.cache.uptodate.FACTS`). ``value`` is what that function returns, as
    JSON holds it (lists, strings, numbers). Nothing without a trace, or under
    :func:`housekeeping`."""
    trace = _state.active
    if trace is not None and not _depth():
        trace.learn(kind, subject, value)


class Trace:
    """One run's trace. :meth:`start` begins it (one at a time in a process); :meth:`stop`
    ends it and gives back ``os.stat`` and its kin."""

    def __init__(self) -> None:
        self.cwd = os.getcwd()
        self.read: set[str] = set()
        self.listed: set[str] = set()
        self.looked: set[str] = set()
        self.written: set[str] = set()
        self.touched: set[str] = set()  # times set (os.utime): a cache's record of use
        self.created: set[str] = set()  # folders the run made (what is in them is the run's)
        self.phase = "inputs"  # a host reached in this phase spoils the trace; "outputs": the outputs'
        self.spoiled: str | None = None
        self.facts: dict[str, dict[str, Any]] = {}  # kind -> subject -> value (learned())

    @property
    def active(self) -> bool:
        return _state.active is self

    def start(self) -> Trace:
        global _hooked
        if _state.active is not None:
            raise RuntimeError("a trace is running in this process already")
        if not _hooked:
            sys.addaudithook(_audit)
            _hooked = True
        _state.active = self
        for name in ("stat", "lstat", "access"):
            _state.saved[name] = original = getattr(os, name)
            setattr(os, name, _looking(original))
        return self

    def stop(self) -> None:
        with _state.lock:  # two threads may spoil it at once
            if _state.active is not self:
                return
            _state.active = None
            for name, original in _state.saved.items():
                setattr(os, name, original)
            _state.saved.clear()

    def enter(self, phase: str) -> None:
        """The run is now in ``phase``: ``inputs`` (a host reached spoils the trace) or
        ``outputs`` (one reached is an output's, which the record checks)."""
        self.phase = phase

    def spoil(self, why: str) -> None:
        """Nothing of this trace is to be used (``why``); it stops."""
        if self.spoiled is None:
            self.spoiled = why
        self.stop()

    def learn(self, kind: str, subject: str, value: Any) -> None:
        """The run decided from ``value``, what it learned of ``subject`` (a ``kind`` of
        fact); learned twice, it is to be the same both times."""
        known = self.facts.setdefault(kind, {})
        if known.setdefault(subject, value) != value:
            self.spoil(f"the {kind} of {subject} changed while it ran")

    def _path(self, path: Any) -> str | None:
        """The absolute path ``path`` names; None for a descriptor or the kernel's files."""
        if isinstance(path, int) or path is None:
            return None  # a file descriptor: its open was seen
        try:
            text = os.fsdecode(path)
        except TypeError:
            return None
        where = os.path.normpath(os.path.join(self.cwd, text))
        if where in _HOST_STATE or where.startswith(_UNDER_HOST_STATE):
            return None  # /proc and /sys: what is decided from them is a fact (learned)
        return where

    def _into(self, paths: set[str], path: Any) -> None:
        where = self._path(path)
        if where is not None:
            paths.add(where)

    def _opened(self, args: tuple[Any, ...]) -> None:
        path, mode, flags = args
        if _bytecode_cache(path) and _by_import_system():
            return  # a module's cached bytecode: the module is recorded by its source file
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE_FLAGS)
        self._into(self.written if writes else self.read, path)

    def _listed(self, args: tuple[Any, ...]) -> None:
        if _by_import_system():
            return  # a folder on sys.path, read to find a module: the modules run are recorded by their files
        self._into(self.listed, "." if args[0] is None else args[0])

    def _made(self, args: tuple[Any, ...]) -> None:
        """``os.mkdir``, seen before it runs: a folder that is there already is not made."""
        where = self._path(args[0])
        if where is not None and os.path.basename(where) == "__pycache__" and _by_import_system():
            return  # the bytecode cache's folder, made by the import system (see _bytecode_cache)
        if where is not None and not os.path.lexists(where):
            self.written.add(where)
            self.created.add(where)

    def _both_written(self, args: tuple[Any, ...]) -> None:  # rename, replace, link: source and target
        if _bytecode_cache(args[1]) and _by_import_system():
            return  # the import system putting a module's bytecode in place
        self._into(self.written, args[0])
        self._into(self.written, args[1])

    def _connected(self, args: tuple[Any, ...]) -> None:
        if self.phase == "inputs":  # one reached while writing the outputs: the replay asks it again
            address = args[1]
            host = address[0] if isinstance(address, tuple) else address
            self.spoil(f"it reached {host} for its inputs (a base, a cache, an index)")


_METADATA = os.path.join("importlib", "metadata", "")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    trace = _state.active
    if trace is None or _depth():
        return
    handle = _HANDLERS.get(event)
    if handle is not None:
        if any(args[i] not in (None, -1) for i in _AT_DIR_FD.get(event, ())):
            trace.spoil(f"it used a folder by its descriptor ({event}): the path it names is not seen")
            return
        handle(trace, args)
    elif event == "tempfile.mkdtemp":
        trace._into(trace.written, args[0])
        trace._into(trace.created, args[0])
    elif event.startswith("tempfile."):
        trace._into(trace.written, args[0])


def _looking(original: Callable[..., Any]) -> Callable[..., Any]:
    """``os.stat`` (or ``lstat``, ``access``), noting the path for the running trace."""

    def looked(path: Any, *args: Any, **kwargs: Any) -> Any:
        trace = _state.active
        if trace is not None and kwargs.get("dir_fd") is None and not _depth():
            trace._into(trace.looked, path)
        return original(path, *args, **kwargs)

    return looked


def _by_import_system() -> bool:
    """Whether the listing or open being made is the import system's: a module's search or
    its bytecode read or written (frozen importlib), or a distribution's search
    (importlib.metadata: pydantic looks for its plugins)."""
    # <- _listed, _opened, _made or _both_written <- _audit <- the caller of os.listdir, open...
    caller = sys._getframe(3).f_code.co_filename
    return caller.startswith("<frozen importlib") or _METADATA in caller


def _bytecode_cache(path: Any) -> bool:
    """Whether ``path`` is in a ``__pycache__`` folder: Python's bytecode cache, which any
    process that imports a module may write at any time (a build starting beside another
    one on a fresh install read a module's .pyc that one wrote a moment before, its change
    time within RACY_NS, and left no record). Python checks a .pyc against its source
    (its time and size, or its hash) before using it, and the source is recorded."""
    try:
        return os.path.basename(os.path.dirname(os.fsdecode(path))) == "__pycache__"
    except TypeError:
        return False


def _spawned(trace: Trace, args: tuple[Any, ...], event: str) -> None:
    trace.spoil(f"it started a program ({event})")


# Where an event's dir_fd is (-1 or None: the path is the cwd's or absolute).
_AT_DIR_FD: dict[str, tuple[int, ...]] = {
    "os.mkdir": (2,),
    "os.rename": (2, 3),  # os.replace's event too
    "os.link": (2, 3),
    "os.symlink": (2,),
    "os.remove": (1,),
    "os.rmdir": (1,),
    "os.utime": (3,),
    "os.chmod": (2,),
    "os.chown": (3,),
    "shutil.rmtree": (1,),
}

_Handler = Callable[[Trace, tuple[Any, ...]], None]
_HANDLERS: dict[str, _Handler] = {
    "open": Trace._opened,
    "os.listdir": Trace._listed,
    "os.scandir": Trace._listed,
    "os.mkdir": Trace._made,
    "os.rename": Trace._both_written,
    "os.link": Trace._both_written,
    "os.symlink": lambda trace, args: trace._into(trace.written, args[1]),
    "os.utime": lambda trace, args: trace._into(trace.touched, args[0]),
    "sqlite3.connect": lambda trace, args: trace._into(trace.read, args[0]),
    "socket.connect": Trace._connected,
    "os.chdir": lambda trace, args: trace.spoil("it changed its working folder"),
    "os.fchdir": lambda trace, args: trace.spoil("it changed its working folder"),
    **{name: (lambda trace, args: trace._into(trace.written, args[0])) for name in _WRITES},
    **{name: functools.partial(_spawned, event=name) for name in _SPAWNS},
}
