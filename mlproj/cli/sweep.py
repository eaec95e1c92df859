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
from mlproj.sweep import slurm
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
from mlproj.util.files import plain_python, shown_python
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
    parser.add_argument("--slurm-option", action="append", default=[], metavar="OPT",
                        help="an sbatch option for the script, as an #SBATCH line (repeatable), "
                        "e.g. --slurm-option=--partition=gpu --slurm-option=--gres=gpu:1 --slurm-option=--time=1:00:00")
    parser.add_argument("--submit", action="store_true", help="write the SLURM script (--slurm FILE, else "
                        "RUNS_DIR/_sweeps/NAME/NAME.sbatch) and submit it with sbatch; prints the job id")
    parser.add_argument("--status", action="store_true", help="each trial's state: COMPLETED, PENDING or RUNNING "
                        "in SLURM (squeue), FAILED, INTERRUPTED, NOT_RUN; runs nothing")
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
    slurm_options = slurm.check_options(args.slurm_option)
    if slurm_options and not (args.slurm or args.submit or args.status):  # --status: the --submit line, edited
        raise MLProjError("--slurm-option goes into a SLURM script: add --slurm FILE or --submit")
    if args.status and (args.slurm or args.submit or args.dry_run):
        raise MLProjError("--status only looks: leave out --slurm, --submit and --dry-run")
    effective_configs(spec, trials)  # every mistake in the spec shows here, before anything runs
    devices = trial_devices(args.devices, spec, trials)
    runs = runs_dir()
    if not args.force:
        mark_done(trials, recorded_runs(runs, name), ignored_keys(spec, trials))
    if args.status:
        return _print_status(name, trials, runs)
    if args.slurm or args.submit:
        return _write_slurm(args, spec, name, trials, runs, slurm_options)
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


def _write_slurm(args: argparse.Namespace, spec: SweepSpec, name: str, trials: list[Trial], runs: str,
                 options: list[str]) -> int:
    """`--slurm FILE` / `--submit`: write the job-array script, and submit it with `--submit`."""
    log_dir = os.path.abspath(os.path.join(runs, "_sweeps", name))
    os.makedirs(log_dir, exist_ok=True)
    flags = ["--name", name, "--sweep-seed", str(args.sweep_seed)]
    for flag, value in (("--random", args.random), ("--seeds", args.seeds), ("--devices", args.devices)):
        if value is not None:
            flags += [flag, str(value)]
    flags += ["--force"] * args.force + ["--minimize"] * args.minimize
    command = [plain_python(), "-m", "mlproj.cli", "sweep", *args.spec, *flags]  # absolute: tasks start elsewhere
    path = args.slurm or slurm.default_script(runs, name)
    text = slurm.script_text(name, trials, command, throttle=args.jobs, options=options, log_dir=log_dir,
                             cwd=os.getcwd(), runs_dir=os.path.abspath(runs))
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    done = sum(trial.done_in is not None for trial in trials)
    if not args.submit:
        print(f"wrote {path}: {len(trials)} array tasks ({done} already done); submit it with `sbatch {path}`")
        return 0
    job = slurm.submit(path)
    print(f"submitted {path} as job {job}: {len(trials)} array tasks ({done} already done, skipped by their task); "
          f"logs in {log_dir}; progress: the same command with --status instead of --submit")
    return 0


def _print_status(name: str, trials: list[Trial], runs: str) -> int:
    """`--status`: one row per trial (its state in SLURM or in the runs, its last run), then the counts."""
    queued, unasked = slurm.queued_tasks(name)
    states = slurm.trial_states(trials, recorded_runs(runs, name), queued)
    keys = list(dict.fromkeys(key for trial in trials for key in trial.params))
    rows = [{"trial": str(s.trial.index), "state": s.state, "run": "-" if s.run_id is None else str(s.run_id),
             **{key: render_value(s.trial.params.get(key)) for key in keys}} for s in states]
    print(render(rows, "table", ["trial", "state", "run", *keys]), end="")
    counts = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    where = f" ({unasked}: states from the runs alone)" if unasked else ""
    print(f"sweep {name}: {len(trials)} trial(s): " + ", ".join(f"{n} {state}" for state, n in counts.items()) + where)
    return 0
