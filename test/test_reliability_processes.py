"""Real processes under stress: kill -9 at random moments, and many runs at once into one runs dir.

The runs are forked from a pre-warmed main.py (see warm_main.py): real, separate processes, really
killed with SIGKILL, without paying torch's import time dozens of times.

kill -9: the record stays parseable, last.pt always loads, `resume` completes the run, and at
most `save_iterations` steps are lost. Concurrent: distinct ids, all COMPLETED, every metric
series complete.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from warm_main import WarmMain

from mlproj.train.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarmMain]:
    process = WarmMain(tmp_path_factory.mktemp("warm") / "unused-runs")
    yield process
    process.close()


N_STEPS = 36  # both tests: steps per run (less than an epoch of digits at batch_size=32)
SAVE_EVERY = 3
TRIALS = 20
ARGS = ["with", "dataset=digits", "model=mlp", "batch_size=32", f"n_global_iterations={N_STEPS}",
        f"save_iterations={SAVE_EVERY}", "log_iteration_scalars=1", "tensorboard_dir=None"]


def _run_folders(runs: Path) -> list[Path]:
    return sorted((p for p in runs.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)) if runs.exists() else []


def _assert_record_parses(runs: Path) -> None:
    for path in runs.rglob("*.json"):
        json.loads(path.read_text())  # a half-written file would raise here


def _steps(progress: Path) -> int:
    """Optimizer steps the run had done (warm_main writes one byte per step)."""
    return progress.stat().st_size if progress.exists() else 0


def _metric_steps(run_dir: Path, name: str) -> list[int]:
    return json.loads((run_dir / "metrics.json").read_text()).get(name, {"steps": []})["steps"]


def _calibrate(warm: WarmMain, args: list[str], tmp_path: Path, env: dict[str, str]) -> tuple[float, float]:
    """One run unkilled, to learn how long a run and its training take (seconds): the kills spread over that."""
    started = time.monotonic()
    progress = tmp_path / "progress-calibration"
    pid = warm.start(*args, log=tmp_path / "calibration.log", progress=progress, env=env)
    while _steps(progress) == 0:
        time.sleep(0.005)
    first_step = time.monotonic()
    assert warm.wait(pid) == 0
    return time.monotonic() - started, time.monotonic() - first_step


@pytest.mark.slow
def test_reliability_kill_9_at_random_moments_loses_at_most_one_save_interval(warm: WarmMain, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    env = {"MLPROJ_RUNS_DIR": str(runs)}
    rng = random.Random(7)
    duration, train_duration = _calibrate(warm, ARGS, tmp_path, env)
    outcomes = {"killed before the first save": 0, "killed and resumed": 0, "finished before the kill": 0}
    for trial in range(TRIALS):
        before = {p.name for p in _run_folders(runs)}
        started = time.monotonic()
        progress = tmp_path / f"progress-{trial}"
        pid = warm.start(*ARGS, log=tmp_path / f"trial-{trial}.log", progress=progress, env=env)
        if trial % 4 == 0:  # anywhere in the run, start-up and record creation included
            time.sleep(rng.uniform(0.0, 1.0) * duration)
        else:  # during training: after the first step, anywhere up to the end
            while _steps(progress) == 0 and time.monotonic() - started < 30:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 1.0) * train_duration)
        os.kill(pid, signal.SIGKILL)  # a zombie that already exited ignores it
        status = warm.wait(pid)
        _assert_record_parses(runs)
        new = [p for p in _run_folders(runs) if p.name not in before]
        if status == 0:
            outcomes["finished before the kill"] += 1
            continue
        assert status == -signal.SIGKILL, (trial, status)
        reached = _steps(progress)
        last = new[0] / "last.pt" if new else None
        if last is None or not last.exists():
            assert reached <= SAVE_EVERY, (trial, reached)  # nothing saved, nothing more than one interval
            outcomes["killed before the first save"] += 1
            continue
        saved_step = load_checkpoint(last)["state"]["global_step"]
        assert 0 <= reached - saved_step <= SAVE_EVERY, (trial, reached, saved_step)
        log = tmp_path / f"resume-{trial}.log"
        assert warm.wait(warm.start(*ARGS, f"resume={new[0]}", log=log, env=env)) == 0, log.read_text()
        resumed = _run_folders(runs)[-1]
        assert json.loads((resumed / "run.json").read_text())["status"] == "COMPLETED"
        assert json.loads((resumed / "info.json").read_text())["resumed_from"]["global_step"] == saved_step
        assert load_checkpoint(resumed / "last.pt")["state"]["global_step"] == N_STEPS
        assert _metric_steps(resumed, "train.loss") == list(range(saved_step + 1, N_STEPS + 1))
        outcomes["killed and resumed"] += 1
    print(f"\n{TRIALS} kill -9 trials over a {duration:.1f} s run: {outcomes}")
    assert outcomes["killed and resumed"] >= TRIALS // 3, outcomes  # the kills mostly hit training


EPOCHS = 4
EPOCH_ARGS = ["with", "dataset=digits", "model=mlp", "batch_size=32", f"n_epochs={EPOCHS}", "log_iteration_scalars=1",
              "tensorboard_dir=None"]  # save_iterations=epoch: last.pt is written while the next epoch trains


@pytest.mark.slow
def test_reliability_kill_9_with_epoch_checkpoints_written_behind_keeps_a_loadable_last_under_two_epochs_back(
        warm: WarmMain, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    env = {"MLPROJ_RUNS_DIR": str(runs)}
    rng = random.Random(11)
    _, train_duration = _calibrate(warm, EPOCH_ARGS, tmp_path, env)
    total = load_checkpoint(_run_folders(runs)[-1] / "last.pt")["state"]["global_step"]
    per_epoch = total // EPOCHS
    resumed_runs = 0
    for trial in range(8):
        before = {p.name for p in _run_folders(runs)}
        progress = tmp_path / f"progress-{trial}"
        pid = warm.start(*EPOCH_ARGS, log=tmp_path / f"trial-{trial}.log", progress=progress, env=env)
        started = time.monotonic()
        while _steps(progress) == 0 and time.monotonic() - started < 30:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 1.0) * train_duration)
        os.kill(pid, signal.SIGKILL)
        status = warm.wait(pid)
        _assert_record_parses(runs)
        if status == 0:
            continue
        reached, (folder,) = _steps(progress), [p for p in _run_folders(runs) if p.name not in before]
        if not (folder / "last.pt").exists():
            assert reached < 2 * per_epoch, (trial, reached)
            continue
        saved = load_checkpoint(folder / "last.pt")["state"]  # never half a file, though written in a thread
        assert saved["epoch_step"] == 0 and saved["global_step"] == saved["epoch"] * per_epoch
        # At most the epoch since the last save and the steps run while that save was being written:
        # the next save waits for the write before it.
        assert 0 <= reached - saved["global_step"] < 2 * per_epoch, (trial, reached, saved)
        log = tmp_path / f"resume-{trial}.log"
        assert warm.wait(warm.start(*EPOCH_ARGS, f"resume={folder}", log=log, env=env)) == 0, log.read_text()
        resumed = _run_folders(runs)[-1]
        assert json.loads((resumed / "run.json").read_text())["status"] == "COMPLETED"
        assert load_checkpoint(resumed / "last.pt")["state"]["global_step"] == total
        assert _metric_steps(resumed, "train.loss") == list(range(saved["global_step"] + 1, total + 1))
        resumed_runs += 1
    assert resumed_runs >= 3  # the kills mostly hit training after a save


N_RUNS = 8


def test_reliability_8_concurrent_runs_get_distinct_ids_and_complete_records(warm: WarmMain, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    env = {"MLPROJ_RUNS_DIR": str(runs)}
    pids = [warm.start(*ARGS, f"seed={i}", log=tmp_path / f"run-{i}.log", env=env) for i in range(N_RUNS)]
    statuses = [warm.wait(pid) for pid in pids]
    assert statuses == [0] * N_RUNS, [(tmp_path / f"run-{i}.log").read_text()[-2000:] for i in range(N_RUNS)]
    folders = sorted(p for p in runs.iterdir() if p.name.isdigit())
    assert sorted(int(p.name) for p in folders) == list(range(1, N_RUNS + 1))
    seeds, keys = set(), set()
    for folder in folders:
        run = json.loads((folder / "run.json").read_text())
        config = json.loads((folder / "config.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        assert run["status"] == "COMPLETED"
        assert metrics["train.loss"]["steps"] == list(range(1, N_STEPS + 1))
        assert metrics["lr"]["steps"] == list(range(1, N_STEPS + 1))
        assert metrics["validation.accuracy"]["steps"] == [N_STEPS]
        checkpoint = load_checkpoint(folder / "last.pt")
        assert checkpoint["state"]["global_step"] == N_STEPS
        assert str(checkpoint["run"]["id"]) == folder.name  # each folder holds its own run's checkpoint
        assert checkpoint["config"]["seed"] == config["seed"]
        seeds.add(config["seed"])
        keys.add(json.loads((folder / "info.json").read_text())["run_key"])
    assert len(seeds) == N_RUNS and len(keys) == N_RUNS
