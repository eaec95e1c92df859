"""`mlproj runs`, `mlproj show`, `mlproj compare`, `mlproj diff` and `mlproj sync`: looking at recorded runs.

Runs come from a runs dir (default `$MLPROJ_RUNS_DIR` or `./runs`) or, with `--mongo URI`, from
MongoDB; see `mlproj.runs.record` for the record and the best-value rule.
"""

from __future__ import annotations

import argparse
import os
import sys

from mlproj.errors import MLProjError
from mlproj.runs.diff import diff_runs
from mlproj.runs.mongo import mongo_database, read_mongo_runs
from mlproj.runs.plot import check_metric, plot_metric
from mlproj.runs.query import filter_runs, metric_names, resolve_runs, sort_runs
from mlproj.runs.reader import read_runs
from mlproj.runs.record import Run
from mlproj.runs.rows import config_rows, describe, group_rows, listed_metrics, metric_rows, run_rows
from mlproj.train.config import runs_dir as default_runs_dir
from mlproj.util.table import FORMATS, render
from mlproj.util.uri import redact_uri


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    runs = subparsers.add_parser("runs", help="list runs: config that differs, best and last metrics")
    runs.add_argument("runs_dir", nargs="?", metavar="RUNS_DIR", help="the runs dir (default $MLPROJ_RUNS_DIR or ./runs)")
    _add_source_options(runs, positional_dir=True)
    runs.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    runs.add_argument("--all-config", action="store_true", help="show every config key, not only those that differ")
    runs.add_argument("--metrics", metavar="A,B", help="the metrics to show (best and last), or `all` (default: the runs' "
                      "benchmark metric, and its test. twin that test runs logged, in table, markdown and html; every metric in csv and json)")
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

    diff = subparsers.add_parser("diff", help="two runs: the config keys that differ and the diff of their pinned sources")
    diff.add_argument("runs", nargs=2, metavar="RUN", help="two run ids, run_keys or run folders: A and B (the diff is A -> B)")
    _add_source_options(diff)
    diff.add_argument("--stat", action="store_true", help="the source diff as `git diff --stat`: files and lines changed")
    diff.set_defaults(func=run_diff)

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
    return read_runs(args.runs_dir or default_runs_dir(), on_damaged=lambda err: print(f"mlproj {args.command}: skipped a run: {err}", file=sys.stderr))


def _pick(args: argparse.Namespace, refs: list[str]) -> list[Run]:
    """The runs `refs` name (see `mlproj.runs.query.resolve_runs`)."""
    return resolve_runs(refs, None if args.mongo else args.runs_dir or default_runs_dir(), lambda: _load(args))


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


def _listed_metrics(runs: list[Run], option: str | None, every: bool) -> list[str]:
    if option == "all" or (option is None and every):
        return metric_names(runs)
    if option is None:
        return listed_metrics(runs)
    names = [m.strip() for m in option.split(",") if m.strip()]
    logged = set(metric_names(runs))
    unknown = [m for m in names if m not in logged]
    if unknown:
        raise MLProjError(f"--metrics {option}: no run logged {', '.join(unknown)}; they logged {', '.join(sorted(logged)) or 'nothing'} (or pass `all`).")
    return names


# ---------------------------------------------------------------------- mlproj show
def run_show(args: argparse.Namespace) -> int:
    (run,) = _pick(args, [args.run])
    print(describe(run), end="")
    return 0


# ---------------------------------------------------------------------- mlproj compare
def run_compare(args: argparse.Namespace) -> int:
    if len(args.runs) < 2:
        raise MLProjError("compare needs two or more runs: mlproj compare 1 2 [3 ...]")
    if args.plot and not args.metric:
        raise MLProjError("--plot needs --metric NAME: e.g. --plot curves.png --metric validation.accuracy")
    runs = _pick(args, args.runs)
    if args.plot:
        check_metric(runs, args.metric)  # before any table is printed
    print("config that differs:" if args.format == "table" else "", end="\n" if args.format == "table" else "")
    rows = config_rows(runs)
    print(render(rows, args.format) if rows else "(none: the runs share every config key)\n", end="")
    if args.format == "table":
        print("\nmetrics (best; last for lr):")
    print(render(metric_rows(runs), args.format), end="")
    if args.group_by:
        if args.format == "table":
            print(f"\nmean ± std over {args.group_by}:")
        print(render(group_rows(runs, args.group_by), args.format), end="")
    if args.plot:
        curves = plot_metric(runs, args.metric, args.plot, args.group_by)
        print(f"\nwrote {args.plot}: {args.metric}, {curves} curve{'s' if curves != 1 else ''}")
    return 0


# ---------------------------------------------------------------------- mlproj diff
def run_diff(args: argparse.Namespace) -> int:
    a, b = _pick(args, args.runs)
    diff = diff_runs(a, b, stat=args.stat)
    # Two runs may share an id (run folders of two runs dirs): then the columns say which was given first.
    columns = [f"run {a.id}", f"run {b.id}"] if str(a.id) != str(b.id) else [f"A: {args.runs[0]}", f"B: {args.runs[1]}"]
    print("config that differs:")
    rows = [{"key": key, columns[0]: value_a, columns[1]: value_b} for key, value_a, value_b in diff.config]
    print(render(rows, "table") if rows else "(none: the runs share every config key)\n", end="")
    if diff.note is not None:
        print(f"\nno source diff: {diff.note}")
        return 0
    pins = " ".join(str(run.info["git"]["snapshot"])[:12] for run in (a, b))
    print(f"\nsource that differs (git diff {'--stat ' if args.stat else ''}{pins}):")
    print(diff.source if diff.source else "(none: the pinned sources are identical)\n", end="")
    return 0


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
