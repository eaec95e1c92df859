"""`mlproj board`: the recorded runs in a browser, read-only, served from the runs dir itself.

`create_app(runs_dir)` builds the Flask application; the `mlproj board` command serves it with
waitress on 127.0.0.1. Pages: the runs table (`/`), a run (`/runs/<id>`), runs side by side
(`/compare?run=1&run=2`), sweeps and Optuna studies (`/sweeps`). Curves are drawn by uPlot,
shipped in `static/` (no network needed).
"""

from mlproj.board.app import create_app

__all__ = ["create_app"]
