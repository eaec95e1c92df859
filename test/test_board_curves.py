"""The board's curves (`mlproj.board.curves`): in step order, read once however many requests ask
at once, kept within a number of points, and labelled as `mlproj compare --plot` labels them."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import write_run

from mlproj.board import create_app
from mlproj.runs.plot import downsampled_metrics


def write_metrics(folder: Path, metrics: dict[str, tuple[list, list]]) -> None:
    (folder / "metrics.json").write_text(json.dumps({name: {"steps": steps, "timestamps": [""] * len(steps), "values": values}
                                                     for name, (steps, values) in metrics.items()}))


def test_downsampled_metrics_out_of_order_steps_come_sorted_stably(tmp_path: Path) -> None:
    # ints: numpy arrays as read; floats among the steps: the lists json reads
    write_metrics(tmp_path, {"ints": ([0, 2, 1, 3, 2], [10, 12, 11, 13, 22]), "floats": ([1.5, 0.5, 1.5, 1], [3, 1, 33, 2])})
    curves = downsampled_metrics(str(tmp_path), None, 1000)
    assert (curves["ints"]["steps"], curves["ints"]["values"]) == ([0, 1, 2, 2, 3], [10, 11, 12, 22, 13])
    assert (curves["floats"]["steps"], curves["floats"]["values"]) == ([0.5, 1, 1.5, 1.5], [1, 2, 3, 33])


def test_board_run_curves_resumed_run_steps_ascend(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "runs", 1, {}, {})
    write_metrics(folder, {"train.loss": ([0, 1, 2, 3, 2, 3, 4], [1.0, 0.9, 0.8, 0.7, 0.85, 0.75, 0.6])})  # resumed at step 2
    curve = create_app(tmp_path / "runs").test_client().get("/api/runs/1/curves").get_json()["metrics"]["train.loss"]
    assert curve["steps"] == sorted(curve["steps"]) and curve["values"][:4] == [1.0, 0.9, 0.8, 0.85]
