"""What every view of the board asks of a request: the app's runs, and the runs a request names.

A run is named by its id, the name of its folder in the runs dir: digits, nothing else. Anything
else (a path, `..`, a run_key) names no run here and gets a 404, so no request reaches a file
outside the runs dir through a run's name.
"""

from __future__ import annotations

from flask import abort, current_app, request

from mlproj.board.catalog import Catalog
from mlproj.board.curves import CurveCache
from mlproj.runs.record import Run

CATALOG, CURVES = "mlproj.catalog", "mlproj.curves"
MIN_COMPARED, MAX_COMPARED = 2, 10


def catalog() -> Catalog:
    """The runs of the app's runs dir (`Catalog`)."""
    return current_app.extensions[CATALOG]


def curve_cache() -> CurveCache:
    """The app's downsampled curves (`CurveCache`)."""
    return current_app.extensions[CURVES]


def find_run(run_id: str) -> Run:
    """The run whose id is `run_id`, read now; a 404 when `run_id` is not a run id of this runs dir."""
    if not run_id.isdigit() or not run_id.isascii() or len(run_id) > 18:
        abort(404, f"{run_id[:40]!r} is not a run id: a run id is the number of its folder in the runs dir")
    run = catalog().run(int(run_id))
    if run is None:
        abort(404, f"there is no run {run_id} in this runs dir")
    return run


def compared_runs() -> list[Run]:
    """The runs the request names in its `run` parameters (2 to 10 distinct ids), in order; a 400
    for fewer, more or repeated ones, a 404 for one that is no run."""
    ids = [i.strip() for value in request.args.getlist("run") for i in value.split(",") if i.strip()]
    if not MIN_COMPARED <= len(ids) <= MAX_COMPARED:
        abort(400, f"compare takes {MIN_COMPARED} to {MAX_COMPARED} runs; this request names {len(ids)}: select them in the runs table")
    runs = [find_run(i) for i in ids]
    if len({run.id for run in runs}) != len(runs):  # by id: ` 1` and `01` name run 1 too
        abort(400, "a run is named twice: name each run once")
    return runs
