"""SIGINT and SIGTERM: requests to stop training after the current step (`stop_on_signals`), and
outside training a SIGTERM raised as Ctrl-C's KeyboardInterrupt (`terminate_as_interrupt`).

One rule for both: a SIGTERM never escalates. One stop often reaches a process twice (SLURM's
scancel signals every process of a job, and the `mlproj sweep` that started a run passes the stop
on), and the senders of SIGTERM follow it with SIGKILL when they stop waiting; so after the first
SIGTERM the others are ignored, and a late one cannot end the process (Python's default action)
before Sacred has recorded how the run ended. Only Ctrl-C twice stops at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any


class Terminated(KeyboardInterrupt):
    """A SIGTERM, raised where Ctrl-C raises KeyboardInterrupt (`terminate_as_interrupt`)."""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While in the body, the first SIGTERM (kill, `timeout`, a scheduler) raises `Terminated("SIGTERM")`,
    so the command stops, and is recorded, as Ctrl-C stops it; later ones are ignored (see the
    module). The previous handler is put back after, unless a SIGTERM came in the body (here, or
    to the training loop): the process is ending, and SIGTERM stays ignored."""

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
            signal.signal(signal.SIGTERM, previous)


def is_signal_name(reason: str | None) -> bool:
    """Whether a stop reason names a signal (`SIGINT`, `SIGTERM`)."""
    return reason in ("SIGINT", "SIGTERM")


@contextlib.contextmanager
def stop_on_signals(request_stop: Callable[[str], None], requested: Callable[[], bool]) -> Iterator[None]:
    """While in the body, SIGINT and SIGTERM call `request_stop(<signal name>)`. A second SIGINT,
    when `requested()` says a stop was asked already, stops at once (KeyboardInterrupt): Ctrl-C
    twice. A SIGTERM never does, and once one came, SIGTERM stays ignored after the body (see the
    module); SIGINT gets its previous handler back.

    Outside the main thread (where Python cannot install handlers) the body runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: set[str] = set()

    def handler(signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and requested():
            raise KeyboardInterrupt
        received.add(signal.Signals(signum).name)
        request_stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if "SIGTERM" in received:
            previous[signal.SIGTERM] = signal.SIG_IGN
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
