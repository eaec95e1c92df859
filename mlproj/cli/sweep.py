"""`mlproj sweep`: run a grid or random search of an experiment, one process per trial, skipping
the trials already done; or print the trials (`--dry-run`), or write a SLURM job array (`--slurm`).

    mlproj sweep main.py digits_mlp with 'lr=[0.1,0.01]' 'batch_size=[64,128]' --jobs 2
    mlproj sweep with dataset=digits 'lr=loguniform(1e-4,1e-1)' --random 8 --seeds 2 --name lr-search
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable

from mlproj.cli.trials import (
    Progress,
    add_trial_options,
    at_a_time,
    checked_name,
    concurrency,
    stopped_by_signals,
    thread_share,
    trial_command,
    trial_devices,
)
from mlproj.errors import MLProjError
from mlproj.sweep.runner import DevicePool, run_trials
from mlproj.sweep.spec import (
    SweepSpec,
    Trial,
    effective_configs,
    expand,
    ignored_keys,
    mark_done,
    parse_spec,
    recorded_runs,
)
from mlproj.train.config import runs_dir
from mlproj.util.files import shown_python
from mlproj.util.goals import benchmark_goal
from mlproj.util.table import render
from mlproj.util.values import render_value

# The command line of a trial on a device (None: the device its config names).
TrialCommand = Callable[[Trial, "str | None"], list[str]]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="run a grid or random search, J trials at a time, skipping trials already done",
        description="Run one `python SCRIPT with ...` process per trial. key=[a,b] is a grid axis; "
        "choice(a,b), uniform(lo,hi), loguniform(lo,hi), randint(lo,hi) are sampled by --random N. "
        "A trial with a COMPLETED run of the same config in this sweep is skipped.",
    )
    parser.add_argument("--random", type=int, metavar="N", help="draw N trials instead of running the grid")
    parser.add_argument("--sweep-seed", type=int, default=0, metavar="S", help="seed of the random draws (default 0)")
    parser.add_argument("--seeds", type=int, metavar="K", help="repeat each point with seed=1..K")
    add_trial_options(parser, "sweep", jobs_default=None, axis_example="key=[a,b]")
    parser.add_argument("--dry-run", action="store_true", help="print one command per trial and run nothing")
    parser.add_argument("--slurm", metavar="FILE", help="write a SLURM job-array script, one trial per task")
    parser.add_argument("--force", action="store_true", help="run every trial, even those already done")
    parser.add_argument("--minimize", action="store_true", help="a lower result is better (for the summary; default: "
                        "the direction of the benchmark the runs recorded, else higher)")
    parser.add_argument("--trial", type=int, metavar="I", help="run trial I only (what each --slurm task does)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    spec = parse_spec(args.spec)
    name = checked_name(args, spec.script)
    trials = expand(spec, args.random, args.sweep_seed, args.seeds)
    if args.trial is not None and not 1 <= args.trial <= len(trials):
        raise MLProjError(f"--trial {args.trial}: this sweep has trials 1..{len(trials)}")
    effective_configs(spec, trials)  # every mistake in the spec shows here, before anything runs
    devices = trial_devices(args.devices, spec, trials)
    runs = runs_dir()
    if not args.force:
        mark_done(trials, recorded_runs(runs, name), ignored_keys(spec, trials))
    if args.slurm:
        return _write_slurm(args, spec, name, trials, runs)
    selected = trials if args.trial is None else [trials[args.trial - 1]]
    pool = DevicePool(devices)

    def command(trial: Trial, device: str | None) -> list[str]:
        return trial_command(sys.executable, spec, trial, device)

    if args.dry_run:
        _print_commands(name, len(trials), selected, command, pool)
        return 0
    return _run_sweep(args, name, trials, selected, command, pool, runs)


def _print_commands(name: str, of: int, selected: list[Trial], command: TrialCommand, pool: DevicePool) -> None:
    """`--dry-run`: one command line per trial, those already done commented out."""
    for trial in selected:
        sweep = json.dumps({"name": name, "of": of, "trial": trial.index}, separators=(",", ":"))
        line = f"MLPROJ_SWEEP={shlex.quote(sweep)} " + shlex.join(_display(command(trial, pool.acquire())))
        pool.busy.clear()
        print(line if trial.done_in is None else f"# done in run {trial.done_in}: {line}")


def _run_sweep(args: argparse.Namespace, name: str, trials: list[Trial], selected: list[Trial], command: TrialCommand,
               pool: DevicePool, runs: str) -> int:
    """Run the trials of `selected` not done yet, J at a time; print the summary; 1 when one failed."""
    jobs, devices = args.jobs or 1, pool.devices
    todo = [trial for trial in selected if trial.done_in is None]
    running = concurrency(jobs, devices)
    print(
        f"sweep {name}: {len(selected)} trial(s), {len(selected) - len(todo)} done already, {len(todo)} to run, "
        f"{at_a_time(running, devices)}; runs in {runs}",
        flush=True,
    )
    if running < jobs:
        print(f"note: --jobs {jobs} but only {running} GPU slot(s): list a GPU twice in --devices to share it")
    keys = list(dict.fromkeys(key for trial in trials for key in trial.params))  # the summary's columns
    progress = Progress(len(todo))
    with stopped_by_signals():  # also while the summary of an interrupted sweep prints
        try:
            outcomes = run_trials(todo, command, jobs, pool, os.path.join(runs, "_sweeps", name),
                                  {"name": name, "of": len(trials)}, progress.started, progress.ended, thread_share(running))
        except KeyboardInterrupt:
            print(f"sweep {name} interrupted: run the same command again to finish the missing trials", flush=True)
            _print_summary(runs, name, keys, args.minimize)
            raise
    _print_summary(runs, name, keys, args.minimize)
    failed = [outcome for outcome in outcomes if outcome.returncode != 0]
    print(f"sweep {name}: {len(outcomes) - len(failed)} completed, {len(failed)} failed, "
          f"{len(selected) - len(todo)} skipped (done before)")
    return 1 if failed else 0


def _display(command: list[str]) -> list[str]:
    """`command` with the interpreter shown relative to here when it lives below."""
    return [shown_python(command[0]), *command[1:]]


def _print_summary(runs: str, name: str, keys: list[str], minimize: bool) -> None:
    """The runs of sweep `name`, best first: completed by result, then the rest by id."""
    # lazy: Sacred (and numpy), which every mlproj command would load otherwise
    from sacred.utils import get_by_dotted_path

    records = recorded_runs(runs, name)
    if not records:
        return
    scored = [r for r in records if r.status == "COMPLETED" and isinstance(r.result, (int, float))]
    # The result is the run's best benchmark value (main.py's train returns it): which way is better
    # is what the runs recorded with it, unless --minimize says lower.
    minimize = minimize or benchmark_goal(r.info for r in records) == "min"
    scored.sort(key=lambda r: r.result if minimize else -r.result)
    rest = [r for r in records if r not in scored]
    rows = []
    for r in scored + rest:
        # Values as the command line writes them (strings left-aligned, as the trials were given).
        result = "-" if r.result is None else render_value(float(f"{r.result:.4g}") if isinstance(r.result, float) else r.result)
        row = {"run": str(r.id), "trial": str(r.sweep.get("trial") or "-"), "status": r.status, "result": result}
        rows.append({**row, **{key: render_value(get_by_dotted_path(r.config, key)) for key in keys}})
    better = "lower" if minimize else "higher"
    print(f"\nsweep {name}: {len(records)} run(s) in {runs}, best first ({better} result is better)")
    print(render(rows, "table", ["run", "trial", "status", "result", *keys]), end="")


def _write_slurm(args: argparse.Namespace, spec: SweepSpec, name: str, trials: list[Trial], runs: str) -> int:
    log_dir = os.path.abspath(os.path.join(runs, "_sweeps", name))
    os.makedirs(log_dir, exist_ok=True)
    options = ["--name", name, "--sweep-seed", str(args.sweep_seed)]
    for flag, value in (("--random", args.random), ("--seeds", args.seeds), ("--devices", args.devices)):
        if value is not None:
            options += [flag, str(value)]
    options += ["--force"] * args.force + ["--minimize"] * args.minimize
    command = shlex.join([sys.executable, "-m", "mlproj.cli", "sweep", *args.spec, *options])
    throttle = f"%{args.jobs}" if args.jobs else ""
    done = sum(trial.done_in is not None for trial in trials)
    script = f"""#!/bin/bash
# SLURM job array for sweep {name}: {len(trials)} trials, one per array task ({done} done when written).
# Each task runs the sweep command for its own trial only; a trial that already has a COMPLETED run
# of this sweep is skipped, so resubmitting this script runs only what is missing.
# Add your cluster's lines here, e.g. #SBATCH --partition=gpu, #SBATCH --gres=gpu:1, #SBATCH --time=02:00:00
#SBATCH --job-name={name}
#SBATCH --array=1-{len(trials)}{throttle}
#SBATCH --output={log_dir}/slurm-%A_%a.log
set -euo pipefail
cd {shlex.quote(os.getcwd())}
export MLPROJ_RUNS_DIR={shlex.quote(os.path.abspath(runs))}
exec {command} --trial "$SLURM_ARRAY_TASK_ID"
"""
    with open(args.slurm, "w") as f:
        f.write(script)
    os.chmod(args.slurm, 0o755)
    print(f"wrote {args.slurm}: {len(trials)} array tasks ({done} already done); submit it with `sbatch {args.slurm}`")
    return 0
