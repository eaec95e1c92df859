"""SIGINT and SIGTERM: requests to stop training after the current step (`stop_on_signals`);
outside training, a SIGTERM raised as Ctrl-C's KeyboardInterrupt (`terminate_as_interrupt`); and
SIGTERM blocked for the processes Sacred's output capture starts (`hold_sigterm`).

One rule for a SIGTERM that follows another: within `COPY_WINDOW_S` of it, it is a copy of the
same stop, and is ignored. One stop often reaches a process twice, milliseconds apart: SLURM's
scancel and time limit signal every process of a job, and the `mlproj sweep` that started a run
passes its own SIGTERM on. A SIGTERM later than that insists, and stops at once, as a second Ctrl-C
does. When the last stop by SIGTERM came is process-wide, as signals are.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

COPY_WINDOW_S = 2.0  # a SIGTERM this soon after a stop by SIGTERM is a copy of that stop
_sigterm_stop: list[float] = []  # when the last SIGTERM that was not a copy came (time.monotonic)


class Terminated(KeyboardInterrupt):
    """A SIGTERM, raised where Ctrl-C raises KeyboardInterrupt (`terminate_as_interrupt`)."""


def _sigterm_is_a_copy() -> bool:
    """Note a SIGTERM; whether it is a copy of the last stop by SIGTERM (within `COPY_WINDOW_S`)."""
    now = time.monotonic()
    if _sigterm_stop and now - _sigterm_stop[-1] <= COPY_WINDOW_S:
        return True
    _sigterm_stop[:] = [now]
    return False


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # the only one that can set handlers


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """For a command line (a run, a sweep): while in the body, a SIGTERM (kill, `timeout`, a
    scheduler) raises `Terminated("SIGTERM")`, so the command stops, and is recorded, as Ctrl-C
    stops it; a copy of it is ignored (see the module). The previous handler is put back after,
    unless a SIGTERM came: then SIGTERM is ignored from there on. The process is ending, and Python,
    shutting down, gives its signals their default action back, which a copy arriving then would
    take (the process killed, exit status -15, instead of the 130 of an interrupted command)."""
    if not _in_main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if not _sigterm_is_a_copy():
            raise Terminated("SIGTERM")

    entered = time.monotonic()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        stopped = bool(_sigterm_stop) and _sigterm_stop[-1] >= entered  # by a SIGTERM, in the body
        signal.signal(signal.SIGTERM, signal.SIG_IGN if stopped else previous)


def hold_sigterm() -> None:
    """Block SIGTERM in this thread. Processes it starts meanwhile keep it blocked for good:
    `MLProjExperiment` holds it while Sacred starts the `tee` processes of its output capture,
    which a SIGTERM sent to every process of a run (scancel, systemd) would otherwise end before
    the run, whose next line then raised BrokenPipeError (recorded FAILED). They end when the run
    closes their input. This process still gets a SIGTERM: on release, or at once through a thread
    that does not block it (torch's, say)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def release_sigterm() -> None:
    """Unblock SIGTERM in this thread (see `hold_sigterm`); one that waited arrives now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def is_signal_name(reason: str | None) -> bool:
    """Whether a stop reason names a signal (`SIGINT`, `SIGTERM`)."""
    return reason in ("SIGINT", "SIGTERM")


@contextlib.contextmanager
def stop_on_signals(request_stop: Callable[[str], None], requested: Callable[[], bool]) -> Iterator[None]:
    """While in the body, SIGINT and SIGTERM call `request_stop(<signal name>)`. A second signal,
    when `requested()` says a stop was asked already, stops at once (KeyboardInterrupt): Ctrl-C
    twice. A copy of a SIGTERM (see the module) is ignored. The previous handlers are put back after.

    Outside the main thread (where Python cannot install handlers) the body runs unchanged.
    """
    if not _in_main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if signum == signal.SIGTERM and _sigterm_is_a_copy():
            return
        if requested():
            raise KeyboardInterrupt
        request_stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
