"""Ctrl-C, SIGHUP and SIGTERM reach what the tests start, however the suite was started.

A shell without job control (a script's ``scripts/test &``, ``nohup ... &`` from one) starts
a background program with SIGINT and SIGQUIT ignored, and an ignored signal stays ignored
through fork and exec: pytest, its workers and every ``assemble`` a test starts would ignore
SIGINT, and Python raises no KeyboardInterrupt where SIGINT is ignored at its start. The
tests that press Ctrl-C (``proc.send_signal(SIGINT)``: a build, a job, an sbatch'd step)
then waited 60-120 s for an ``assemble`` that never heard it, and failed; seen in a full
run started that way. So each pytest process takes SIGINT back as a terminal's program has
it, and the programs it starts get the default again (a handled signal is reset at exec).

``nohup`` does the same to SIGHUP, and ``assemble`` keeps a SIGHUP ignored where it was
started (as ``nohup`` asks of it): the tests of a build stopped by SIGHUP then timed out
(seen in a cold ``.ci/run`` started with nohup). Their subject is a terminal's SIGHUP, so
SIGHUP and SIGTERM get their default back here too: what the tests start inherits that.
"""

from __future__ import annotations

import signal

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for stop in (signal.SIGHUP, signal.SIGTERM):
        if signal.getsignal(stop) == signal.SIG_IGN:
            signal.signal(stop, signal.SIG_DFL)
