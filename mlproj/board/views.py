"""The board's pages (`pages`) and the JSON its pages fetch (`api`).

Pages show what `mlproj runs`, `show` and `compare` print, from the same rows (`mlproj.runs.rows`);
values go into templates as data and are escaped there. Curves and live updates are JSON that the
page's script reads; nothing from a record is ever written into a script.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from collections.abc import Callable
from typing import Any

from flask import Blueprint, abort, render_template, request, send_file, url_for
from werkzeug.utils import safe_join

from mlproj.board.catalog import Query, best_cells
from mlproj.board.context import MAX_COMPARED, catalog, compared_runs, curve_cache, find_run
from mlproj.board.curves import compare_curves, run_labels
from mlproj.errors import MLProjError
from mlproj.runs.diff import diff_runs
from mlproj.runs.query import differing_keys, metric_names
from mlproj.runs.reader import metrics_key, read_output_tail
from mlproj.runs.record import Run
from mlproj.runs.rows import benchmark_metric, config_rows, git_line, group_rows, metric_rows, rerun_command, run_rows
from mlproj.util.goals import benchmark_goal, best_value, runs_goal
from mlproj.util.table import cell
from mlproj.util.values import flatten_config

pages = Blueprint("pages", __name__)
api = Blueprint("api", __name__, url_prefix="/api")

PAGE_SIZES = (25, 50, 100, 200)
OUTPUT_BYTES = 64 * 1024  # the tail of cout.txt a page shows, and the most one poll sends


# ------------------------------------------------------------------------------ the runs table
@pages.get("/")
def runs_table() -> str:
    query = _query()
    table = catalog().table(query)
    size = _int_arg("size", 50)
    if size not in PAGE_SIZES:
        abort(400, f"size={size}: a page holds one of {', '.join(map(str, PAGE_SIZES))} runs")
    pages_count = max(1, math.ceil(len(table.rows) / size))
    page = _int_arg("page", 1)
    if not 1 <= page <= pages_count:
        abort(404, f"page {page} does not exist: this table has {pages_count} page(s)")
    shown = table.rows[(page - 1) * size: page * size]
    return render_template("runs.html", table=table, rows=shown, query=query, page=page, pages=pages_count, size=size,
                           where=shlex.join(query.where), max_compared=MAX_COMPARED, link=_table_link)


def _query() -> Query:
    try:
        where = tuple(shlex.split(request.args.get("where", "")))
    except ValueError as err:
        abort(400, f"where={request.args.get('where')!r} cannot be split into key=value items ({err}): close the quotes")
    return Query(
        status=request.args.get("status", "").strip(), where=where, text=request.args.get("q", "").strip(),
        sort=request.args.get("sort", "id"), descending=request.args.get("desc", "1") == "1",
        all_metrics=request.args.get("metrics") == "all",
    )


def _int_arg(name: str, default: int) -> int:
    value = request.args.get(name, str(default))
    if not _is_number(value) or len(value) > 9:
        abort(400, f"{name}={value[:40]!r} is not a whole number")
    return int(value)


def _is_number(value: str) -> bool:
    """Whether `value` is a whole number written in ASCII digits (`²` and `٢` pass isdigit() but are no number to int())."""
    return value.isascii() and value.isdigit()


def _table_link(**changes: Any) -> str:
    """The runs table's address with the current filters and `changes` (None drops a parameter)."""
    args = {k: v for k, v in request.args.items()}
    args.update({k: str(v) for k, v in changes.items() if v is not None})
    for key in [k for k, v in changes.items() if v is None]:
        args.pop(key, None)
    return url_for("pages.runs_table", **args)


# ------------------------------------------------------------------------------ one run
@pages.get("/runs/<run_id>")
def run_page(run_id: str) -> str:
    run = find_run(run_id)
    output, offset = _output_tail(run, None)
    summaries = []
    for name in run.metric_names:
        s = run.summary(name)
        if s is not None:
            summaries.append({"metric": name, "best": s.best, "best_step": s.best_step, "last": s.last, "last_step": s.last_step, "count": s.count})
    data = {"curves": url_for("api.run_curves", run_id=run.id), "live": url_for("api.run_live", run_id=run.id),
            "running": run.shown_status == "RUNNING", "offset": offset, "stamp": _stamp(run), "metrics": run.metric_names}
    return render_template(
        "run.html", run=run, facts=_facts(run), pin=_pin(run), config=sorted(run.flat_config().items()),
        info=json.dumps(run.info, indent=2, sort_keys=True, default=str), summaries=summaries, artifacts=_artifacts(run),
        output=output, data=data, rerun=rerun_command(run), trace="".join(run.fail_trace or []),
    )


def _facts(run: Run) -> list[tuple[str, Any]]:
    facts = [("status", run.shown_status), ("name", run.name), ("run_key", run.run_key or ""), ("command", run.command),
             ("folder", run.path), ("host", run.host.get("hostname", "")), ("started (UTC)", run.start),
             ("duration", run.duration), ("git", git_line(run)), ("result", run.result)]
    if run.comment:
        facts.append(("comment", run.comment))
    return facts


def _pin(run: Run) -> list[tuple[str, Any]]:
    git = run.info.get("git")
    return sorted(git.items()) if isinstance(git, dict) else []


def _artifacts(run: Run) -> list[dict[str, Any]]:
    found = []
    for name in run.artifacts:
        path = _artifact_path(run, name)
        found.append({"name": name, "size": os.path.getsize(path) if path else None, "available": path is not None})
    return found


def _artifact_path(run: Run, name: str) -> str | None:
    """The file of `run`'s artifact `name` inside its folder; None when it is not there or would
    lie outside the folder (`..`, an absolute name, a link that leads out)."""
    path = safe_join(run.path, name) if run.path else None
    if path is None or not os.path.isfile(path):
        return None
    folder = os.path.realpath(run.path)
    return path if os.path.realpath(path).startswith(folder + os.sep) else None


@pages.get("/runs/<run_id>/artifacts/<path:name>")
def artifact(run_id: str, name: str) -> Any:
    run = find_run(run_id)
    if name not in run.artifacts:
        abort(404, f"run {run.id} recorded no artifact {name[:80]!r}; its artifacts are {', '.join(run.artifacts) or 'none'}")
    path = _artifact_path(run, name)
    if path is None:
        abort(404, f"artifact {name[:80]!r} of run {run.id} is not a file inside its run folder")
    return send_file(path, as_attachment=True, download_name=os.path.basename(path), mimetype="application/octet-stream")


# ------------------------------------------------------------------------------ compare
DIFF_CHARS = 400_000  # a longer source diff is cut (`mlproj diff` prints it whole)


@pages.get("/compare")
def compare_page() -> str:
    runs = compared_runs()
    keys = differing_keys(runs)
    group_by = request.args.get("group", "")
    if group_by and not any(group_by in run.flat_config() for run in runs):
        abort(400, f"group={group_by[:80]!r}: no run has that config key; differing keys are {', '.join(keys) or 'none'}")
    metrics = metric_rows(runs)
    infos = [run.info for run in runs]
    best = {row["metric"]: value for row in metrics
            if (value := best_value((row.get(f"run {r.id}") for r in runs), runs_goal(row["metric"], infos))) is not None}
    data = {"curves": url_for("api.compare_curves_json"), "runs": [r.id for r in runs], "group": group_by,
            "metrics": metric_names(runs)}
    a, b = _diff_pair(runs)
    diff = diff_runs(a, b, limit=DIFF_CHARS)
    source = diff.source
    return render_template(
        "compare.html", runs=runs, config=config_rows(runs), present=[set(r.flat_config()) for r in runs],
        metrics=metrics, best=best, keys=keys, group_by=group_by, groups=group_rows(runs, group_by) if group_by else [],
        data=data, a=a, b=b, diff=diff, source=source.splitlines(), cut=diff.cut,
    )


def _diff_pair(runs: list[Run]) -> tuple[Run, Run]:
    """The two runs whose source is diffed: `a` and `b` of the request (ids among the compared
    runs), else the first pinned run and the first other one pinned to another snapshot (else
    the next pinned one, else the next run): unpinned runs only when too few are pinned."""
    by_id = {str(run.id): run for run in runs}
    pinned = [run for run in runs if _snapshot(run)]
    first = pinned[0] if pinned else runs[0]
    others = [run for run in runs if run is not first]
    other = next((run for run in pinned if _snapshot(run) != _snapshot(first)), None) or next(
        (run for run in pinned if run is not first), others[0])
    chosen = []
    for name, default in (("a", first), ("b", other)):
        value = request.args.get(name)
        if value is not None and value not in by_id:
            abort(400, f"{name}={value[:40]!r}: the source diff is between two of the compared runs ({', '.join(by_id)})")
        chosen.append(by_id[value] if value is not None else default)
    return chosen[0], chosen[1]


def _snapshot(run: Run) -> str | None:
    git = run.info.get("git")
    return git.get("snapshot") if isinstance(git, dict) else None


# ------------------------------------------------------------------------------ sweeps and studies
@pages.get("/sweeps")
def sweeps_page() -> str:
    sweeps: dict[str, list[Run]] = {}
    studies: dict[str, list[Run]] = {}
    for run in catalog().runs():
        if run.sweep.get("name"):
            sweeps.setdefault(str(run.sweep["name"]), []).append(run)
        tune = run.info.get("tune")
        if isinstance(tune, dict) and tune.get("study"):
            studies.setdefault(str(tune["study"]), []).append(run)
    return render_template("sweeps.html", sweeps=_groups_summary(sweeps), studies=_groups_summary(studies))


def _groups_summary(groups: dict[str, list[Run]]) -> list[dict[str, Any]]:
    rows = []
    for name, runs in sorted(groups.items()):
        statuses: dict[str, int] = {}
        for run in runs:
            statuses[run.shown_status] = statuses.get(run.shown_status, 0) + 1
        rows.append({"name": name, "runs": len(runs), "statuses": sorted(statuses.items()), "last": max((r.start for r in runs if r.start), default=None)})
    return rows


@pages.get("/sweeps/<path:name>")  # a sweep name may hold `/`
def sweep_page(name: str) -> str:
    runs = [run for run in catalog().runs() if str(run.sweep.get("name")) == name]
    if not runs:
        abort(404, f"no run belongs to a sweep named {name[:80]!r}")
    runs.sort(key=lambda r: (r.sweep.get("trial") or 0, r.id))
    differing = differing_keys(runs)
    # What the sweep varied: keys its trials' command lines set (a seed each run drew is no axis).
    given = {key for run in runs for key in flatten_config(run.meta.get("config_updates") or {})}
    params = [key for key in differing if key in given]
    rows = [_params_first({k: v for k, v in row.items() if k not in differing or k in given}, {"trial": run.sweep.get("trial")}, params)
            for run, row in zip(runs, run_rows(runs, metrics=[m for m in [benchmark_metric(runs)] if m]), strict=True)]
    columns = list(rows[0])
    of = max((run.sweep.get("of") or 0 for run in runs), default=0)
    return render_template("trials.html", kind="sweep", name=name, rows=rows, columns=columns, max_compared=MAX_COMPARED,
                           best=best_cells(rows, columns, runs), of=of, runs=runs)


def _params_first(row: dict[str, Any], first: dict[str, Any], params: list[str]) -> dict[str, Any]:
    """`row` (of `run_rows`) with `first`, its id and the config keys `params` (what the trials
    vary) before its other columns."""
    return {**first, "id": row["id"], **{k: row[k] for k in params if k in row}, **{k: v for k, v in row.items() if k not in params}}


@pages.get("/studies/<path:name>")
def study_page(name: str) -> str:
    runs = [run for run in catalog().runs() if isinstance(run.info.get("tune"), dict) and str(run.info["tune"].get("study")) == name]
    if not runs:
        abort(404, f"no run belongs to a study named {name[:80]!r}")
    runs.sort(key=lambda r: (r.info["tune"].get("trial") or 0, r.id))
    params = sorted({key for run in runs for key in (run.info["tune"].get("params") or {})})
    base = run_rows(runs, metrics=[m for m in [benchmark_metric(runs)] if m])
    rows = []
    for run, row in zip(runs, base, strict=True):
        tune = run.info["tune"]
        values = tune.get("params") or {}
        value = run.result if run.shown_status == "COMPLETED" else None  # what the study was told (none when pruned or failed)
        # The run's status (PRUNED included), not the study's trial state: the run does not record that.
        rows.append({"trial": tune.get("trial"), "id": run.id, "run status": run.shown_status, "value": value,
                     **{key: values.get(key) for key in params},
                     **{k: v for k, v in row.items() if k.endswith((" best", " last"))}, "start": run.start, "duration": run.duration})
    columns = list(rows[0])
    best = best_cells(rows, columns, runs)
    value = best_value((row["value"] for row in rows), benchmark_goal(run.info for run in runs))
    if value is not None:
        best["value"] = value
    return render_template("trials.html", kind="study", name=name, rows=rows, columns=columns, best=best, of=None, runs=runs,
                           max_compared=MAX_COMPARED)


# ------------------------------------------------------------------------------ JSON
def _stamp(run: Run) -> list[int] | None:
    """The size and mtime of `run`'s metrics.json now (`metrics_key`): the page fetches its curves again when it changes."""
    key = metrics_key(run.path) if run.path else None
    return None if key is None else list(key.values())


@api.get("/runs/<run_id>/curves")
def run_curves(run_id: str) -> Any:
    """Run `run_id`'s curves, downsampled (a 503 while they are rewritten: `_unless_rewritten`)."""
    run = find_run(run_id)
    return _unless_rewritten([run], lambda: {"run": run.id, "stamp": _stamp(run), "metrics": curve_cache().run_curves(run)})


def _unless_rewritten(runs: list[Run], answer: Callable[[], Any]) -> Any:
    """`answer()`, curves read from `runs`' metrics.json; a 503 (retry) when one cannot be parsed
    while a run is RUNNING: plain Sacred rewrites it in place, and the page tries again."""
    try:
        return answer()
    except MLProjError as err:
        if not any(run.status == "RUNNING" for run in runs):
            raise
        return {"error": f"{err} (a running run rewrites it: the page tries again)", "status": 503}, 503, {"Retry-After": "2"}


@api.get("/runs/<run_id>/live")
def run_live(run_id: str) -> dict[str, Any]:
    """What changed on a running run's page: its status, its output since byte `offset`, and the
    stamp of its metrics (the page fetches the curves again when that changed)."""
    run = find_run(run_id)
    offset = request.args.get("offset")
    if offset is not None and (not _is_number(offset) or len(offset) > 15):
        abort(400, f"offset={offset[:40]!r} is not a byte offset")
    output, end = _output_tail(run, None if offset is None else int(offset))
    return {"run": run.id, "status": run.shown_status, "running": run.shown_status == "RUNNING", "output": output, "offset": end,
            "stamp": _stamp(run), "duration": cell(run.duration), "result": cell(run.result), "metrics": run.metric_names}


def _output_tail(run: Run, start: int | None) -> tuple[str, int]:
    """`read_output_tail` of `run`; a cout.txt the reader refuses (a link, a FIFO) is one line in its
    place, ended by no newline, so each poll replaces it rather than adds to it."""
    try:
        return read_output_tail(run.path, start, OUTPUT_BYTES)
    except MLProjError as err:
        return f"[output not shown: {err}]", 0


@api.get("/compare/curves")
def compare_curves_json() -> Any:
    runs = compared_runs()
    metric = request.args.get("metric", "")
    if not any(metric in run.summaries for run in runs):
        abort(404, f"metric={metric[:80]!r}: none of these runs logged it")
    group = request.args.get("group", "")
    if group:
        if not any(group in run.flat_config() for run in runs):
            abort(400, f"group={group[:80]!r}: no run has that config key")
        return _unless_rewritten(runs, lambda: curve_cache().group_curves(runs, metric, group))
    return _unless_rewritten(runs, lambda: compare_curves(runs, metric, curve_cache(), run_labels(runs, differing_keys(runs))))
