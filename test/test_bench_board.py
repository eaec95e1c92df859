"""`python -m mlproj.bench --board`'s generated runs: real run folders, read back as any run is."""

from __future__ import annotations

from pathlib import Path

from mlproj.bench_board import write_long_run, write_runs
from mlproj.runs.reader import read_metric_values, read_runs
from mlproj.util.series import summarize_series


def test_bench_board_runs_read_back_with_their_own_summaries(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    write_runs(runs_dir, 70, 1500)
    write_long_run(runs_dir, 71, n_metrics=3, n_steps=2000)
    runs = read_runs(str(runs_dir))
    assert [run.id for run in runs] == list(range(1, 72)) and runs[0].status == "COMPLETED"
    # Each summary described its metrics.json: nothing was summarized again, so no cache was written.
    assert not (runs_dir / ".mlproj-cache").exists()
    for run in (runs[4], runs[-1]):
        assert run.summaries == summarize_series(read_metric_values(run.path))
    assert runs[4].summary("train.loss").count == 1500 and runs[4].summary("validation.accuracy").count == 1
    assert runs[-1].metric_names == ["train.metric0", "train.metric1", "train.metric2"]
    assert {run.config["lr"] for run in runs[:-1]} == {1e-4, 3e-4, 1e-3, 3e-3} and runs[4].sweep["name"] == "sweep-0"
