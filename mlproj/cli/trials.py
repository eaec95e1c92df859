"""What `mlproj sweep` and `mlproj tune` share when they run trials: the devices handed out, each
trial's command line and thread share, Ctrl-C / SIGTERM handling, and the progress lines."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
from collections.abc import Iterator
from typing import Any

from mlproj.errors import MLProjError
from mlproj.sweep.runner import TrialOutcome
from mlproj.sweep.spec import SweepSpec, Trial, describe
from mlproj.train.config import check_device
from mlproj.train.signals import terminate_as_interrupt
from mlproj.util.values import render_value


def add_trial_options(parser: argparse.ArgumentParser, what: str, jobs_default: int | None, axis_example: str) -> None:
    """The spec, `--jobs`, `--devices` and `--name`, as `mlproj sweep` and `mlproj tune` take them; `what`
    is "sweep" or "study", `jobs_default` the default of --jobs (None: 1, and no SLURM throttle),
    `axis_example` an axis of the spec (`key=[a,b]`)."""
    parser.add_argument("spec", nargs="*", metavar="SPEC", help=f"[main.py] [NAMED_CONFIGS] with key=value {axis_example} ...")
    parser.add_argument("--jobs", "-j", type=int, default=jobs_default, metavar="J", help="trials running at once (default 1)")
    parser.add_argument("--devices", metavar="LIST", help="cuda:0,cuda:1 (one trial per GPU; list one twice to share "
                        "it) or cpu; default: every visible GPU, else the trials' own device")
    parser.add_argument("--name", help=f"the {what}'s name, recorded in each run (default: the script's name)")


def checked_name(args: argparse.Namespace, script: str) -> str:
    """`--name`, else the script's name; `MLProjError` when --jobs or the name is unusable."""
    if args.jobs is not None and args.jobs < 1:
        raise MLProjError(f"--jobs {args.jobs}: run at least 1 trial at a time, e.g. --jobs 2")
    name = args.name or os.path.splitext(os.path.basename(script))[0]
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise MLProjError(f"--name {name!r}: use letters, digits, '.', '_' and '-' only")
    return name


def trial_devices(option: str | None, spec: SweepSpec, trials: list[Trial]) -> list[str] | None:
    """The devices to hand out (`--devices`, else every CUDA device for a `device=auto|cuda` config),
    or None when the trials keep the device their config names."""
    in_spec = "device" in spec.fixed or "device" in spec.axes
    if option is None:
        if in_spec or (trials[0].config or {}).get("device") not in ("auto", "cuda"):
            return None
        import torch  # lazy: only a device=auto|cuda sweep counts GPUs; every mlproj command imports this module

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or None
    if in_spec:
        raise MLProjError("device is set in the spec and by --devices: use one of them")
    devices = [device.strip() for device in option.split(",") if device.strip()]
    if not devices or any(device in ("auto", "cuda") for device in devices):
        raise MLProjError(f"--devices {option!r}: list devices by name, e.g. --devices cuda:0,cuda:1 or --devices cpu")
    for device in dict.fromkeys(devices):
        check_device(device)
    return devices


def concurrency(jobs: int, devices: list[str] | None) -> int:
    """How many trials run at once: `jobs`, but at most one per GPU slot of `devices` (a GPU listed
    twice is two slots); with the trials' own device or the CPU, `jobs`."""
    return min(jobs, len(devices)) if devices and "cpu" not in devices else jobs


def at_a_time(running: int, devices: list[str] | None) -> str:
    """"2 at a time on cuda:0,cuda:1", as the sweep's and the study's first line say it."""
    return f"{running} at a time on {','.join(devices) if devices else 'the configured device'}"


def trial_command(python: str, spec: SweepSpec, trial: Trial, device: str | None) -> list[str]:
    """The command line that runs `trial`: the spec's script `with` its named configs and values."""
    updates = [f"{key}={render_value(value)}" for key, value in {**spec.fixed, **trial.params}.items()]
    return [python, spec.script, "with", *spec.named_configs, *updates, *([f"device={device}"] if device else [])]


def thread_share(concurrency: int) -> dict[str, str]:
    """The environment giving each of `concurrency` trials its share of the cores: J processes that
    each start one thread per core would fight over them (nothing when OMP_NUM_THREADS is set)."""
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (len(os.sched_getaffinity(0)) or 1) // concurrency))}


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """SIGTERM stops the trials as Ctrl-C does (`terminate_as_interrupt`: `Terminated`, which the
    runner passes on to the trials as SIGTERM); SIGINT is handled even when the shell started us
    ignoring it (a background job), so the trials do not inherit "ignore". The previous handlers
    are put back after."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with terminate_as_interrupt():
            yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Progress:
    """One line when a trial starts and one when it ends, with the count ended so far out of `total`."""

    def __init__(self, total: int):
        self.total, self.ended_count, self.failed = total, 0, 0

    def started(self, trial: Trial, device: str | None) -> None:
        where = f" on {device}" if device else ""
        print(f"[{self.ended_count}/{self.total}] trial {trial.index} started{where}: {describe(trial.params)}", flush=True)

    def report(self, outcome: TrialOutcome, state: str, run_id: Any, detail: str = "", failed: bool = False) -> None:
        """Print the line of an ended trial: "[3/8] trial 2 COMPLETED in 4.1s: run 7" then `detail`."""
        self.ended_count += 1
        self.failed += failed
        run = f"run {run_id}" if run_id is not None else "no run recorded"
        print(f"[{self.ended_count}/{self.total}] trial {outcome.trial.index} {state} in {outcome.seconds:.1f}s: {run}{detail}", flush=True)

    def ended(self, outcome: TrialOutcome) -> None:
        """A sweep trial's end: COMPLETED, or FAILED with its exit status, last error and log."""
        if outcome.returncode == 0:
            self.report(outcome, "COMPLETED", outcome.run_id)
        else:
            self.report(outcome, f"FAILED (exit {outcome.returncode})", outcome.run_id,
                        f": {outcome.last_error()} (log: {outcome.log})", failed=True)
