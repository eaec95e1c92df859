"""What the commands that look at runs show, as data: the rows of the runs table, of a comparison,
one run's description and the command line that reruns it. `mlproj runs`, `show` and `compare`
print them; any other front end (a web app, a notebook) can use the same rows.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from mlproj.runs.query import differing_keys, group_runs, metric_names
from mlproj.runs.record import Run
from mlproj.util.files import shown_python
from mlproj.util.goals import metric_goal, runs_goal
from mlproj.util.table import cell, render
from mlproj.util.values import flatten_config, render_value

# The metric a run is judged by when its record does not name one (info.benchmark), in order of preference.
BENCHMARK_GUESSES = ("validation.accuracy", "test.accuracy", "validation.loss", "test.loss")


def benchmark_metric(runs: list[Run]) -> str | None:
    """The metric the runs are judged by: the one most of them name in info.benchmark (the model's
    benchmark metric on its evaluation split), else the first of BENCHMARK_GUESSES they logged,
    else the first ranked metric; None when they logged none."""
    named = [run.benchmark["metric"] for run in runs if run.benchmark is not None]
    if named:
        return max(sorted(set(named)), key=named.count)
    logged = metric_names(runs)
    return next((m for m in BENCHMARK_GUESSES if m in logged), next((m for m in logged if metric_goal(m) is not None), None))


def listed_metrics(runs: list[Run]) -> list[str]:
    """The metrics `mlproj runs` lists by default: the benchmark metric and, when that is a validation
    metric and some of the runs logged its test counterpart (a `main.py test` run), that one too, so
    a test run's row holds its result."""
    metric = benchmark_metric(runs)
    if metric is None:
        return []
    split, _, name = metric.partition(".")
    if split == "validation" and f"test.{name}" in metric_names(runs):
        return [metric, f"test.{name}"]
    return [metric]


def is_ranked(runs: list[Run], metric: str) -> bool:
    """Whether `metric` has a better direction for these runs (lr, epoch, ... have none)."""
    return runs_goal(metric, [run.info for run in runs]) is not None


def run_rows(runs: list[Run], all_config: bool = False, metrics: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per run (the `mlproj runs` table): id, (name when names differ), best and last of each
    of `metrics` (default: every metric; best as each run's recorded benchmark says, see
    `mlproj.util.goals`), status, start (UTC), duration, git, (comment), the config keys that differ
    (every key with `all_config`). Values are plain (numbers, datetimes, timedeltas): `util.table` renders them.
    """
    keys = sorted({k for run in runs for k in run.flat_config()}) if all_config else differing_keys(runs)
    names = metric_names(runs) if metrics is None else metrics
    ranked = {name: is_ranked(runs, name) for name in names}
    # Once for the table, not per row: per row it made listing 10,000 runs take minutes.
    named, commented = len({r.name for r in runs}) > 1, any(r.comment for r in runs)
    rows = []
    for run in runs:
        row: dict[str, Any] = {"id": run.id}
        if named:
            row["name"] = run.name
        for name in names:
            summary = run.summary(name)
            if ranked[name]:
                row[f"{name} best"] = summary.best if summary else None
            row[f"{name} last"] = summary.last if summary else None
        row.update({"status": run.shown_status, "start": run.start, "duration": run.duration, "git": run.git})
        if commented:  # Sacred's -c "comment": a column only when some run has one
            row["comment"] = run.comment
        flat = run.flat_config()
        row.update({key: flat.get(key) for key in keys})
        rows.append(row)
    return rows


def config_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """`mlproj compare`'s config table: one row per config key that differs, a column per run."""
    return [{"key": key, **{f"run {r.id}": r.flat_config().get(key) for r in runs}} for key in differing_keys(runs)]


def metric_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """`mlproj compare`'s metrics table: one row per metric, each run's best (its last for unranked ones)."""
    rows = []
    for name in metric_names(runs):
        row: dict[str, Any] = {"metric": name}
        for run in runs:
            s = run.summary(name)
            row[f"run {run.id}"] = None if s is None else s.best if s.best is not None else s.last
        rows.append(row)
    return rows


def group_rows(runs: list[Run], key: str) -> list[dict[str, Any]]:
    """`mlproj compare --group-by KEY`: one row per group of runs that differ only in `key`, with
    each ranked metric's mean ± std over the group (its value alone for a group of one)."""
    rows = []
    ranked = [name for name in metric_names(runs) if is_ranked(runs, name)]  # lr: no mean to take
    for group in group_runs(runs, key):
        row = {**group.values, "runs": " ".join(str(r.id) for r in group.runs), "n": len(group.runs)}
        for name in ranked:
            mean, std, count = group.stats.get(name, (None, None, 0))
            # A group of one has no spread: its value alone (the n column says 1), not "± 0".
            row[name] = None if mean is None else f"{mean:.4g} ± {std:.2g}" if count > 1 else f"{mean:.4g}"
        rows.append(row)
    return rows


def describe(run: Run) -> str:
    """The text `mlproj show` prints for `run`."""
    lines = [f"run {run.id}  {run.name}  {run.shown_status}", ""]
    facts = [
        ("run_key", run.run_key or ""),
        ("folder", run.path or "(MongoDB)"),
        ("started", f"{cell(run.start)} UTC" if run.start else ""),
        ("duration", cell(run.duration)),
        ("git", git_line(run)),
        ("result", cell(run.result)),
        *([("comment", run.comment)] if run.comment else []),
        ("rerun", rerun_command(run)),
    ]
    lines += [f"{key + ':':<10} {value}" for key, value in facts]
    if run.fail_trace:
        lines += ["", "failure:", *("  " + line for line in "".join(run.fail_trace).rstrip().splitlines()[-5:])]
    lines += ["", "config:"]
    lines += ["  " + line for line in render([{"key": k, "value": cell(v)} for k, v in sorted(run.flat_config().items())], "table").splitlines()[1:]]
    summaries = []
    for name in run.metric_names:
        s = run.summary(name)
        if s is not None:
            summaries.append({"metric": name, "best": s.best, "at step": s.best_step, "last": s.last, "at step ": s.last_step, "logged": s.count})
    lines += ["", "metrics:"]
    lines += ["  " + line for line in render(summaries, "table").splitlines()] if summaries else ["  (none logged)"]
    lines += ["", "artifacts:"]
    for name in run.artifacts or []:
        path = os.path.join(run.path, name) if run.path else None
        size = f"{os.path.getsize(path) / 1e6:.2f} MB" if path and os.path.isfile(path) else ""
        lines.append(f"  {name:<12} {size}  {path or ''}".rstrip())
    if not run.artifacts:
        lines.append("  (none)")
    return "\n".join(lines) + "\n"


def git_line(run: Run) -> str:
    """The run's Git pin in words (`mlproj show`'s git line): head, branch, dirty, snapshot and ref, or why it has none."""
    reason = run.missing_pin
    if reason is not None:  # Sacred's HEAD, if it has one, still says which commit the run started from
        head = f"; Sacred recorded HEAD {run.sacred_commit.rstrip('*')}" + (" (dirty)" if run.sacred_commit.endswith("*") else "")
        return f"not pinned: {reason}" + (head if run.sacred_commit else "")
    git = run.info["git"]
    parts = [run.git, f"on {git['branch']}" if git.get("branch") else "", "(dirty)" if git.get("dirty") else ""]
    parts.append(f"snapshot {str(git['snapshot'])[:7]}" + (f" at {git['ref']}" if git.get("ref") else ""))
    return " ".join(p for p in parts if p)


def rerun_command(run: Run) -> str:
    """The command line that runs `run`'s command again with its config updates and its seed, with
    the interpreter running this command (pasted here, it works without an active venv)."""
    mainfile = run.experiment.get("mainfile") or "main.py"
    words = [shown_python(), mainfile, run.command or ""]
    updates = flatten_config(run.meta.get("config_updates") or {})
    if "seed" in run.config:
        updates["seed"] = run.config["seed"]
    named = list(run.meta.get("named_configs") or [])
    if named or updates:
        words += ["with", *named, *(f"{key}={render_value(value)}" for key, value in updates.items())]
    return " ".join(shlex.quote(w) for w in words if w)
