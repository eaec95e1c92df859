"""Running a sweep's trials: one process each, at most J at a time, on devices handed out so that
no two running trials share a GPU unless the device list says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlproj.sweep.spec import SWEEP_ENV, Trial
from mlproj.train.signals import Terminated


class DevicePool:
    """Which device each starting trial gets. A GPU listed once runs one trial at a time (list it
    twice to share it); `cpu` takes any number; no devices means the trials choose their own."""

    def __init__(self, devices: list[str] | None):
        self.devices = devices
        self.busy: list[str] = []

    def available(self) -> bool:
        return self.devices is None or self._free() is not None

    def acquire(self) -> str | None:
        device = None if self.devices is None else self._free()
        if device is not None and device != "cpu":
            self.busy.append(device)
        return device

    def release(self, device: str | None) -> None:
        if device in self.busy:
            self.busy.remove(device)

    def _free(self) -> str | None:
        for device in dict.fromkeys(self.devices or []):
            if device == "cpu" or self.busy.count(device) < self.devices.count(device):
                return device
        return None


@dataclass
class TrialOutcome:
    """How one trial's process ended."""

    trial: Trial
    returncode: int
    seconds: float
    log: str
    device: str | None
    run_id: int | None = None

    def last_error(self) -> str:
        """The last line the trial printed that reads like an error (else its last line)."""
        try:
            with open(self.log, errors="replace") as f:
                lines = [line.strip() for line in f if line.strip()]
        except OSError:
            return ""
        errors = [line for line in lines if "error" in line.lower() or "exception" in line.lower()]
        return (errors or lines or [""])[-1]


def run_trials(
    trials: list[Trial],
    command: Callable[[Trial, str | None], list[str]],
    jobs: int,
    pool: DevicePool,
    log_dir: str,
    sweep: dict[str, Any],
    on_start: Callable[[Trial, str | None], None],
    on_end: Callable[[TrialOutcome], None],
    extra_env: dict[str, str] | None = None,
) -> list[TrialOutcome]:
    """Run `trials`, at most `jobs` processes at a time, each on a device from `pool`.

    `command(trial, device)` is the trial's command line. A process that fails is reported
    through `on_end` like one that succeeds; the rest go on. On KeyboardInterrupt every running
    trial gets SIGINT, or SIGTERM for `Terminated` (Sacred records it INTERRUPTED), and the
    interrupt is raised again.
    """
    pending = deque(trials)

    def next_trial() -> tuple[Trial, dict[str, str]] | None:
        if not pending:
            return None
        trial = pending.popleft()
        return trial, {**(extra_env or {}), SWEEP_ENV: json.dumps({**sweep, "trial": trial.index})}

    return run_processes(next_trial, command, jobs, pool, log_dir, on_start, on_end)


def run_processes(
    next_trial: Callable[[], tuple[Trial, dict[str, str]] | None],
    command: Callable[[Trial, str | None], list[str]],
    jobs: int,
    pool: DevicePool,
    log_dir: str,
    on_start: Callable[[Trial, str | None], None],
    on_end: Callable[[TrialOutcome], None],
    on_poll: Callable[[list[Trial]], None] | None = None,
    waiting: Callable[[], bool] | None = None,
) -> list[TrialOutcome]:
    """`run_trials` for trials made on demand (a tuner asks its sampler for the next one only when
    a slot is free): `next_trial()` gives the next trial and its environment, or None when there
    is none to start now; the runner ends when it gives None and nothing is running, unless
    `waiting()` says to stay (a tuner waits for other tuners' trials, which may go stale). `on_poll`
    sees the running trials about once a second (a tuner's heartbeat), after which `next_trial` is
    asked again."""
    os.makedirs(log_dir, exist_ok=True)
    running: dict[subprocess.Popen, tuple] = {}
    outcomes: list[TrialOutcome] = []
    polled, exhausted = 0.0, False
    try:
        while True:
            while not exhausted and len(running) < jobs and pool.available():
                made = next_trial()
                if made is None:
                    exhausted = True
                    break
                trial, trial_env = made
                on_start(trial, _start(trial, trial_env, command, pool, log_dir, running))
            for process in [p for p in running if p.poll() is not None]:
                trial, device, started, log = running.pop(process)
                pool.release(device)
                outcome = TrialOutcome(trial, process.returncode, time.monotonic() - started, log, device, _run_id(log))
                outcomes.append(outcome)
                on_end(outcome)
                exhausted = False  # a trial ended: the source may have another now
            if exhausted and not running:
                if waiting is None or not waiting():
                    return outcomes
                time.sleep(1.0)
            if on_poll is not None and time.monotonic() - polled >= 1.0:
                on_poll([entry[0] for entry in running.values()])
                polled = time.monotonic()
                exhausted = False  # the poll may have given the source more (a dead tuner's slots)
            time.sleep(0.05)
    except KeyboardInterrupt as stop:
        _interrupt(list(running), signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)
        raise


def _start(trial: Trial, trial_env: dict[str, str], command: Callable, pool: DevicePool, log_dir: str,
           running: dict[subprocess.Popen, tuple]) -> str | None:
    """Start `trial`'s process on a device from `pool`, logging into `log_dir`; return the device."""
    device = pool.acquire()
    log = os.path.join(log_dir, f"trial-{trial.index}.log")
    env = {**os.environ, **trial_env, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:  # the child keeps its own handle
        # A session of its own: a Ctrl-C reaches the sweep only, which forwards it once.
        process = subprocess.Popen(command(trial, device), stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    running[process] = (trial, device, time.monotonic(), log)
    return device


def _run_id(log: str) -> int | None:
    """The run id Sacred announced in the trial's output ("Started run with ID "7"")."""
    try:
        with open(log, errors="replace") as f:
            found = re.search(r'Started run with ID "(\d+)"', f.read())
    except OSError:
        return None
    return int(found.group(1)) if found else None


def _interrupt(processes: list[subprocess.Popen], signum: int, grace_s: float = 30.0) -> None:
    """The stop the runner got (SIGINT for Ctrl-C, SIGTERM) to every running trial: each saves
    last.pt and ends INTERRUPTED. Whatever has not ended after `grace_s`, or when a second Ctrl-C
    cuts the wait short, is killed."""
    for process in processes:
        process.send_signal(signum)
    deadline = time.monotonic() + grace_s
    try:
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
