"""The board's curves (`mlproj.board.curves`): in step order, read once however many requests ask
at once, kept within a number of points, and labelled as `mlproj compare --plot` labels them."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import write_run

from mlproj.board import create_app
from mlproj.board.curves import CurveCache, group_curves
from mlproj.errors import MLProjError
from mlproj.runs.plot import downsampled_metrics, plot_metric
from mlproj.runs.reader import read_runs


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


def counting(monkeypatch: pytest.MonkeyPatch, name: str, wait: float = 0.0) -> list:
    """The calls of `mlproj.board.curves.<name>` (the real function, counted; `wait` seconds long)."""
    import mlproj.board.curves as curves

    calls, real = [], getattr(curves, name)

    def counted(*args: Any) -> Any:
        calls.append(args)
        time.sleep(wait)
        return real(*args)

    monkeypatch.setattr(curves, name, counted)
    return calls


def test_curve_cache_requests_at_once_for_one_run_share_one_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_run(tmp_path / "runs", 1, {}, {"train.loss": [1 / (k + 1) for k in range(50)]})
    run, = read_runs(str(tmp_path / "runs"))
    reads = counting(monkeypatch, "downsampled_metrics", wait=0.3)  # the other requests arrive during the read
    cache = CurveCache()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: cache.run_curves(run), range(4)))
    assert len(reads) == 1 and answers == [answers[0]] * 4 and answers[0]["train.loss"]["count"] == 50


def test_curve_cache_damaged_metrics_every_waiting_request_gets_the_error_and_none_is_kept(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "runs", 1, {}, {"train.loss": [1.0, 0.5]})
    run, = read_runs(str(tmp_path / "runs"))
    (folder / "metrics.json").write_text('{"train.loss": {"steps": [0, 1], "values": [1.0, ')  # caught half-written
    cache = CurveCache()
    with ThreadPoolExecutor(2) as pool:
        failures = [f.exception() for f in [pool.submit(cache.run_curves, run) for _ in range(2)]]
    assert all(isinstance(err, MLProjError) for err in failures)
    write_metrics(folder, {"train.loss": ([0, 1], [1.0, 0.5])})
    assert cache.run_curves(run)["train.loss"]["values"] == [1.0, 0.5]


def test_curve_cache_past_its_points_drops_the_least_recently_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in (1, 2, 3):
        write_run(tmp_path / "runs", i, {}, {"train.loss": [i / (k + 1) for k in range(100)]})  # 100 points each, kept whole
    one, two, three = read_runs(str(tmp_path / "runs"))
    reads = counting(monkeypatch, "downsampled_metrics")
    cache = CurveCache(points=250)
    for run in (one, two, three, two):  # run 3 puts 300 points: run 1, the least recently shown, goes
        cache.run_curves(run)
    assert len(reads) == 3
    cache.run_curves(one)
    assert len(reads) == 4 and reads[-1][0] == one.path
    small = CurveCache(points=50)  # one run larger than the whole: still kept, the newest
    small.run_curves(one)
    small.run_curves(one)
    assert len(reads) == 5


def test_curve_cache_group_curves_read_once_until_a_run_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in (1, 2, 3):
        write_run(tmp_path / "runs", i, {"seed": i, "lr": 0.1}, {"train.loss": [i / (k + 1) for k in range(20)], "lr": [0.1] * 20})
    runs = read_runs(str(tmp_path / "runs"))
    reads = counting(monkeypatch, "read_metric_arrays")
    cache = CurveCache()
    first = cache.group_curves(runs, "train.loss", "seed")
    assert cache.group_curves(runs, "train.loss", "seed") == first and len(reads) == 3  # each run read once
    assert first == group_curves(runs, "train.loss", "seed") and first["series"][0]["n"] == 3
    write_metrics(tmp_path / "runs" / "2", {"train.loss": ([0, 1], [5.0, 4.0])})
    assert cache.group_curves(runs, "train.loss", "seed")["x"] == [0, 1] and len(reads) == 3 + 3 + 3


def test_board_curve_labels_are_those_of_compare_plot(tmp_path: Path) -> None:
    from PIL import Image

    for i, (seed, checkpoint) in enumerate([(0, None), (1, None), (0, "runs/1/best.pt")], start=1):
        write_run(tmp_path / "runs", i, {"seed": seed, "checkpoint": checkpoint, "lr": 0.1}, {"train.loss": [1.0, 0.5 + i]})
    runs = read_runs(str(tmp_path / "runs"))
    client = create_app(tmp_path / "runs").test_client()
    labels = {}
    for group in ("seed", ""):
        body = client.get(f"/api/compare/curves?run=1&run=2&run=3&metric=train.loss&group={group}").get_json()
        plot_metric(runs, "train.loss", str(tmp_path / "plot.png"), group_by=group or None)
        labels[group] = [s["label"] for s in body["series"]]
        assert labels[group] == Image.open(tmp_path / "plot.png").text["Description"].splitlines()
    assert labels["seed"] == ["checkpoint unset (n=2)", "checkpoint=runs/1/best.pt (n=1)"]
    assert labels[""] == ["run 1, seed=0", "run 2, seed=1", "run 3, checkpoint=runs/1/best.pt, seed=0"]  # no `checkpoint=`
