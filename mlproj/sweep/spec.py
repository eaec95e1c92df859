"""Sweeps: expand a spec into trials and find the trials already done (`sweep_runner` runs the rest).

A spec is what follows the script on the command line, in Sacred's words:

    digits_mlp with lr=[0.1,0.01] 'batch_size=[64,128]' 'weight_decay=loguniform(1e-5,1e-2)' n_epochs=3

- `key=value`: a fixed value, passed to every trial as written;
- `key=[a,b,c]`: a grid axis (to pass a list as one value, nest it: `layers=[[64,64]]`);
- `key=choice(a,b)`, `uniform(lo,hi)`, `loguniform(lo,hi)`, `randint(lo,hi)` (both ends included):
  a distribution, sampled by random search (`--random N`), where a list counts as `choice`;
- a word without `=`: a named config.

Each trial is one `python main.py with ...` process. Whether a trial is done is decided from the run
records: a COMPLETED run of the same sweep name whose recorded config equals the trial's effective
config (the config Sacred builds for it, asked once per trial before anything runs), leaving out
`seed` and `device` unless the spec sets them. So a killed sweep resumes, an extended grid runs only
its new points, and a changed default in main.py reruns everything.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import re
import runpy
import sys
from dataclasses import dataclass, field
from typing import Any

from mlproj.errors import MLProjError
from mlproj.runs.reader import read_runs
from mlproj.runs.record import Run
from mlproj.train.config import validate_config
from mlproj.util.files import shown_python
from mlproj.util.values import parse_value, render_value

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
SWEEP_ENV = "MLPROJ_SWEEP"  # JSON {name, trial, of}; the experiment copies it into run.info["sweep"]
_CALL = re.compile(r"^([A-Za-z_]\w*)\((.*)\)$", re.DOTALL)


@dataclass(frozen=True)
class Distribution:
    """One random-search axis: `kind` is one of DISTRIBUTIONS, `args` its parsed arguments."""

    kind: str
    args: tuple

    def draw(self, rng: random.Random) -> Any:
        if self.kind == "choice":
            return rng.choice(self.args)
        lo, hi = self.args
        if self.kind == "randint":
            return rng.randint(lo, hi)
        value = rng.uniform(lo, hi) if self.kind == "uniform" else math.exp(rng.uniform(math.log(lo), math.log(hi)))
        return float(f"{value:.4g}")  # 4 significant digits: readable commands and tables


@dataclass
class SweepSpec:
    """A parsed spec (module docstring); `axes` keeps the order the keys were given in."""

    script: str = "main.py"
    named_configs: list[str] = field(default_factory=list)
    fixed: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list | Distribution] = field(default_factory=dict)


@dataclass
class Trial:
    """One point of the sweep: `index` counts from 1; `params` are the values the sweep varies."""

    index: int
    params: dict[str, Any]
    config: dict[str, Any] | None = None  # the effective config, once asked for
    done_in: int | None = None  # the id of a COMPLETED run of it, if any


# ---------------------------------------------------------------------------------------------- spec


def _split_top_level(text: str) -> list[str]:
    """Split on the commas that are outside brackets and quotes."""
    items, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items]


def _parse_axis(key: str, text: str) -> Any:
    """A spec value: a list (grid axis), a distribution, or one value as Sacred reads it."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        if not text[1:-1].strip():
            raise MLProjError(f"{key}=[] is an empty list: give at least one value, e.g. {key}=[0.1,0.01]")
        return [parse_value(item) for item in _split_top_level(text[1:-1])]
    call = _CALL.match(text)
    if call:
        return _parse_distribution(key, call.group(1), call.group(2))
    return parse_value(text)


def _parse_distribution(key: str, kind: str, inner: str) -> Distribution:
    if kind not in DISTRIBUTIONS:
        raise MLProjError(f"{key}={kind}(...) names an unknown distribution: use one of {', '.join(DISTRIBUTIONS)}")
    args = tuple(parse_value(item) for item in _split_top_level(inner)) if inner.strip() else ()
    if kind == "choice":
        if not args:
            raise MLProjError(f"{key}=choice() is empty: give at least one value, e.g. {key}=choice(64,128)")
        return Distribution(kind, args)
    numbers = all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
    if len(args) != 2 or not numbers or not args[0] < args[1]:
        raise MLProjError(f"{key}={kind}({inner}) needs two numbers low < high, e.g. {key}={kind}(1,10)")
    if kind == "loguniform" and args[0] <= 0:
        raise MLProjError(f"{key}=loguniform({inner}) needs 0 < low < high, e.g. {key}=loguniform(1e-4,1e-1)")
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise MLProjError(f"{key}=randint({inner}) needs two integers, e.g. {key}=randint(1,8)")
    return Distribution(kind, args)


def parse_spec(tokens: list[str]) -> SweepSpec:
    """Read `[script.py] [NAMED_CONFIGS] [with] [NAMED_CONFIGS] key=value ...` (module docstring).

    Raises:
        MLProjError: on an empty list, an unknown or malformed distribution, or a key given twice.
    """
    spec = SweepSpec()
    if tokens and tokens[0].endswith(".py"):
        spec.script, tokens = tokens[0], tokens[1:]
    for token in tokens:
        key, sep, text = token.partition("=")
        key = key.strip()
        if token == "with":
            continue
        if not sep:
            spec.named_configs.append(token)
            continue
        if not key:
            raise MLProjError(f"{token!r} has no key: write key=value, e.g. lr=[0.1,0.01]")
        if key in spec.fixed or key in spec.axes:
            raise MLProjError(f"{key} is given twice: give each key once")
        value = _parse_axis(key, text)
        if isinstance(value, (list, Distribution)):
            spec.axes[key] = value
        else:
            spec.fixed[key] = value
    return spec


# ----------------------------------------------------------------------------------------- expanding


def expand(spec: SweepSpec, random_trials: int | None = None, sweep_seed: int = 0, seeds: int | None = None) -> list[Trial]:
    """The trials of `spec`: the grid of its lists, or `random_trials` draws seeded by `sweep_seed`;
    each point repeated with `seed=1..seeds` when `seeds` is given. Repeated points are run once.

    Raises:
        MLProjError: a distribution without `--random`, a count below 1, or `seed` set twice.
    """
    if random_trials is not None and random_trials < 1:
        raise MLProjError(f"--random {random_trials}: draw at least 1 trial")
    if seeds is not None and seeds < 1:
        raise MLProjError(f"--seeds {seeds}: repeat each point with at least 1 seed")
    if seeds is not None and ("seed" in spec.axes or "seed" in spec.fixed):
        raise MLProjError("seed is set in the spec and by --seeds: use one of them")
    if random_trials is None:
        drawn = [key for key, axis in spec.axes.items() if isinstance(axis, Distribution)]
        if drawn:
            raise MLProjError(f"{drawn[0]} has a distribution: sample it with --random N, or give a list for a grid")
        keys = list(spec.axes)
        points = [dict(zip(keys, values, strict=True)) for values in itertools.product(*spec.axes.values())]
    else:
        rng = random.Random(sweep_seed)
        axes = {key: axis if isinstance(axis, Distribution) else Distribution("choice", tuple(axis)) for key, axis in spec.axes.items()}
        points = [{key: axis.draw(rng) for key, axis in axes.items()} for _ in range(random_trials)]
    if seeds is not None:
        points = [{**point, "seed": seed} for point in points for seed in range(1, seeds + 1)]
    unique: dict[str, dict] = {}
    for point in points:
        unique.setdefault(json.dumps(point, sort_keys=True, default=repr), point)
    return [Trial(index, params) for index, params in enumerate(unique.values(), start=1)]


# ------------------------------------------------------------------------------ configs and records


def load_experiment(script: str) -> Any:
    """The Sacred experiment `script` defines, imported without running it."""
    # lazy: Sacred (and numpy), which every mlproj command would import otherwise
    from mlproj.record.experiment import Experiment  # sacred's class, loaded behind mlproj's warning filter

    if not os.path.isfile(script):
        raise MLProjError(f"experiment script {script} not found: name it first, e.g. `mlproj sweep main.py with ...`")
    folder = os.path.dirname(os.path.abspath(script))
    sys.path.insert(0, folder)  # so the script's own imports resolve as when it runs
    try:
        namespace = runpy.run_path(script, run_name="__mlproj_sweep__")
    finally:
        sys.path.remove(folder)
    experiments = [value for value in namespace.values() if isinstance(value, Experiment)]
    if len(experiments) != 1 or experiments[0].default_command is None:
        raise MLProjError(f"{script} must define one Sacred experiment with an @ex.main function to sweep")
    return experiments[0]


def effective_configs(spec: SweepSpec, trials: list[Trial]) -> Any:
    """Fill in each trial's effective config, as Sacred builds it for the trial's command line.
    Returns the experiment `spec.script` defines (`load_experiment`), imported once for all of this.

    Raises:
        MLProjError: an unknown key or named config, or a value the experiment's project class
            refuses (`MLProject.check_config`, the check each trial's run does before it starts).
    """
    experiment = load_experiment(spec.script)
    logging.disable(logging.WARNING)  # Sacred's notes on changed types: the trials themselves log them
    try:
        _fill_configs(experiment, spec, trials)
    finally:
        logging.disable(logging.NOTSET)
    return experiment


def _fill_configs(experiment: Any, spec: SweepSpec, trials: list[Trial]) -> None:
    # lazy: Sacred, as in load_experiment (which has imported it by now)
    # Private (sacred.initialize): the public `Experiment.run` would run the trial; this builds its
    # run and final config only (test_record_sacred_api.py fails if Sacred changes it).
    from sacred.initialize import create_run
    from sacred.serializer import flatten
    from sacred.utils import SacredError, set_by_dotted_path

    from mlproj.record.experiment import one_line_sacred_error

    # An mlproj experiment checks as its runs will (its project class); a plain Sacred one, the machinery keys.
    check_config = getattr(experiment, "check_config", validate_config)

    for trial in trials:
        updates: dict[str, Any] = {}
        for key, value in {**spec.fixed, **trial.params}.items():
            set_by_dotted_path(updates, key, value)
        try:
            run = create_run(experiment, experiment.default_command, config_updates=updates, named_configs=spec.named_configs)
        except SacredError as err:
            raise MLProjError(one_line_sacred_error(err, f"{shown_python()} {spec.script}")) from None
        trial.config = json.loads(json.dumps(flatten(run.config)))
        try:
            check_config(trial.config)
        except MLProjError as err:
            raise MLProjError(f"trial {trial.index} ({describe(trial.params)}): {err}") from None


def recorded_runs(runs_dir: str, name: str) -> list[Run]:
    """The runs under `runs_dir` that sweep `name` started (info.json's `sweep.name`), by id."""
    if not os.path.isdir(runs_dir):
        return []  # a first sweep: nothing recorded yet
    return [run for run in read_runs(runs_dir, summaries=False) if run.sweep.get("name") == name]  # config, status, info only


def ignored_keys(spec: SweepSpec, trials: list[Trial]) -> set[str]:
    """Config keys the skip rule leaves out unless the sweep sets them: a random `seed`, the
    `device` the scheduler picks, and `tensorboard_dir`, whose default follows how the runs dir
    was spelled (relative here, absolute in a SLURM task)."""
    given = set(spec.fixed) | set(spec.axes) | {key for trial in trials for key in trial.params}  # --seeds sets seed
    return {key for key in ("seed", "device", "tensorboard_dir") if key not in given}


def mark_done(trials: list[Trial], runs: list[Run], ignore: set[str]) -> None:
    """Set `done_in` on each trial that has a COMPLETED run with the same effective config."""

    def comparable(config: dict[str, Any]) -> str:
        return json.dumps({k: v for k, v in config.items() if k not in ignore}, sort_keys=True)

    completed = {}
    for run in runs:
        if run.status == "COMPLETED":
            completed.setdefault(comparable(run.config), run.id)
    for trial in trials:
        trial.done_in = completed.get(comparable(trial.config or {}))


def describe(params: dict[str, Any]) -> str:
    return " ".join(f"{key}={render_value(value)}" for key, value in params.items()) or "(base config)"
