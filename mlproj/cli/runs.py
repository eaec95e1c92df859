"""`mlproj runs`, `mlproj show`, `mlproj compare` and `mlproj sync`: looking at recorded runs.

Runs come from a runs dir (default `$MLPROJ_RUNS_DIR` or `./runs`) or, with `--mongo URI`, from
MongoDB; see `mlproj.runs.record` for the record and the best-value rule.
"""

from __future__ import annotations

import argparse
import os
import shlex
from typing import Any

from mlproj.errors import MLProjError
from mlproj.runs.mongo import mongo_database, read_mongo_runs
from mlproj.runs.query import differing_keys, filter_runs, find_run, group_runs, metric_names, sort_runs
from mlproj.runs.reader import read_run, read_runs
from mlproj.runs.record import Run
from mlproj.train.config import runs_dir as default_runs_dir
from mlproj.util.files import shown_python
from mlproj.util.goals import metric_goal
from mlproj.util.table import FORMATS, cell, render
from mlproj.util.uri import redact_uri
from mlproj.util.values import flatten_config, render_value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    runs = subparsers.add_parser("runs", help="list runs: config that differs, best and last metrics")
    runs.add_argument("runs_dir", nargs="?", metavar="RUNS_DIR", help="the runs dir (default $MLPROJ_RUNS_DIR or ./runs)")
    _add_source_options(runs, positional_dir=True)
    runs.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    runs.add_argument("--all-config", action="store_true", help="show every config key, not only those that differ")
    runs.add_argument("--metrics", metavar="A,B", help="the metrics to show (best and last), or `all` (default: the runs' "
                      "benchmark metric in table, markdown and html; every metric in csv and json)")
    runs.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="only runs whose config has KEY=VALUE (repeatable)")
    runs.add_argument("--status", help="only runs with this status (COMPLETED, FAILED, INTERRUPTED, RUNNING, PROBABLY_DEAD, PRUNED)")
    runs.add_argument("--sort", metavar="METRIC", help="best first by METRIC (or ascending by a config key, id, start, duration)")
    runs.add_argument("--last", type=int, metavar="N", help="only the N most recent runs")
    runs.set_defaults(func=run_runs)

    show = subparsers.add_parser("show", help="one run: config, git, result, metrics, artifacts, how to rerun it")
    show.add_argument("run", metavar="RUN", help="a run id, run_key, or run folder")
    _add_source_options(show)
    show.set_defaults(func=run_show)

    compare = subparsers.add_parser("compare", help="runs side by side: config diff, metrics, mean ± std over a key")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="two or more run ids, run_keys or run folders")
    _add_source_options(compare)
    compare.add_argument("--group-by", metavar="KEY", help="mean ± std over runs that differ only in config KEY (e.g. seed)")
    compare.add_argument("--plot", metavar="FILE.png", help="draw the curves of --metric into this PNG")
    compare.add_argument("--metric", metavar="NAME", help="the metric --plot draws (e.g. validation.accuracy)")
    compare.add_argument("--format", choices=FORMATS, default="table", help="output format of the tables (default table)")
    compare.set_defaults(func=run_compare)

    sync = subparsers.add_parser("sync", help="copy file-storage runs into MongoDB (Omniboard's layout)")
    sync.add_argument("runs_dir", metavar="RUNS_DIR", help="the runs dir to copy")
    sync.add_argument("--mongo", required=True, metavar="URI", help="MongoDB URI, e.g. mongodb://localhost:27017/sacred")
    sync.add_argument("--db", metavar="NAME", help="database (default: the one in the URI, else sacred)")
    sync.set_defaults(func=run_sync)

    check = subparsers.add_parser("check-mongo", help="check that MongoDB answers and its database is readable")
    check.add_argument("--mongo", metavar="URI", default=os.environ.get("MONGODB_URI"), help="MongoDB URI (default $MONGODB_URI)")
    check.add_argument("--db", metavar="NAME", help="database (default: the one in the URI, else sacred)")
    check.set_defaults(func=run_check_mongo)


def _add_source_options(parser: argparse.ArgumentParser, positional_dir: bool = False) -> None:
    if not positional_dir:
        parser.add_argument("--runs-dir", metavar="DIR", help="the runs dir (default $MLPROJ_RUNS_DIR or ./runs)")
    parser.add_argument("--mongo", metavar="URI", help="read the runs from MongoDB instead of a runs dir")
    parser.add_argument("--db", metavar="NAME", help="MongoDB database (default: the one in the URI, else sacred)")


def _load(args: argparse.Namespace) -> list[Run]:
    if args.mongo:
        return read_mongo_runs(mongo_database(args.mongo, args.db))
    return read_runs(args.runs_dir or default_runs_dir())


def _pick(args: argparse.Namespace, refs: list[str]) -> list[Run]:
    """The runs `refs` name. A run folder, or an id in the runs dir, is read alone; only a run_key
    (or a MongoDB id) needs the list of runs."""
    runs_dir = args.runs_dir or default_runs_dir()
    folders: dict[str, str] = {}
    for ref in refs if not args.mongo else []:
        found = [f for f in (ref, os.path.join(runs_dir, ref)) if os.path.isfile(os.path.join(f, "run.json"))]
        if found:
            folders[ref] = found[0]
    all_runs = _load(args) if len(folders) < len(refs) else []
    return [read_run(folders[ref]) if ref in folders else find_run(all_runs, ref) for ref in refs]


# ---------------------------------------------------------------------- mlproj runs
def run_runs(args: argparse.Namespace) -> int:
    if args.last is not None and args.last < 1:
        raise MLProjError(f"--last {args.last}: give a number of runs >= 1.")
    runs = filter_runs(_load(args), args.where, args.status)
    if args.last:
        runs = runs[-args.last :]
    if args.sort:
        runs = sort_runs(runs, args.sort)
    if not runs:
        source = redact_uri(args.mongo) if args.mongo else args.runs_dir or default_runs_dir()
        print(f"no runs in {source}" + (" match" if args.where or args.status else ""))
        return 0
    names = _listed_metrics(runs, args.metrics, every=args.format in ("csv", "json"))
    print(render(run_rows(runs, args.all_config, names), args.format, max_width=CELL_WIDTH), end="")
    return 0


# A table cell longer than this is cut with an ellipsis, so the table fits a terminal (csv and json keep it whole).
CELL_WIDTH = 24

# The metric a run is judged by when its record does not name one (info.benchmark), in order of preference.
BENCHMARK_GUESSES = ("validation.accuracy", "test.accuracy", "validation.loss", "test.loss")


def benchmark_metric(runs: list[Run]) -> str | None:
    """The metric the runs are judged by: the one most of them name in info.benchmark (the model's
    benchmark metric on its evaluation split), else the first of BENCHMARK_GUESSES they logged,
    else the first ranked metric; None when they logged none."""
    named = [b["metric"] for r in runs if isinstance(b := r.info.get("benchmark"), dict) and b.get("metric")]
    if named:
        return max(sorted(set(named)), key=named.count)
    logged = metric_names(runs)
    return next((m for m in BENCHMARK_GUESSES if m in logged), next((m for m in logged if metric_goal(m) is not None), None))


def _listed_metrics(runs: list[Run], option: str | None, every: bool) -> list[str]:
    if option == "all" or (option is None and every):
        return metric_names(runs)
    if option is None:
        return [m for m in [benchmark_metric(runs)] if m]
    names = [m.strip() for m in option.split(",") if m.strip()]
    logged = set(metric_names(runs))
    unknown = [m for m in names if m not in logged]
    if unknown:
        raise MLProjError(f"--metrics {option}: no run logged {', '.join(unknown)}; they logged {', '.join(sorted(logged)) or 'nothing'} (or pass `all`).")
    return names


def run_rows(runs: list[Run], all_config: bool = False, metrics: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per run: id, (name when names differ), best and last of each of `metrics` (default:
    every metric), status, start (UTC), duration, git, (comment), the config keys that differ
    (every key with `all_config`)."""
    keys = sorted({k for run in runs for k in run.flat_config()}) if all_config else differing_keys(runs)
    names = metric_names(runs) if metrics is None else metrics
    rows = []
    for run in runs:
        row: dict[str, Any] = {"id": run.id}
        if len({r.name for r in runs}) > 1:
            row["name"] = run.name
        for name in names:
            summary = run.summary(name)
            if metric_goal(name) is not None:
                row[f"{name} best"] = summary.best if summary else None
            row[f"{name} last"] = summary.last if summary else None
        row.update({"status": run.shown_status, "start": run.start, "duration": run.duration, "git": run.git})
        if any(r.comment for r in runs):  # Sacred's -c "comment": a column only when some run has one
            row["comment"] = run.comment
        flat = run.flat_config()
        row.update({key: flat.get(key) for key in keys})
        rows.append(row)
    return rows


# ---------------------------------------------------------------------- mlproj show
def run_show(args: argparse.Namespace) -> int:
    (run,) = _pick(args, [args.run])
    print(describe(run), end="")
    return 0


def describe(run: Run) -> str:
    """The text `mlproj show` prints for `run`."""
    lines = [f"run {run.id}  {run.name}  {run.shown_status}", ""]
    facts = [
        ("run_key", run.run_key or ""),
        ("folder", run.path or "(MongoDB)"),
        ("started", f"{cell(run.start)} UTC" if run.start else ""),
        ("duration", cell(run.duration)),
        ("git", _git_line(run)),
        ("result", cell(run.result)),
        *([("comment", run.comment)] if run.comment else []),
        ("rerun", rerun_command(run)),
    ]
    lines += [f"{key + ':':<10} {value}" for key, value in facts]
    if run.fail_trace:
        lines += ["", "failure:", *("  " + line for line in "".join(run.fail_trace).rstrip().splitlines()[-5:])]
    lines += ["", "config:"]
    lines += ["  " + line for line in render([{"key": k, "value": cell(v)} for k, v in sorted(run.flat_config().items())], "table").splitlines()[1:]]
    metric_rows = []
    for name in run.metric_names:
        s = run.summary(name)
        if s is not None:
            metric_rows.append({"metric": name, "best": s.best, "at step": s.best_step, "last": s.last, "at step ": s.last_step, "logged": s.count})
    lines += ["", "metrics:"]
    lines += ["  " + line for line in render(metric_rows, "table").splitlines()] if metric_rows else ["  (none logged)"]
    lines += ["", "artifacts:"]
    for name in run.artifacts or []:
        path = os.path.join(run.path, name) if run.path else None
        size = f"{os.path.getsize(path) / 1e6:.2f} MB" if path and os.path.isfile(path) else ""
        lines.append(f"  {name:<12} {size}  {path or ''}".rstrip())
    if not run.artifacts:
        lines.append("  (none)")
    return "\n".join(lines) + "\n"


def _git_line(run: Run) -> str:
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


# ---------------------------------------------------------------------- mlproj compare
def run_compare(args: argparse.Namespace) -> int:
    if len(args.runs) < 2:
        raise MLProjError("compare needs two or more runs: mlproj compare 1 2 [3 ...]")
    if args.plot and not args.metric:
        raise MLProjError("--plot needs --metric NAME: e.g. --plot curves.png --metric validation.accuracy")
    runs = _pick(args, args.runs)
    if args.plot:
        _check_metric(runs, args.metric)  # before any table is printed
    keys = differing_keys(runs)
    print("config that differs:" if args.format == "table" else "", end="\n" if args.format == "table" else "")
    config_rows = [{"key": key, **{f"run {r.id}": r.flat_config().get(key) for r in runs}} for key in keys]
    print(render(config_rows, args.format) if config_rows else "(none: the runs share every config key)\n", end="")
    metric_rows = []
    for name in metric_names(runs):
        row: dict[str, Any] = {"metric": name}
        for run in runs:
            s = run.summary(name)
            row[f"run {run.id}"] = None if s is None else s.best if s.best is not None else s.last
        metric_rows.append(row)
    if args.format == "table":
        print("\nmetrics (best; last for lr):")
    print(render(metric_rows, args.format), end="")
    if args.group_by:
        groups = group_runs(runs, args.group_by)
        rows = []
        for group in groups:
            row = {**group.values, "runs": " ".join(str(r.id) for r in group.runs), "n": len(group.runs)}
            for name in (n for n in metric_names(runs) if metric_goal(n) is not None):  # lr: no mean to take
                mean, std, count = group.stats.get(name, (None, None, 0))
                # A group of one has no spread: its value alone (the n column says 1), not "± 0".
                row[name] = None if mean is None else f"{mean:.4g} ± {std:.2g}" if count > 1 else f"{mean:.4g}"
            rows.append(row)
        if args.format == "table":
            print(f"\nmean ± std over {args.group_by}:")
        print(render(rows, args.format), end="")
    if args.plot:
        curves = plot_metric(runs, args.metric, args.plot, args.group_by)
        print(f"\nwrote {args.plot}: {args.metric}, {curves} curve{'s' if curves != 1 else ''}")
    return 0


def plot_metric(runs: list[Run], metric: str, path: str, group_by: str | None = None) -> int:
    """Draw `metric` against step into the PNG `path`: one curve per run, or with `group_by` one mean
    curve per group with a ±std band. The curves' labels go into the PNG's Description; returns
    how many curves were drawn.

    Raises:
        MLProjError: when no run logged `metric`.
    """
    _check_metric(runs, metric)
    import matplotlib  # lazy: only --plot draws; matplotlib and numpy would slow every mlproj command

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [k for k in differing_keys(runs) if k != group_by]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = []
    if group_by:
        for group in group_runs(runs, group_by):
            series = [run.metrics[metric] for run in group.runs if metric in run.metrics]
            steps = sorted(set.intersection(*(set(s.steps) for s in series))) if series else []
            if not steps:
                continue
            values = np.array([[dict(zip(s.steps, s.values, strict=False))[step] for step in steps] for s in series])
            mean, std = values.mean(axis=0), values.std(axis=0, ddof=1) if len(series) > 1 else np.zeros(len(steps))
            label = ", ".join(f"{k}={cell(v)}" for k, v in group.values.items()) or "all runs"
            label += f" (n={len(series)})"
            (line,) = ax.plot(steps, mean, label=label)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2, color=line.get_color())
            labels.append(label)
    else:
        for run in runs:
            if metric not in run.metrics:
                continue
            s = run.metrics[metric]
            flat = run.flat_config()
            label = f"run {run.id}" + "".join(f", {k}={cell(flat.get(k))}" for k in keys[:3])
            ax.plot(s.steps, s.values, marker="o" if len(s.steps) < 20 else None, label=label)
            labels.append(label)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}" + (f": mean ± std over {group_by}" if group_by else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Title": metric, "Description": "\n".join(labels)})
    plt.close(fig)
    return len(labels)


def _check_metric(runs: list[Run], metric: str) -> None:
    if not any(metric in run.summaries for run in runs):
        raise MLProjError(f"--metric {metric}: none of these runs logged it; they logged {', '.join(metric_names(runs)) or 'nothing'}.")


# ---------------------------------------------------------------------- mlproj check-mongo
def run_check_mongo(args: argparse.Namespace) -> int:
    """`make omniboard` runs this before installing Omniboard, which would otherwise start and
    only then die on a bad URI with a Node stack trace."""
    if not args.mongo:
        raise MLProjError("no MongoDB URI: set MONGODB_URI or pass --mongo, e.g. --mongo mongodb://localhost:27017/sacred.")
    database = mongo_database(args.mongo, args.db)
    print(f"MongoDB at {redact_uri(args.mongo)} answers: database {database.name}, {database['runs'].count_documents({})} runs")
    return 0


# ---------------------------------------------------------------------- mlproj sync
def run_sync(args: argparse.Namespace) -> int:
    from mlproj.runs.sync import sync_runs  # lazy: imports gridfs (pymongo), which only `mlproj sync` needs

    database = mongo_database(args.mongo, args.db)
    result = sync_runs(args.runs_dir, database)
    for verb, pairs in (("added", result.added), ("updated", result.updated)):
        for folder_id, mongo_id in pairs:
            print(f"{verb} run {folder_id} as _id {mongo_id}")
    print(
        f"synced {args.runs_dir} into {redact_uri(args.mongo)} (database {database.name}): "
        f"{len(result.added)} added, {len(result.updated)} updated, {len(result.skipped)} already there"
    )
    return 0
