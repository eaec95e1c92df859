"""Reading runs back: from a runs dir (Sacred's FileStorageObserver layout) or from MongoDB.

Every run becomes one `Run` record, whichever store it came from; the `mlproj runs`, `show`,
`compare` and `sync` commands work on these records only.

Which way is better for a metric is decided by its name (`mlproj.util.goals.metric_goal`): the best
value of a loss-like metric (`loss`, `error`, `mse`, ...) is its minimum, of `lr`/`epoch`/`step`/`time`
there is none, and of every other metric (accuracy, f1, ...) its maximum.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from mlproj.errors import MLProjError
from mlproj.util.goals import metric_goal


@dataclass
class Series:
    """One metric's measurements, in the order they were logged."""

    steps: list[int]
    values: list[float]
    timestamps: list[datetime] = field(default_factory=list)


@dataclass
class MetricSummary:
    """Best (None for unranked metrics such as lr) and last value of a metric, and how many were logged."""

    best: float | None
    best_step: int | None
    last: float
    last_step: int
    count: int


# Sacred beats every 10 s; a run silent for this long is no longer running.
STALE_HEARTBEAT = timedelta(minutes=2)


@dataclass
class Run:
    """A recorded run, read from a run folder or a MongoDB `runs` document."""

    id: int | str
    name: str
    status: str
    start: datetime | None  # UTC, as Sacred records it
    stop: datetime | None  # stop time, else the last heartbeat
    config: dict[str, Any]
    info: dict[str, Any]
    metrics: dict[str, Series]
    artifacts: list[str]
    result: Any = None
    command: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    experiment: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    captured_out: str = ""
    fail_trace: list[str] | None = None
    heartbeat: datetime | None = None
    path: str | None = None  # the run folder; None for a run read from MongoDB

    @property
    def shown_status(self) -> str:
        """`status`, except that a RUNNING run whose heartbeat stopped (killed, machine gone) shows
        as PROBABLY_DEAD, as Omniboard shows it. A run killed before its first heartbeat has none:
        its start time is judged instead. The record itself is left as it is."""
        last_sign = self.heartbeat or self.start
        if self.status == "RUNNING" and last_sign is not None:
            now = datetime.now(timezone.utc).replace(tzinfo=None)  # Sacred records naive UTC times
            if now - last_sign > STALE_HEARTBEAT:
                return "PROBABLY_DEAD"
        return self.status

    @property
    def comment(self) -> str:
        """Sacred's `-c "comment"` (meta.comment); `` when none was given."""
        return str(self.meta.get("comment") or "")

    @property
    def run_key(self) -> str | None:
        return self.info.get("run_key")

    @property
    def duration(self) -> timedelta | None:
        if self.start is None or self.stop is None:
            return None
        return self.stop - self.start

    @property
    def git(self) -> str:
        """The pinned source: its HEAD's short sha, with `*` when the working tree was dirty (the
        pin holds the changes); `-` when the run has no pin (see `missing_pin`)."""
        git = self.info.get("git")
        if isinstance(git, dict) and git.get("snapshot"):
            return str(git.get("head") or git["snapshot"])[:7] + ("*" if git.get("dirty") else "")
        return "-"

    @property
    def missing_pin(self) -> str | None:
        """Why the run has no source pin, in words; None when it has one."""
        from mlproj.record.gitpin import missing_pin_reason

        return missing_pin_reason(self.info, self.config)

    @property
    def sacred_commit(self) -> str:
        """The HEAD commit Sacred recorded (short, `*` when dirty): no pin, the changes are lost; `` if none."""
        repositories = self.experiment.get("repositories") or []
        if repositories and repositories[0].get("commit"):
            return str(repositories[0]["commit"])[:7] + ("*" if repositories[0].get("dirty") else "")
        return ""

    def summary(self, metric: str) -> MetricSummary | None:
        series = self.metrics.get(metric)
        return summarize(metric, series) if series is not None else None

    def flat_config(self) -> dict[str, Any]:
        return flatten_config(self.config)


def summarize(name: str, series: Series) -> MetricSummary | None:
    """Best and last value of `series` (None when nothing was logged); see the module docstring."""
    points = [(s, v) for s, v in zip(series.steps, series.values, strict=False) if isinstance(v, (int, float)) and math.isfinite(v)]
    if not points:
        return None
    goal = metric_goal(name)
    best_step, best = (None, None)
    if goal is not None:
        best_step, best = (min if goal == "min" else max)(points, key=lambda p: p[1])
    return MetricSummary(best=best, best_step=best_step, last=points[-1][1], last_step=points[-1][0], count=len(points))


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dicts as dotted keys: {"optim": {"lr": 1}} -> {"optim.lr": 1}."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ---------------------------------------------------------------------- reading a runs dir
def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value)
    return None


def _read_json(path: str, default: Any) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except json.JSONDecodeError as err:
        raise MLProjError(f"{path} is not valid JSON ({err}): the run record is damaged; move that run folder away.") from None


def load_run(path: str) -> Run:
    """The run recorded in the folder `path` (its run.json, config.json, info.json, metrics.json).

    Raises:
        MLProjError: when `path` holds no run.json.
    """
    if not os.path.isfile(os.path.join(path, "run.json")):
        raise MLProjError(f"{path} is not a run folder (no run.json in it): pass a folder such as runs/1.")
    record = _read_json(os.path.join(path, "run.json"), {})
    metrics = {
        name: Series(list(m.get("steps", [])), list(m.get("values", [])), [parse_time(t) for t in m.get("timestamps", [])])
        for name, m in _read_json(os.path.join(path, "metrics.json"), {}).items()
    }
    cout = os.path.join(path, "cout.txt")
    folder = os.path.basename(os.path.normpath(path))
    return Run(
        id=int(folder) if folder.isdigit() else folder,
        name=record.get("experiment", {}).get("name", ""),
        status=record.get("status", "UNKNOWN"),
        start=parse_time(record.get("start_time")),
        stop=parse_time(record.get("stop_time")) or parse_time(record.get("heartbeat")),
        config=_read_json(os.path.join(path, "config.json"), {}),
        info=_read_json(os.path.join(path, "info.json"), {}),
        metrics=metrics,
        artifacts=[a if isinstance(a, str) else a.get("name", "") for a in record.get("artifacts", [])],
        result=record.get("result"),
        command=record.get("command", ""),
        meta=record.get("meta", {}),
        experiment=record.get("experiment", {}),
        host=record.get("host", {}),
        captured_out=open(cout, errors="replace").read() if os.path.isfile(cout) else "",
        fail_trace=record.get("fail_trace"),
        heartbeat=parse_time(record.get("heartbeat")),
        path=os.path.abspath(path),
    )


def load_runs(runs_dir: str) -> list[Run]:
    """Every run folder (`<runs_dir>/<integer id>/run.json`) under `runs_dir`, by id.

    Raises:
        MLProjError: when `runs_dir` is not a folder.
    """
    if not os.path.isdir(runs_dir):
        raise MLProjError(f"runs dir {runs_dir} does not exist: pass the folder your runs were recorded in (default $MLPROJ_RUNS_DIR or ./runs).")
    ids = sorted(int(d) for d in os.listdir(runs_dir) if d.isdigit() and os.path.isfile(os.path.join(runs_dir, d, "run.json")))
    return [load_run(os.path.join(runs_dir, str(i))) for i in ids]


# ---------------------------------------------------------------------- reading MongoDB
def hide_password(uri: str) -> str:
    """`uri` with its user and password replaced by `***`, for messages."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    hosts, slash, tail = rest.partition("/")
    if "@" in hosts:
        hosts = "***@" + hosts.rsplit("@", 1)[1]
    return f"{scheme}://{hosts}{slash}{tail}"


# What a MongoDB URI looks like, for the message about a malformed one.
MONGO_URI_FORMS = "mongodb://[USER:PASSWORD@]HOST[:PORT]/DB or mongodb+srv://[USER:PASSWORD@]HOST/DB"


def mongo_database(uri: str, db_name: str | None = None) -> Any:
    """The database `db_name` (default: the one named in `uri`, else `sacred`), checked reachable
    and readable. A `serverSelectionTimeoutMS` in the URI replaces the default wait of 5 s.

    Raises:
        MLProjError: one line, the password hidden, when the URI is malformed, the server does not
            answer, or the database refuses the user.
    """
    import pymongo
    import pymongo.errors
    from pymongo.uri_parser import parse_uri  # not mlproj.record.observers: importing Sacred warns and takes time

    options = {} if "serverselectiontimeoutms" in uri.lower() else {"serverSelectionTimeoutMS": 5000}
    try:
        client = pymongo.MongoClient(uri, **options)
        name = db_name or parse_uri(uri).get("database") or "sacred"
    except (pymongo.errors.InvalidURI, ValueError) as err:  # the text itself, before any network
        raise MLProjError(f"MongoDB URI {hide_password(uri)} is malformed ({_mongo_reason(err, uri)}): write it as {MONGO_URI_FORMS}.") from None
    except pymongo.errors.PyMongoError as err:  # e.g. mongodb+srv:// whose DNS record is missing
        raise MLProjError(f"cannot reach MongoDB at {hide_password(uri)} ({_mongo_reason(err, uri)}): check the URI and that the server runs.") from None
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError as err:
        raise MLProjError(f"cannot reach MongoDB at {hide_password(uri)} ({_mongo_reason(err, uri)}): check the URI and that the server runs.") from None
    try:
        client[name].list_collection_names()  # ping needs no login; reading the database does
    except pymongo.errors.PyMongoError as err:
        raise MLProjError(f"MongoDB at {hide_password(uri)} refuses database {name} ({_mongo_reason(err, uri)}): check the user, password and authSource in the URI.") from None
    return client[name]


def _mongo_reason(err: Exception, uri: str) -> str:
    """pymongo's first clause, without the URI's credentials (pymongo appends its whole topology)."""
    text = str(err).split(", Timeout:")[0].split(" (configured timeouts")[0].replace(uri, hide_password(uri))
    userinfo = uri.partition("://")[2].partition("/")[0].rpartition("@")[0]
    for secret in {userinfo, userinfo.partition(":")[2]} - {""}:
        text = text.replace(secret, "***")
    return text[:160]


def run_from_document(doc: dict[str, Any], metrics: Iterable[dict[str, Any]] = ()) -> Run:
    """A `Run` from a MongoObserver `runs` document and its `metrics` documents."""
    info = dict(doc.get("info") or {})
    return Run(
        id=doc["_id"],
        name=doc.get("experiment", {}).get("name", ""),
        status=doc.get("status", "UNKNOWN"),
        start=parse_time(doc.get("start_time")),
        stop=parse_time(doc.get("stop_time")) or parse_time(doc.get("heartbeat")),
        config=doc.get("config") or {},
        info=info,
        metrics={m["name"]: Series(list(m["steps"]), list(m["values"]), [parse_time(t) for t in m.get("timestamps", [])]) for m in metrics},
        artifacts=[a["name"] if isinstance(a, dict) else str(a) for a in doc.get("artifacts", [])],
        result=doc.get("result"),
        command=doc.get("command", ""),
        meta=doc.get("meta") or {},
        experiment=doc.get("experiment") or {},
        host=doc.get("host") or {},
        captured_out=doc.get("captured_out") or "",
        fail_trace=doc.get("fail_trace"),
        heartbeat=parse_time(doc.get("heartbeat")),
    )


def load_mongo_runs(database: Any) -> list[Run]:
    """Every run in a MongoObserver database (`runs` and `metrics` collections), by id."""
    metrics: dict[Any, list[dict[str, Any]]] = {}
    for m in database["metrics"].find({}):
        metrics.setdefault(m["run_id"], []).append(m)
    docs = sorted(database["runs"].find({}), key=lambda d: (not isinstance(d["_id"], int), str(d["_id"]).zfill(12)))
    return [run_from_document(doc, metrics.get(doc["_id"], [])) for doc in docs]


# ---------------------------------------------------------------------- choosing and ordering
def parse_value(text: str) -> Any:
    """A command-line value as Sacred reads it: JSON/Python literals (0.1, true, None), else the text."""
    lowered = {"true": True, "false": False, "none": None, "null": None}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return json.loads(text)
    except ValueError:
        return text


def _matches(actual: Any, wanted: Any) -> bool:
    if isinstance(actual, (int, float)) and isinstance(wanted, (int, float)) and not isinstance(actual, bool):
        return math.isclose(actual, wanted)
    return actual == wanted or str(actual) == str(wanted)


def filter_runs(runs: list[Run], where: Iterable[str] = (), status: str | None = None) -> list[Run]:
    """The runs whose config has every `key=value` of `where` (dotted keys for nested config) and,
    when given, whose status is `status` (case-insensitive).

    Raises:
        MLProjError: on a `where` item without `=`.
    """
    conditions = []
    for item in where:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MLProjError(f"--where {item!r} is not key=value: write e.g. --where dataset=digits.")
        conditions.append((key.strip(), parse_value(value.strip())))
    chosen = []
    for run in runs:
        flat = run.flat_config()
        if status and status.upper() not in (run.status.upper(), run.shown_status):
            continue
        if all(key in flat and _matches(flat[key], value) for key, value in conditions):
            chosen.append(run)
    return chosen


def sort_runs(runs: list[Run], key: str) -> list[Run]:
    """Best first by metric `key` (its best value, see the module docstring), else by config key or
    column `key` (id, start, duration, status) ascending; runs without the key go last.

    Raises:
        MLProjError: when no run has `key`.
    """

    def metric_value(run: Run) -> float | None:
        summary = run.summary(key)
        return None if summary is None else summary.best if summary.best is not None else summary.last

    columns = {"id": lambda r: r.id, "start": lambda r: r.start, "duration": lambda r: r.duration, "status": lambda r: r.status}
    if any(key in run.metrics for run in runs):
        descending = metric_goal(key) != "min"
        value = metric_value
    elif key in columns:
        descending, value = False, columns[key]
    elif any(key in run.flat_config() for run in runs):
        descending, value = False, lambda r: r.flat_config().get(key)
    else:
        known = sorted({m for run in runs for m in run.metrics})
        raise MLProjError(f"--sort {key}: no run has that metric or config key; metrics are {', '.join(known) or 'none'}.")
    present = [r for r in runs if value(r) is not None]
    missing = [r for r in runs if value(r) is None]
    try:
        present.sort(key=value, reverse=descending)
    except TypeError:
        present.sort(key=lambda r: str(value(r)), reverse=descending)
    return present + missing


def find_run(runs: list[Run], ref: str) -> Run:
    """The run `ref` names: its id, its run_key, or (for a run dir) its folder path.

    Raises:
        MLProjError: when no run matches.
    """
    for run in runs:
        if str(run.id) == ref or run.run_key == ref or (run.path and os.path.abspath(ref) == run.path):
            return run
    ids = ", ".join(str(r.id) for r in runs[-10:]) or "none"
    raise MLProjError(f"no run {ref!r}: pass a run id or run_key (recent ids: {ids}); `mlproj runs` lists them.")


def metric_names(runs: Iterable[Run]) -> list[str]:
    return sorted({name for run in runs for name in run.metrics})


# ---------------------------------------------------------------------- comparing
def differing_keys(runs: list[Run]) -> list[str]:
    """The dotted config keys whose values are not the same in all `runs` (missing counts as a value)."""
    flats = [run.flat_config() for run in runs]
    keys = sorted({key for flat in flats for key in flat})
    return [key for key in keys if len({json.dumps(f[key], sort_keys=True, default=str) if key in f else "<missing>" for f in flats}) > 1]


@dataclass
class Group:
    """Runs that differ only in the group-by key: their shared values and their metrics' mean and std."""

    values: dict[str, Any]  # the shared values of the other differing keys
    runs: list[Run]
    stats: dict[str, tuple[float, float, int]]  # metric -> (mean, std, n) of each run's best (else last)


def group_runs(runs: list[Run], by: str) -> list[Group]:
    """Group runs that differ only in config key `by` (e.g. `seed`), with mean ± std of each metric.

    The std is the sample standard deviation (0 for a group of one).

    Raises:
        MLProjError: when no run has config key `by`.
    """
    if not any(by in run.flat_config() for run in runs):
        raise MLProjError(f"--group-by {by}: no run has that config key; differing keys are {', '.join(differing_keys(runs)) or 'none'}.")
    others = [key for key in differing_keys(runs) if key != by]
    groups: dict[str, Group] = {}
    for run in runs:
        flat = run.flat_config()
        values = {key: flat.get(key) for key in others}
        group = groups.setdefault(json.dumps(values, sort_keys=True, default=str), Group(values, [], {}))
        group.runs.append(run)
    for group in groups.values():
        for name in metric_names(group.runs):
            points = []
            for run in group.runs:
                summary = run.summary(name)
                if summary is not None:
                    points.append(summary.best if summary.best is not None else summary.last)
            if points:
                std = statistics.stdev(points) if len(points) > 1 else 0.0
                group.stats[name] = (statistics.fmean(points), std, len(points))
    return list(groups.values())
