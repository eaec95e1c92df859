"""What `mlproj sweep` and `mlproj tune` share when running trials (mlproj/cli/trials.py)."""

from __future__ import annotations

import os
import signal

import pytest

from mlproj.cli.trials import Progress, stopped_by_signals, thread_share
from mlproj.sweep.runner import TrialOutcome
from mlproj.sweep.spec import Trial
from mlproj.train.signals import Terminated


def test_thread_share_splits_the_cores_and_respects_omp_num_threads(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert thread_share(1) == {"OMP_NUM_THREADS": str(cores)}
    assert thread_share(cores * 4) == {"OMP_NUM_THREADS": "1"}  # never 0 threads
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_share(2) == {}  # the user's setting is passed on as it is


def test_stopped_by_signals_turns_sigterm_into_keyboard_interrupt_and_puts_sigint_back() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell starts a background job
    try:
        with pytest.raises(Terminated), stopped_by_signals():  # a KeyboardInterrupt the runner passes on as SIGTERM
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
            os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # the sweep is ending
    finally:
        signal.signal(signal.SIGINT, before[1])
        signal.signal(signal.SIGTERM, before[0])


def test_progress_counts_ended_trials_and_failures(capsys, tmp_path) -> None:
    (tmp_path / "log4.txt").write_text("loss 2.3\nRuntimeError: diverged\n")
    progress = Progress(2)
    trial = Trial(index=4, params={"lr": 0.1})
    progress.started(trial, "cuda:1")
    progress.ended(TrialOutcome(trial=trial, returncode=0, seconds=1.25, log="log4.txt", device="cuda:1", run_id=7))
    progress.ended(TrialOutcome(trial=trial, returncode=2, seconds=0.5, log=str(tmp_path / "log4.txt"), device=None))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[0/2] trial 4 started on cuda:1: lr=0.1"
    assert lines[1] == "[1/2] trial 4 COMPLETED in 1.2s: run 7"
    assert lines[2].startswith("[2/2] trial 4 FAILED (exit 2) in 0.5s: no run recorded: ")
    assert lines[2].endswith(f"diverged (log: {tmp_path / 'log4.txt'})")
    assert progress.failed == 1

