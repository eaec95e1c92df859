"""SIGINT and SIGTERM while training and around a run (mlproj/train/signals.py)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from mlproj.train import signals
from mlproj.train.signals import Terminated, hold_sigterm, release_sigterm, stop_on_signals, terminate_as_interrupt


def test_stop_on_signals_a_copy_of_a_sigterm_is_ignored_a_later_one_or_a_second_ctrl_c_stops_at_once() -> None:
    asked: list[str] = []
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stop_on_signals(asked.append, lambda: bool(asked)):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # scancel's copy, or the sweep's: the same stop
        assert asked == ["SIGTERM"]
        signals._sigterm_stop[:] = [time.monotonic() - signals.COPY_WINDOW_S - 1]  # the first came a while ago
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)  # insists: at once
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after a stop was asked: at once
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # put back

    asked.clear()
    with stop_on_signals(asked.append, lambda: bool(asked)):
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C twice
    assert asked == ["SIGINT"]


def test_terminate_as_interrupt_raises_once_then_ignores_sigterm() -> None:
    before = signal.getsignal(signal.SIGTERM)
    try:
        with terminate_as_interrupt():
            pass
        assert signal.getsignal(signal.SIGTERM) is before  # no SIGTERM came: put back
        with pytest.raises(Terminated, match="SIGTERM") as raised, terminate_as_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            finally:  # as Sacred records the interrupted run: a copy must not cut that short
                os.kill(os.getpid(), signal.SIGTERM)
                copy_ignored = True
        assert copy_ignored
        assert isinstance(raised.value, KeyboardInterrupt)  # stops, and is recorded, as Ctrl-C is
        # The process is ending (Python, shutting down, would give SIGTERM its default action back).
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


def test_hold_sigterm_what_starts_meanwhile_keeps_it_blocked_for_good(tmp_path) -> None:
    import subprocess

    hold_sigterm()
    try:
        tee = subprocess.Popen(["tee", str(tmp_path / "out")], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    finally:
        release_sigterm()
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set())  # released here
    tee.send_signal(signal.SIGTERM)  # as scancel signals every process of the run
    time.sleep(0.3)
    assert tee.poll() is None  # still there to take the run's last lines
    tee.communicate(b"last line\n", timeout=10)  # it ends when its input closes
    assert tee.returncode == 0 and (tmp_path / "out").read_text() == "last line\n"
