"""A sweep as a SLURM job array: the script (`mlproj sweep --slurm FILE`), its submission
(`--submit`, through `sbatch`) and the array's progress (`--status`, from `squeue` and the runs).

Each array task runs the sweep command restricted to its own trial (`--trial $SLURM_ARRAY_TASK_ID`),
so the sweep's skip rule holds inside every task: resubmitting the script runs only the trials
without a COMPLETED run, a task cancelled mid-run included (its run ends INTERRUPTED).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass

from mlproj.errors import MLProjError
from mlproj.runs.record import Run
from mlproj.sweep.spec import Trial

# Lines the script writes itself: an option setting one of them would break the array.
_OWN_OPTIONS = ("--array", "-a", "--job-name", "-J", "--output", "-o")


def check_options(options: list[str]) -> list[str]:
    """`--slurm-option` values, each one sbatch option as `#SBATCH` takes it (`--partition=gpu`).

    Raises:
        MLProjError: an option that is not one `-x`/`--name=value` word, or one the script sets itself.
    """
    for option in options:
        if not re.fullmatch(r"--?[A-Za-z][\w-]*(=\S+)?", option):
            raise MLProjError(f"--slurm-option={option}: give one sbatch option as one word, "
                              "e.g. --slurm-option=--partition=gpu or --slurm-option=--gres=gpu:1")
        if option.split("=", 1)[0] in _OWN_OPTIONS:
            raise MLProjError(f"--slurm-option={option}: the script sets {option.split('=', 1)[0]} itself "
                              "(--jobs J is the array's %J limit, --name the job name)")
    return options


def script_text(name: str, trials: list[Trial], command: list[str], *, throttle: int | None, options: list[str],
                log_dir: str, cwd: str, runs_dir: str) -> str:
    """The job-array script of sweep `name`: one task per trial, at most `throttle` at once, each
    running `command --trial $SLURM_ARRAY_TASK_ID` from `cwd` into `runs_dir` (absolute paths, so
    `sbatch` works from any folder)."""
    done = sum(trial.done_in is not None for trial in trials)
    lines = [
        "#!/bin/bash",
        f"# SLURM job array for sweep {name}: {len(trials)} trials, one per array task ({done} done when written).",
        "# Each task runs the sweep command for its own trial only; a trial that already has a COMPLETED run",
        "# of this sweep is skipped, so resubmitting this script runs only what is missing.",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --array=1-{len(trials)}{f'%{throttle}' if throttle else ''}",
        f"#SBATCH --output={log_dir}/slurm-%A_%a.log",
        *(f"#SBATCH {option}" for option in options),
        "set -euo pipefail",
        f"cd {shlex.quote(cwd)}",
        f"export MLPROJ_RUNS_DIR={shlex.quote(runs_dir)}",
        f'exec {shlex.join(command)} --trial "$SLURM_ARRAY_TASK_ID"',
    ]
    return "\n".join(lines) + "\n"


def submit(script: str) -> str:
    """Submit `script` with `sbatch`; return the job id.

    Raises:
        MLProjError: no `sbatch` here, or sbatch refused the script (its first line of complaint).
    """
    try:
        result = subprocess.run(["sbatch", "--parsable", script], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise MLProjError(f"--submit: no sbatch on this machine: run the command on a SLURM login node, or submit "
                          f"{script} there with `sbatch {script}`") from None
    if result.returncode != 0:
        why = (result.stderr.strip() or result.stdout.strip() or f"exit {result.returncode}").splitlines()[0]
        raise MLProjError(f"--submit: sbatch {script} failed: {why}")
    return result.stdout.strip().split(";")[0]  # --parsable prints "id" or "id;cluster"


def queued_tasks(name: str) -> tuple[dict[int, str] | None, str | None]:
    """The array tasks of job name `name` that SLURM still holds (task id -> PENDING, RUNNING, ...),
    as `squeue` lists them for this user, and None; or None and why SLURM could not be asked (no
    `squeue` here, or it failed, e.g. no controller answers), so the states come from the runs alone."""
    try:
        result = subprocess.run(["squeue", "--me", "--noheader", "--array", f"--name={name}", "--format=%K %T"],
                                capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return None, "no squeue here"
    except subprocess.TimeoutExpired:
        return None, "squeue did not answer in 60 s"
    if result.returncode != 0:
        return None, f"squeue failed: {(result.stderr.strip() or 'no output').splitlines()[0]}"
    tasks = {}
    for line in result.stdout.splitlines():
        task, _, state = line.strip().partition(" ")
        if task.isdigit():
            tasks[int(task)] = state
    return tasks, None


@dataclass
class TrialState:
    """Where one trial of an array stands: `state` as SLURM or the runs say, and its last run."""

    trial: Trial
    state: str
    run_id: int | None


def trial_states(trials: list[Trial], records: list[Run], queued: dict[int, str] | None) -> list[TrialState]:
    """Each trial's state: COMPLETED when a run of it completed, else what squeue says of its task
    (PENDING, RUNNING), else the status of its last run (FAILED, INTERRUPTED), else NOT_RUN."""
    last_run: dict[int, Run] = {}
    for record in sorted(records, key=lambda r: r.id):
        index = (record.sweep or {}).get("trial")
        if isinstance(index, int):
            last_run[index] = record
    states = []
    for trial in trials:
        run = last_run.get(trial.index)
        if trial.done_in is not None:
            states.append(TrialState(trial, "COMPLETED", trial.done_in))
        elif queued and trial.index in queued:
            states.append(TrialState(trial, queued[trial.index], run.id if run else None))
        elif run is not None:
            states.append(TrialState(trial, run.status, run.id))
        else:
            states.append(TrialState(trial, "NOT_RUN", None))
    return states


def default_script(runs_dir: str, name: str) -> str:
    """Where `--submit` writes the script when no `--slurm FILE` is given."""
    return os.path.join(os.path.abspath(os.path.join(runs_dir, "_sweeps", name)), f"{name}.sbatch")
