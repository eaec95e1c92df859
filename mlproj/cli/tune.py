"""`mlproj tune`: an Optuna study of an experiment, one recorded `main.py` run per trial.

    mlproj tune main.py with dataset=digits n_epochs=3 'lr=loguniform(1e-4,1e-1)' 'batch_size=choice(32,64,128)' \
        --trials 20 --jobs 2
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from typing import Any

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
from mlproj.runs.reader import read_json
from mlproj.sweep.runner import DevicePool, TrialOutcome, run_processes
from mlproj.sweep.spec import Trial, describe, parse_spec
from mlproj.sweep.tune import (
    DIRECTIONS,
    GRACE_S,
    Tuner,
    check_configs,
    default_direction,
    default_storage,
    fail_stale_trials,
    open_storage,
    open_study,
    search_space,
    trial_rows,
)
from mlproj.train.config import runs_dir
from mlproj.util.files import shown_python
from mlproj.util.table import render
from mlproj.util.uri import redact_uri


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="tune hyperparameters with Optuna (TPE), one recorded run per trial; resumable",
        description="Run an Optuna study: each trial is one `python SCRIPT with ...` process, recorded like any run. "
        "loguniform(lo,hi), uniform(lo,hi), randint(lo,hi), choice(a,b) and [a,b] are the search space; "
        "running the same command again continues the study until it holds N finished trials.",
    )
    parser.add_argument("--trials", "-n", type=int, required=True, metavar="N", help="finished trials the study should hold")
    add_trial_options(parser, "study", jobs_default=1, axis_example="key=loguniform(a,b)")
    parser.add_argument("--direction", choices=DIRECTIONS, help="default: an existing study's own; for a new one, "
                        "the direction of the model's benchmark (maximize for the built-in model's accuracy and for a "
                        "plain Sacred experiment; a get_model of your own is built once, on the CPU, to read it)")
    parser.add_argument("--storage", metavar="URL", help="an Optuna RDB URL, e.g. postgresql://user:PASSWORD@host/db "
                        "(default: sqlite under RUNS_DIR/_tune/NAME.db)")
    parser.add_argument("--grace", type=int, default=GRACE_S, metavar="S", help="a trial of the study RUNNING "
                        f"without a heartbeat for S seconds was left by a tuner that died: it is run again (default {GRACE_S})")
    parser.add_argument("--prune", action="store_true", help="stop hopeless trials early (Optuna's median pruner)")
    parser.add_argument("--prune-after", type=int, default=5, metavar="K",
                        help="with --prune: prune only once K trials have completed (default 5, Optuna's)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="the TPE sampler's seed (default 0)")
    parser.add_argument("--plot", metavar="DIR", help="write optimization_history.png and param_importances.png into DIR")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.prune_after < 0:
        raise MLProjError(f"--prune-after {args.prune_after}: give 0 or more completed trials, e.g. --prune-after 5")
    if args.grace < 3:
        raise MLProjError(f"--grace {args.grace}: give 3 seconds or more (tuners beat 3 times per grace), e.g. --grace 60")
    if args.trials < 1:
        raise MLProjError(f"--trials {args.trials}: ask for at least 1 trial, e.g. --trials 20")
    spec = parse_spec(args.spec)
    name = checked_name(args, spec.script)
    space = search_space(spec)
    checked, experiment = check_configs(spec)  # every mistake in the spec shows here, before anything runs
    devices = trial_devices(args.devices, spec, checked)
    runs = runs_dir()
    url = args.storage or default_storage(runs, name)
    shown = redact_uri(url)
    storage = open_storage(url, args.grace)
    goal = args.direction or default_direction(storage, name, experiment, checked[0].config, spec.script)
    study = open_study(storage, name, goal, spec, space, args.seed, shown)
    stale = fail_stale_trials(study)
    if stale:
        print(f"tune {name}: trial(s) {', '.join(map(str, stale))} were left running by a tuner that stopped: "
              "marked FAILED, their slots run again", flush=True)
    prune = {"storage": url, "n_startup_trials": args.prune_after} if args.prune else None
    tuner = Tuner(study, storage, spec, space, args.trials, runs, prune=prune)
    pool = DevicePool(devices)
    running = concurrency(args.jobs, devices)
    elsewhere = tuner.running_elsewhere()
    print(f"tune {name}: {args.trials} trial(s) wanted, {tuner.finished()} finished, "
          f"{f'{elsewhere} running in another tuner, ' if elsewhere else ''}{tuner.budget} to run, "
          f"{at_a_time(running, devices)}, "
          f"{study.direction.name.lower()} the result; study in {shown}, runs in {runs}", flush=True)
    failed = _run_study(tuner, spec, args.jobs, pool, os.path.join(runs, "_tune", name), running, name)
    _print_summary(study, space, spec, name)
    if args.plot:
        write_plots(study, args.plot)
    elsewhere = tuner.running_elsewhere()
    if elsewhere:
        print(f"tune {name}: {elsewhere} trial(s) still running in another tuner of this study")
    missing = args.trials - tuner.finished() - elsewhere
    if missing > 0:
        print(f"tune {name}: {missing} trial(s) missing ({failed} failed in this run): run the same command again to run them")
        return 1
    return 0


def _run_study(tuner: Tuner, spec: Any, jobs: int, pool: DevicePool, log_dir: str, concurrency: int, name: str) -> int:
    """Run the tuner's trials; the number that failed. Ctrl-C and SIGTERM end them as `mlproj sweep` does."""
    progress, threads = _StudyProgress(tuner), thread_share(concurrency)

    def next_trial() -> tuple[Trial, dict[str, str]] | None:
        made = tuner.next_trial()
        return None if made is None else (made[0], {**threads, **made[1]})

    def command(trial: Trial, device: str | None) -> list[str]:
        return trial_command(sys.executable, spec, trial, device)

    def on_poll(running: list[Trial]) -> None:
        tuner.heartbeat(running, time.monotonic())
        stale = tuner.take_over_stale(time.monotonic())
        if stale:
            print(f"tune {name}: trial(s) {', '.join(map(str, stale))} of a tuner that stopped beating: marked FAILED, "
                  "their slots run here", flush=True)

    said: list[bool] = []

    def waiting() -> bool:
        wait = tuner.waiting()
        if wait and not said:  # once: a tuner that waits says why it has not ended
            said.append(True)
            print(f"tune {name}: waiting for {tuner.running_elsewhere()} trial(s) of other tuners; a trial whose tuner "
                  "stops beating runs here", flush=True)
        return wait

    with stopped_by_signals():  # also while an interrupted study's trials are abandoned
        try:
            run_processes(next_trial, command, jobs, pool, log_dir, progress.started, progress.ended, on_poll, waiting)
        except KeyboardInterrupt:
            tuner.abandon()
            print(f"tune {name} interrupted: run the same command again to continue the study", flush=True)
            raise
    return progress.failed


class _StudyProgress(Progress):
    """`Progress` whose trials end by telling the study: COMPLETE with its value, PRUNED, or FAIL."""

    def __init__(self, tuner: Tuner):
        super().__init__(tuner.budget)
        self.tuner = tuner

    def ended(self, outcome: TrialOutcome) -> None:
        end = self.tuner.ended(outcome.trial.index, outcome.returncode, outcome.run_id)
        if end.state == "COMPLETE":
            self.report(outcome, end.state, end.run_id, f", value {end.value:.4g}")
        elif end.state == "PRUNED":
            self.report(outcome, end.state, end.run_id)
        else:
            why = outcome.last_error() if outcome.returncode != 0 else end.reason
            self.report(outcome, end.state, end.run_id, f": {why} (log: {outcome.log})", failed=True)


def _print_summary(study: Any, space: Any, spec: Any, name: str) -> None:
    """The study's trials, then its best trial and the command that reruns it."""
    rows = trial_rows(study, space)
    if not rows:
        return
    print(f"\ntune {name}: {len(rows)} trial(s)")
    print(render(rows, "table", ["trial", "run", "state", "value", *space.distributions]), end="")
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        print(f"tune {name}: no trial has completed yet")
        return
    best = study.best_trial
    params = space.decode(best.params)
    print(f"best trial {best.number}: value {best.value:.4g} ({study.direction.name.lower()}), "
          f"run {best.user_attrs.get('run_id', '-')}: {describe(params)}")
    # With this interpreter, as the trials ran: pasted here, it works without an active venv.
    # With the trial's recorded seed, so the rerun reproduces its result (its run drew the seed).
    seed = None if "seed" in {**spec.fixed, **params} else _recorded_seed(best.user_attrs.get("run_id"))
    command = trial_command(shown_python(), spec, Trial(best.number, params), None)
    print(f"rerun it: {shlex.join(command + ([f'seed={seed}'] if seed is not None else []))}")


def _recorded_seed(run_id: Any) -> Any:
    """The seed recorded in the config of run `run_id` of the runs dir, or None."""
    if run_id is None:
        return None
    config = read_json(os.path.join(runs_dir(), str(run_id), "config.json"), {})
    return config.get("seed") if isinstance(config, dict) else None


def write_plots(study: Any, folder: str) -> None:
    """`--plot DIR`: Optuna's optimization history and parameter importances as PNGs."""
    import matplotlib  # lazy: matplotlib and optuna's plots, only --plot draws

    matplotlib.use("Agg")
    import matplotlib.pyplot
    from optuna.visualization import matplotlib as plots

    os.makedirs(folder, exist_ok=True)
    for filename, plot in (("optimization_history.png", plots.plot_optimization_history),
                           ("param_importances.png", plots.plot_param_importances)):
        path = os.path.join(folder, filename)
        try:
            axes = plot(study)
        except (ValueError, RuntimeError) as err:  # e.g. importances need two completed trials
            print(f"--plot: {filename} not written: {err}")
            continue
        axes.figure.savefig(path, bbox_inches="tight", dpi=100)
        matplotlib.pyplot.close(axes.figure)
        print(f"--plot: wrote {path}")
