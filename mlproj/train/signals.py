"""SIGINT and SIGTERM as requests to stop training after the current step."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any


def is_signal_name(reason: str | None) -> bool:
    """Whether a stop reason names a signal (`SIGINT`, `SIGTERM`)."""
    return reason in ("SIGINT", "SIGTERM")


@contextlib.contextmanager
def stop_on_signals(request_stop: Callable[[str], None], requested: Callable[[], bool]) -> Iterator[None]:
    """While in the body, SIGINT and SIGTERM call `request_stop(<signal name>)`; a second signal,
    when `requested()` says one came already, stops at once (KeyboardInterrupt).

    Outside the main thread (where Python cannot install handlers) the body runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if requested():
            raise KeyboardInterrupt
        request_stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
