"""The one record of a run, whichever store it came from (a run folder or MongoDB).

Which way is better for a metric is decided by `mlproj.util.goals.goal`: the run's recorded benchmark
(`info.benchmark`, which way is better for the model's benchmark metric) when it names the metric,
else its name: the best value of a loss-like metric (`loss`, `error`, `mse`, ...) is its minimum, of
`lr`/`epoch`/`step`/`time` there is none, and of every other metric (accuracy, f1, ...) its maximum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from mlproj.util.goals import goal, recorded_benchmark
from mlproj.util.series import add_points
from mlproj.util.values import flatten_config


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
    """A recorded run, read from a run folder or a MongoDB `runs` document.

    The small parts of the record (status, config, info, ...) are read at once; the metric series
    and the captured output, which can be large, are read on first use of `metrics` and
    `captured_out` (through `load_metrics` / `load_captured_out`), so listing or matching many
    runs reads only what it looks at. `summaries` (through `load_summaries`) holds each metric's
    count, first, last, min and max (see `mlproj.util.series`): what listing, `summary` and
    `metric_names` read instead of the series.
    """

    id: int | str
    name: str
    status: str
    start: datetime | None  # UTC, as Sacred records it
    stop_time: datetime | None  # None while running, or when the run was killed
    config: dict[str, Any]
    info: dict[str, Any]
    artifacts: list[str]
    result: Any = None
    command: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    experiment: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    resources: list[Any] = field(default_factory=list)
    fail_trace: list[str] | None = None
    heartbeat: datetime | None = None
    path: str | None = None  # the run folder; None for a run read from MongoDB
    load_metrics: Callable[[], dict[str, Series]] = field(default=dict, repr=False, compare=False)
    load_captured_out: Callable[[], str] = field(default=str, repr=False, compare=False)
    load_summaries: Callable[[], dict[str, dict[str, Any]]] | None = field(default=None, repr=False, compare=False)
    _summaries: dict[str, dict[str, Any]] | None = field(default=None, repr=False, compare=False)
    _metrics: dict[str, Series] | None = field(default=None, repr=False, compare=False)
    _captured_out: str | None = field(default=None, repr=False, compare=False)

    @property
    def metrics(self) -> dict[str, Series]:
        """Every metric's series by name, read on first use."""
        if self._metrics is None:
            self._metrics = self.load_metrics()
        return self._metrics

    @property
    def summaries(self) -> dict[str, dict[str, Any]]:
        """Each metric's summary by name (`mlproj.util.series`), read on first use; made from the
        series when the store keeps no summary."""
        if self._summaries is None:
            if self.load_summaries is not None:
                self._summaries = self.load_summaries()
            else:
                self._summaries = {name: add_points(None, s.steps, s.values) or {"count": 0} for name, s in self.metrics.items()}
        return self._summaries

    @property
    def metric_names(self) -> list[str]:
        """The names of the metrics the run logged, sorted."""
        return sorted(self.summaries)

    @property
    def captured_out(self) -> str:
        """The run's captured output (cout.txt), read on first use; `` when none was kept."""
        if self._captured_out is None:
            self._captured_out = self.load_captured_out()
        return self._captured_out

    @property
    def stop(self) -> datetime | None:
        """The stop time, else the last heartbeat (a run still running, or killed)."""
        return self.stop_time or self.heartbeat

    @property
    def shown_status(self) -> str:
        """`status`, except that a RUNNING run whose heartbeat stopped (killed, machine gone) shows
        as PROBABLY_DEAD, as Omniboard shows it. A run killed before its first heartbeat has none:
        its start time is judged instead. A run that `mlproj tune --prune` stopped early shows as
        PRUNED (Sacred records it COMPLETED). The record itself is left as it is."""
        if self.status == "COMPLETED" and (self.info.get("tune") or {}).get("pruned"):
            return "PRUNED"
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
        """The key every mlproj run carries in info.json; it names the run in every store."""
        return self.info.get("run_key")

    @property
    def sweep(self) -> dict[str, Any]:
        """The sweep that started the run ({name, trial, of}); {} when none did."""
        return self.info.get("sweep") or {}

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
        return missing_pin_reason(self.info, self.config)

    @property
    def sacred_commit(self) -> str:
        """The HEAD commit Sacred recorded (short, `*` when dirty): no pin, the changes are lost; `` if none."""
        repositories = self.experiment.get("repositories") or []
        if repositories and repositories[0].get("commit"):
            return str(repositories[0]["commit"])[:7] + ("*" if repositories[0].get("dirty") else "")
        return ""

    def summary(self, metric: str) -> MetricSummary | None:
        """Best and last value of `metric`; None when the run did not log it (or logged no number)."""
        summary = self.summaries.get(metric)
        return best_and_last(metric, summary, self.benchmark) if summary is not None else None

    @property
    def benchmark(self) -> dict[str, Any] | None:
        """The benchmark the run recorded ({metric, lower_is_better}); None for a run that recorded none."""
        return recorded_benchmark(self.info)

    def flat_config(self) -> dict[str, Any]:
        return flatten_config(self.config)


# The start of info.json's `git_error` when the run's folder was in no Git work tree; the writer
# (mlproj.record.gitpin.NOT_IN_REPOSITORY) records it, a test checks the two agree.
NOT_IN_REPOSITORY = "not inside a Git repository"


def missing_pin_reason(info: dict[str, Any], config: dict[str, Any]) -> str | None:
    """Why a run's record holds no pin, in words (None when it has one), from its info and config."""
    git = info.get("git")
    if isinstance(git, dict) and git.get("snapshot"):
        return None
    if "git" not in info:
        if config.get("git_pin") is False:
            return "it ran with git_pin=False"
        return "its record holds no pin (it was not started with mlproj's Git pinning)"
    error = info.get("git_error")
    if not error:
        return "it ran outside a Git repository, or pinning failed when it started"
    if error.startswith(NOT_IN_REPOSITORY):
        return f"it ran outside a Git repository ({error.removeprefix(NOT_IN_REPOSITORY).lstrip(': ')})"
    return f"pinning failed when it started: {error}"


def summarize(name: str, series: Series, benchmark: dict[str, Any] | None = None) -> MetricSummary | None:
    """Best and last value of `series` (None when it holds no finite number); see the module docstring."""
    return best_and_last(name, add_points(None, series.steps, series.values) or {"count": 0}, benchmark)


def best_and_last(name: str, summary: dict[str, Any], benchmark: dict[str, Any] | None = None) -> MetricSummary | None:
    """Best and last value from a series summary (`mlproj.util.series`); None when it counted nothing.
    The best is the summary's min or max, as `goal(name, benchmark)` says (`benchmark`: the run's recorded one)."""
    if not summary.get("count"):
        return None
    better = goal(name, benchmark)
    best, best_step = (summary[better], summary[f"{better}_step"]) if better is not None else (None, None)
    return MetricSummary(best=best, best_step=best_step, last=summary["last"], last_step=summary["last_step"], count=summary["count"])
