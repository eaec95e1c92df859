"""Tuning: an Optuna study whose trials are recorded runs (`mlproj tune`).

The spec is the sweep's (`mlproj.sweep.spec`): fixed `key=value`s, named configs, and axes, where a
distribution (`loguniform(lo,hi)`, `uniform(lo,hi)`, `randint(lo,hi)`, `choice(a,b)`) and a list
(`[a,b]`, a choice) become Optuna distributions. Optuna's TPE sampler proposes each trial's values
(`study.ask`); the trial runs as one `main.py` process recorded like any run, with
`info.tune = {study, trial, params}`; its result (the best benchmark value `train` returns) is
told back (`study.tell`).

The study lives in an Optuna RDB storage: by default an SQLite file under the runs dir, or any
URL Optuna takes, so several machines can work on one study. The tuner records a heartbeat for
each trial it runs, so a trial left RUNNING by a tuner that was killed is found stale (no
heartbeat for the grace, GRACE_S by default) and marked FAILED by a tuner of the study, which
runs its slot again: the next one started, or one still going, which waits while other tuners'
trials run for that reason.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from mlproj.errors import MLProjError
from mlproj.runs.reader import read_run
from mlproj.sweep.spec import Distribution, SweepSpec, Trial, effective_configs
from mlproj.util.goals import benchmark_goal, direction, recorded_benchmark
from mlproj.util.uri import redact_uri, uri_password
from mlproj.util.values import render_value

TUNE_ENV = "MLPROJ_TUNE"  # JSON {study, trial, params}; the experiment copies it into run.info["tune"]
# JSON {storage, n_startup_trials}, for a trial that reports to the study (--prune); the storage
# URL may hold a password, so it travels apart from TUNE_ENV and is kept out of every record.
TUNE_PRUNE_ENV = "MLPROJ_TUNE_PRUNE"
HEARTBEAT_S = 10  # how often the tuner records that its running trials are alive
GRACE_S = 60  # a RUNNING trial without a heartbeat for this long was left by a tuner that died
DIRECTIONS = ("maximize", "minimize")
_OPTUNA_VALUE = (type(None), bool, int, float, str)  # what Optuna's categorical choices may hold


def _optuna() -> Any:
    # lazy: optuna pulls in SQLAlchemy, which `mlproj --help` (every mlproj command imports this module) does not need
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its own lines would interleave ours
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats
    # The tuner beats for its trials itself (Tuner.heartbeat), which Optuna warns about on each ask.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    return optuna


# --------------------------------------------------------------------------------- search space


@dataclass
class SearchSpace:
    """The Optuna distribution of each axis; a choice of values Optuna cannot store (lists) is
    stored as their rendered text and read back through `decode`."""

    distributions: dict[str, Any]
    encoded: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {text: value}

    def decode(self, params: dict[str, Any]) -> dict[str, Any]:
        """The config values of Optuna's `params`, in the spec's order."""
        return {key: self.encoded[key][params[key]] if key in self.encoded else params[key] for key in self.distributions}

    def fingerprint(self) -> dict[str, str]:
        from optuna.distributions import distribution_to_json  # lazy: optuna, as in _optuna

        return {key: distribution_to_json(d) for key, d in self.distributions.items()}


def search_space(spec: SweepSpec) -> SearchSpace:
    """The spec's axes as Optuna distributions (a list axis is a choice, as in random search).

    Raises:
        MLProjError: when the spec has no axis to tune.
    """
    # lazy: optuna, as in _optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not spec.axes:
        raise MLProjError("nothing to tune: give a distribution, e.g. 'lr=loguniform(1e-4,1e-1)'")
    space = SearchSpace({})
    for key, axis in spec.axes.items():
        axis = axis if isinstance(axis, Distribution) else Distribution("choice", tuple(axis))
        if axis.kind == "choice":
            choices = tuple(dict.fromkeys(axis.args, None)) if all(isinstance(a, _OPTUNA_VALUE) for a in axis.args) else None
            if choices is None:
                space.encoded[key] = {render_value(a): a for a in axis.args}
                choices = tuple(space.encoded[key])
            space.distributions[key] = CategoricalDistribution(choices)
        elif axis.kind == "randint":
            space.distributions[key] = IntDistribution(*axis.args)
        else:
            space.distributions[key] = FloatDistribution(*axis.args, log=axis.kind == "loguniform")
    return space


def check_configs(spec: SweepSpec) -> tuple[list[Trial], Any]:
    """Build the effective config of each axis's ends (each choice, low and high) with the other
    axes at their first value, so an unknown key or a value the config check rejects shows before
    any trial runs. Returns those trials, their configs filled in, and the experiment.

    Raises:
        MLProjError: as `effective_configs` does.
    """
    def ends(axis: Any) -> list[Any]:
        return list(axis.args) if isinstance(axis, Distribution) else list(axis)

    first = {key: ends(axis)[0] for key, axis in spec.axes.items()}
    trials = [Trial(1, first)]
    for key, axis in spec.axes.items():
        trials += [Trial(len(trials) + 1, {**first, key: value}) for value in ends(axis)[1:]]
    try:
        experiment = effective_configs(spec, trials)
    except MLProjError as err:  # these trials are ours, not the study's: leave out their made-up index
        raise MLProjError(re.sub(r"^trial \d+ \(.*?\): ", "", str(err))) from None
    return trials, experiment


def default_direction(storage: Any, name: str, experiment: Any, config: dict[str, Any], script: str) -> str:
    """`--direction`'s default: the direction of study `name` when `storage` holds it; for a new
    study, the direction of the model's benchmark (`benchmark_lower_is_better`, the one rule for
    "better", `mlproj.util.goals`): maximize for the built-in classifier (its accuracy) and for a
    plain Sacred experiment (its result is its own); for a `get_model` of the user's, the model that
    `experiment`'s project class builds for `config` (a trial's effective config), on the CPU and
    unrecorded, after `prepare_data` (which may download the data, as the trials would). A trial
    whose run then records the other direction fails, saying which `--direction` to pass (`Tuner`).

    Raises:
        MLProjError: the user's project cannot be built for `config` (one line: fix it, or pass `--direction`).
    """
    from mlproj.train import builtin  # lazy: imports torch, which `mlproj tune --help` does not need

    optuna = _optuna()
    try:
        return optuna.load_study(study_name=name, storage=storage).direction.name.lower()
    except KeyError:  # a new study
        pass
    project_class = getattr(experiment, "project_class", None)
    if project_class is None or project_class.get_model is builtin.get_model:
        return "maximize"
    config = {**config, "device": "cpu", "resume": None}
    try:
        project_class.prepare_data(config)
        model = project_class(config).model
    except Exception as err:  # the user's code: whatever it raises becomes one line, as a trial's failure would
        reason = str(err) if isinstance(err, MLProjError) else f"{type(err).__name__}: {err}"
        raise MLProjError(f"cannot build {script}'s project to read its benchmark's direction ({' '.join(reason.split())}): "
                          "fix it, or pass --direction maximize|minimize") from None
    return direction("min" if model.benchmark_lower_is_better else "max")


# -------------------------------------------------------------------------------------- storage


def default_storage(runs_dir: str, name: str) -> str:
    """The SQLite file of study `name`: `<runs dir>/_tune/<name>.db`."""
    folder = os.path.abspath(os.path.join(runs_dir, "_tune"))
    os.makedirs(folder, exist_ok=True)
    return f"sqlite:///{os.path.join(folder, name + '.db')}"


def open_storage(url: str, grace_s: int = GRACE_S) -> Any:
    """Optuna's RDB storage at `url`, with heartbeats: a RUNNING trial without one for `grace_s`
    seconds is stale (its tuner died).

    Raises:
        MLProjError: one line, the password left out, when the storage cannot be opened; for a
            missing database driver, the `pip install` line of the driver SQLAlchemy asks for.
    """
    optuna = _optuna()
    try:
        return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_s(grace_s), grace_period=grace_s)
    except ImportError as err:
        raise MLProjError(f"--storage {redact_uri(url)}: no database driver for it ({_hide(url, err)}): install "
                          f"{driver_install(url)}") from None
    except Exception as err:  # SQLAlchemy's errors for a bad URL, a server that does not answer, a bad file
        raise MLProjError(f"--storage {redact_uri(url)}: cannot open it: {_hide(url, err)}: check the URL, the server "
                          "and the credentials") from None


def heartbeat_s(grace_s: int) -> int:
    """How often a tuner beats for its trials: every HEARTBEAT_S, and at least 3 times per grace."""
    return max(1, min(HEARTBEAT_S, grace_s // 3))


# The pip package of each DB-API module SQLAlchemy's dialects import (`<dialect>+<driver>://`, or the
# dialect's default driver, which SQLAlchemy's version decides: 2.1 reads postgresql:// as psycopg 3).
_DRIVER_PACKAGES = {"psycopg": '"psycopg[binary]"', "psycopg2": "psycopg2-binary", "pg8000": "pg8000",
                    "asyncpg": "asyncpg", "mysqldb": "mysqlclient", "pymysql": "pymysql", "mysqlconnector":
                    "mysql-connector-python", "mariadbconnector": "mariadb", "pyodbc": "pyodbc", "oracledb": "oracledb",
                    "cx_oracle": "cx_Oracle"}


def driver_install(url: str) -> str:
    """The driver of `url`'s dialect as SQLAlchemy resolves it here, and the command that installs
    it, last (`... pip install "psycopg[binary]"` for postgresql:// under SQLAlchemy 2.1)."""
    from sqlalchemy.engine import make_url  # lazy: SQLAlchemy, as optuna in _optuna

    try:
        dialect = make_url(url).get_dialect()
    except Exception:  # an unknown dialect: Optuna said what it could not import
        return "the driver of your database (SQLAlchemy's documentation lists them by dialect)"
    package = _DRIVER_PACKAGES.get(dialect.driver, dialect.driver)
    return f"{dialect.driver}, the driver SQLAlchemy uses for {dialect.name}://: pip install {package}"


def _hide(url: str, err: BaseException) -> str:
    """`err`'s first line, without the URL's password."""
    text = redact_uri(str(err).splitlines()[0] if str(err) else type(err).__name__)
    password = uri_password(url)
    return text.replace(password, "***") if password else text


def open_study(storage: Any, name: str, direction: str, spec: SweepSpec, space: SearchSpace, seed: int,
               shown_storage: str) -> Any:
    """Create study `name`, or load it when it exists with the same search space and direction.

    The sampler is TPE seeded with `seed` plus the number of trials already in the study, so a
    resumed study does not draw its first trials again.

    Raises:
        MLProjError: the study exists with another search space, base config or direction.
    """
    optuna = _optuna()
    base = {"script": os.path.basename(spec.script), "named_configs": spec.named_configs,
            "fixed": json.loads(json.dumps(spec.fixed, default=repr))}
    study = optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True)
    attrs = study.user_attrs
    if "space" not in attrs:  # a new study: remember what it tunes, to refuse another spec later
        study.set_user_attr("space", space.fingerprint())
        study.set_user_attr("base", base)
        study.set_user_attr("spec", describe_spec(spec))
    elif attrs["space"] != space.fingerprint() or attrs["base"] != base:
        raise MLProjError(
            f"study {name} in {shown_storage} tunes `{attrs.get('spec')}`, not `{describe_spec(spec)}`: "
            "give the study's own spec to continue it, or a new --name for this one"
        )
    if study.direction.name.lower() != direction:
        raise MLProjError(f"study {name} in {shown_storage} is set to {study.direction.name.lower()}, not {direction}: "
                          "pass --direction " + study.direction.name.lower() + " or a new --name")
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


def describe_spec(spec: SweepSpec) -> str:
    """The spec in its command-line words (named configs, fixed values, axes)."""
    def axis_text(axis: Any) -> str:
        if isinstance(axis, Distribution):
            return f"{axis.kind}({','.join(render_value(a) for a in axis.args)})"
        return "[" + ",".join(render_value(a) for a in axis) + "]"

    words = [*spec.named_configs, *(f"{k}={render_value(v)}" for k, v in spec.fixed.items())]
    return " ".join(words + [f"{k}={axis_text(a)}" for k, a in spec.axes.items()])


def fail_stale_trials(study: Any) -> list[int]:
    """Mark FAILED the RUNNING trials whose tuner stopped beating; return their numbers."""
    optuna = _optuna()
    running = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)
    still = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    return sorted(running - still)


# ---------------------------------------------------------------------------------------- trials


@dataclass
class TrialEnd:
    """What a trial's end told the study: its state (COMPLETE, PRUNED, FAIL), value and why it failed."""

    state: str
    value: float | None
    run_id: int | None
    reason: str = ""


class Tuner:
    """Asks the study for trials while it needs them and tells it how each ended.

    It starts at most `budget` trials (the ones missing when it started): a trial that fails is
    not replaced in the same invocation, so a trial that always fails cannot loop; running the
    same command again runs the missing ones.
    """

    def __init__(self, study: Any, storage: Any, spec: SweepSpec, space: SearchSpace, n_trials: int, runs_dir: str, *,
                 prune: dict[str, Any] | None = None):
        self.study, self.spec, self.space, self.n_trials, self.runs_dir = study, spec, space, n_trials, runs_dir
        # Optuna beats only inside study.optimize; with ask/tell the tuner beats itself, through the
        # storage's public calls (`record_heartbeat` takes the storage's id of a trial, not its number).
        self.storage, self._study_id = storage, storage.get_study_id_from_name(study.study_name)
        self._trial_ids: dict[int, int] = {}  # trial number -> the storage's id of it
        self.prune = prune  # {storage, n_startup_trials} with --prune: the trials report to the study
        self.running: dict[int, Any] = {}  # trial number -> optuna Trial
        self.started = 0
        self.budget = max(0, n_trials - self.finished() - self.running_elsewhere())
        self._interval = storage.get_heartbeat_interval() or HEARTBEAT_S
        self._beaten = self._checked = 0.0

    def finished(self) -> int:
        """Trials of the study that count towards N: COMPLETE and PRUNED."""
        states = _optuna().trial.TrialState
        return len(self.study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED)))

    def running_elsewhere(self) -> int:
        """RUNNING trials of the study that another tuner runs (here or on another machine)."""
        running = self.study.get_trials(deepcopy=False, states=(_optuna().trial.TrialState.RUNNING,))
        return len([t for t in running if t.number not in self.running])

    def next_trial(self) -> tuple[Trial, dict[str, str]] | None:
        """The next trial and its environment, or None when enough are finished or running."""
        states = _optuna().trial.TrialState
        busy = len(self.study.get_trials(deepcopy=False, states=(states.RUNNING,)))  # here and elsewhere
        if self.started >= self.budget or self.finished() + busy >= self.n_trials:
            return None
        trial = self.study.ask(self.space.distributions)
        self._beat(trial.number)
        self.running[trial.number] = trial
        self.started += 1
        params = self.space.decode(trial.params)
        env = {TUNE_ENV: json.dumps({"study": self.study.study_name, "trial": trial.number, "params": params})}
        if self.prune:
            env[TUNE_PRUNE_ENV] = json.dumps(self.prune)
        return Trial(trial.number, params), env

    def waiting(self) -> bool:
        """Whether to stay with nothing of ours running: other tuners run trials of a study still
        short of N, and a trial of a tuner that dies is ours to run once it goes stale."""
        return self.finished() < self.n_trials and self.running_elsewhere() > 0

    def take_over_stale(self, now: float) -> list[int]:
        """Every heartbeat interval, mark FAILED the trials whose tuner stopped beating; their slots
        are added to this tuner's budget. Returns their numbers."""
        if now - self._checked < self._interval:
            return []
        self._checked = now
        stale = fail_stale_trials(self.study)
        self.budget += len(stale)
        return stale

    def heartbeat(self, trials: list[Trial], now: float) -> None:
        """Record that the running trials are alive, every heartbeat interval (HEARTBEAT_S at most)."""
        if now - self._beaten < self._interval:
            return
        self._beaten = now
        for trial in trials:
            self._beat(trial.index)

    def _beat(self, number: int) -> None:
        if number not in self._trial_ids:
            self._trial_ids[number] = self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)
        self.storage.record_heartbeat(self._trial_ids[number])

    def ended(self, number: int, returncode: int, run_id: int | None) -> TrialEnd:
        """Tell the study how trial `number` ended, from its exit status and its run's record."""
        states = _optuna().trial.TrialState
        trial = self.running.pop(number)
        if run_id is not None:
            trial.set_user_attr("run_id", run_id)
        end = self._judge(returncode, run_id)
        state = {"COMPLETE": states.COMPLETE, "PRUNED": states.PRUNED, "FAIL": states.FAIL}[end.state]
        self.study.tell(trial, end.value if end.state == "COMPLETE" else None, state=state)
        return end

    def _judge(self, returncode: int, run_id: int | None) -> TrialEnd:
        if returncode != 0:
            return TrialEnd("FAIL", None, run_id, f"exit {returncode}")
        if run_id is None:
            return TrialEnd("FAIL", None, None, "it recorded no run: does the script call ex.run_commandline()?")
        try:
            run = read_run(os.path.join(self.runs_dir, str(run_id)))
        except (OSError, MLProjError) as err:
            return TrialEnd("FAIL", None, run_id, f"its record cannot be read: {err}")
        if (run.info.get("tune") or {}).get("pruned"):
            return TrialEnd("PRUNED", None, run_id)
        recorded, wanted = recorded_benchmark(run.info), self.study.direction.name.lower()
        if recorded is not None and direction(benchmark_goal([run.info])) != wanted:  # the one rule: what the run recorded
            better = "lower" if recorded["lower_is_better"] else "higher"
            return TrialEnd("FAIL", None, run_id, f"its run records that a {better} {recorded['metric']} is better, but "
                            f"the study is set to {wanted}: pass --direction {direction(benchmark_goal([run.info]))} "
                            "with a new --name")
        value = run.result
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return TrialEnd("FAIL", None, run_id, f"its result is {value!r}, not a number: the experiment's main "
                            "function must return the value to optimize (main.py's train returns the best benchmark value)")
        return TrialEnd("COMPLETE", float(value), run_id)

    def abandon(self) -> None:
        """Mark the trials still running FAILED (after Ctrl-C), so the next run of the study redoes them."""
        states = _optuna().trial.TrialState
        for trial in self.running.values():
            self.study.tell(trial, None, state=states.FAIL, skip_if_finished=True)
        self.running.clear()


def trial_rows(study: Any, space: SearchSpace) -> list[dict[str, Any]]:
    """One row per trial of the study: trial, run id, state, value, then the params (numbers as
    numbers, so the table shortens them; other values as the command line writes them)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        params = space.decode(t.params) if set(t.params) == set(space.distributions) else {}
        row = {"trial": t.number, "run": t.user_attrs.get("run_id", "-"), "state": t.state.name,
               "value": "-" if t.value is None else t.value}
        shown = {key: value if isinstance(value, (int, float)) else render_value(value) for key, value in params.items()}
        rows.append({**row, **shown})
    return rows


