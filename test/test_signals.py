"""SIGINT and SIGTERM while training (mlproj/train/signals.py)."""

from __future__ import annotations

import os
import signal

import pytest

from mlproj.train.signals import Terminated, stop_on_signals, terminate_as_interrupt


def test_stop_on_signals_a_second_ctrl_c_stops_at_once_a_second_sigterm_never_and_sigterm_stays_ignored() -> None:
    # One stop reaching a process twice (scancel signals every process of a job, and the sweep
    # that started it passes the stop on) must stay the orderly stop.
    asked: list[str] = []
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        with stop_on_signals(asked.append, lambda: bool(asked)):
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            assert asked == ["SIGTERM", "SIGTERM"]  # asked twice, never raised
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after a stop was asked: at once
        # The process is ending: a late SIGTERM must not end it before Sacred records how.
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is before[1]

        asked.clear()
        with stop_on_signals(asked.append, lambda: bool(asked)):
            os.kill(os.getpid(), signal.SIGINT)
        assert asked == ["SIGINT"]
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # what it was when the body began
    finally:
        signal.signal(signal.SIGTERM, before[0])
    asked.clear()
    with stop_on_signals(asked.append, lambda: bool(asked)):
        os.kill(os.getpid(), signal.SIGINT)
    assert asked == ["SIGINT"] and signal.getsignal(signal.SIGTERM) is before[0]  # no SIGTERM: all put back


def test_terminate_as_interrupt_raises_once_then_ignores_sigterm() -> None:
    before = signal.getsignal(signal.SIGTERM)
    try:
        with terminate_as_interrupt():
            pass
        assert signal.getsignal(signal.SIGTERM) is before  # no SIGTERM came: put back
        with pytest.raises(Terminated, match="SIGTERM") as raised, terminate_as_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            finally:  # as Sacred records the interrupted run: a late copy must not cut that short
                os.kill(os.getpid(), signal.SIGTERM)
        assert isinstance(raised.value, KeyboardInterrupt)  # stops, and is recorded, as Ctrl-C is
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # the process is ending: nor after it
    finally:
        signal.signal(signal.SIGTERM, before)
