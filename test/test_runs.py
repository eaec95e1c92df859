"""mlproj.runs: run folders written in Sacred's FileStorageObserver layout, read back and compared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_run

from mlproj.errors import MLProjError
from mlproj.runs.query import differing_keys, filter_runs, find_run, group_runs, sort_runs
from mlproj.runs.reader import read_run, read_runs
from mlproj.runs.record import Series, summarize
from mlproj.util.goals import best_value, metric_goal


@pytest.fixture
def three_runs(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    write_run(runs, 1, {"lr": 0.1, "seed": 1, "dataset": "digits", "optim": {"momentum": 0.9}}, {"validation.accuracy": [0.5, 0.7], "validation.loss": [1.0, 0.6]})
    write_run(runs, 2, {"lr": 0.1, "seed": 2, "dataset": "digits", "optim": {"momentum": 0.9}}, {"validation.accuracy": [0.6, 0.9], "validation.loss": [0.9, 0.4]})
    write_run(runs, 3, {"lr": 0.01, "seed": 1, "dataset": "digits", "optim": {"momentum": 0.5}}, {"validation.accuracy": [0.8, 0.6], "validation.loss": [0.3, 0.5]}, status="FAILED")
    (runs / "_sources").mkdir()
    (runs / "tensorboard").mkdir()
    return runs


def test_metric_goal_loss_min_accuracy_max_lr_unranked() -> None:
    assert [metric_goal(n) for n in ("validation.loss", "train/val_loss", "test.error", "validation.accuracy", "f1", "lr")] == [
        "min", "min", "min", "max", "max", None]


def test_summarize_loss_best_is_minimum_accuracy_best_is_maximum() -> None:
    loss = summarize("validation.loss", Series([10, 20, 30], [0.9, 0.3, 0.5]))
    accuracy = summarize("validation.accuracy", Series([10, 20, 30], [0.4, 0.8, 0.7]))
    assert (loss.best, loss.best_step, loss.last, loss.last_step, loss.count) == (0.3, 20, 0.5, 30, 3)
    assert (accuracy.best, accuracy.best_step) == (0.8, 20)


def test_summarize_lr_has_no_best_nan_ignored() -> None:
    lr = summarize("lr", Series([1, 2, 3], [0.1, float("nan"), 0.01]))
    assert lr.best is None and lr.last == 0.01 and lr.count == 2


def test_load_runs_skips_sources_and_tensorboard_folders(three_runs: Path) -> None:
    runs = read_runs(str(three_runs))
    assert [r.id for r in runs] == [1, 2, 3]
    assert runs[0].status == "COMPLETED" and runs[0].run_key == "key-1"
    assert str(runs[0].duration) == "0:01:30.500000"


def test_load_runs_missing_dir_raises(tmp_path: Path) -> None:
    with pytest.raises(MLProjError, match="does not exist"):
        read_runs(str(tmp_path / "nope"))


def test_load_run_not_a_run_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(MLProjError, match="not a run folder"):
        read_run(str(tmp_path))


def test_run_git_from_info_git_with_dirty_mark(tmp_path: Path) -> None:
    pin = {"head": "0123456789abcdef", "branch": "main", "snapshot": "fedcba9876543210", "ref": "refs/mlproj/runs/k", "dirty": True}
    run = read_run(str(write_run(tmp_path, 1, {}, {}, info={"run_key": "k", "git": pin})))
    assert run.git == "0123456*" and run.missing_pin is None


def test_run_git_without_pin_is_a_dash_whatever_sacred_recorded(tmp_path: Path) -> None:
    failed = {"run_key": "k", "git": None, "git_error": "`git add --all` failed: fatal: bad"}
    runs = [write_run(tmp_path, 1, {}, {}, dirty=True, info=failed),
            write_run(tmp_path, 2, {"git_pin": False}, {}, dirty=False),
            write_run(tmp_path, 3, {}, {}, info={"run_key": "k", "git": None, "git_error": "not inside a Git repository: /x"})]
    loaded = [read_run(str(run)) for run in runs]
    assert [run.git for run in loaded] == ["-", "-", "-"]
    assert [run.missing_pin for run in loaded] == [
        "pinning failed when it started: `git add --all` failed: fatal: bad",
        "it ran with git_pin=False",
        "it ran outside a Git repository (/x)",
    ]
    assert loaded[0].sacred_commit == "abcdef1*"  # Sacred's HEAD stays available to `mlproj show`


def test_filter_runs_where_number_string_and_nested_key(three_runs: Path) -> None:
    runs = read_runs(str(three_runs))
    assert [r.id for r in filter_runs(runs, ["lr=0.1"])] == [1, 2]
    assert [r.id for r in filter_runs(runs, ["dataset=digits", "optim.momentum=0.5"])] == [3]
    assert [r.id for r in filter_runs(runs, status="failed")] == [3]


def test_filter_runs_where_without_equals_raises(three_runs: Path) -> None:
    with pytest.raises(MLProjError, match="not key=value"):
        filter_runs(read_runs(str(three_runs)), ["lr"])


def test_sort_runs_accuracy_descending_loss_ascending(three_runs: Path) -> None:
    runs = read_runs(str(three_runs))
    assert [r.id for r in sort_runs(runs, "validation.accuracy")] == [2, 3, 1]  # best 0.9, 0.8, 0.7
    assert [r.id for r in sort_runs(runs, "validation.loss")] == [3, 2, 1]  # best 0.3, 0.4, 0.6
    assert [r.id for r in sort_runs(runs, "lr")] == [3, 1, 2]  # a config key: ascending


def test_sort_runs_unknown_key_raises(three_runs: Path) -> None:
    with pytest.raises(MLProjError, match="no run has that metric"):
        sort_runs(read_runs(str(three_runs)), "bleu")


def test_differing_keys_only_keys_that_vary(three_runs: Path) -> None:
    runs = read_runs(str(three_runs))
    assert differing_keys(runs) == ["lr", "optim.momentum", "seed"]
    assert differing_keys(runs[:2]) == ["seed"]


def test_group_runs_by_seed_mean_and_std_of_best(three_runs: Path) -> None:
    groups = group_runs(read_runs(str(three_runs)), "seed")
    by_lr = {g.values["lr"]: g for g in groups}
    assert [r.id for r in by_lr[0.1].runs] == [1, 2]
    mean, std, n = by_lr[0.1].stats["validation.accuracy"]
    assert (mean, n) == (pytest.approx(0.8), 2) and std == pytest.approx(0.1414, abs=1e-4)
    assert by_lr[0.01].stats["validation.loss"] == (0.3, 0.0, 1)


def test_group_runs_unknown_key_raises(three_runs: Path) -> None:
    with pytest.raises(MLProjError, match="--group-by batch"):
        group_runs(read_runs(str(three_runs)), "batch")


def test_find_run_by_id_or_run_key_else_raises(three_runs: Path) -> None:
    runs = read_runs(str(three_runs))
    assert find_run(runs, "2").id == 2 and find_run(runs, "key-3").id == 3
    with pytest.raises(MLProjError, match="no run '9'"):
        find_run(runs, "9")


def test_run_running_with_stale_heartbeat_shown_probably_dead_record_kept(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    write_run(tmp_path, 1, {"lr": 0.1}, {"train.loss": [1.0]}, status="RUNNING")  # heartbeat in January
    live = write_run(tmp_path, 2, {"lr": 0.1}, {"train.loss": [1.0]}, status="RUNNING")
    record = json.loads((live / "run.json").read_text())
    record["heartbeat"] = datetime.now(timezone.utc).replace(tzinfo=None).isoformat()  # beating now
    (live / "run.json").write_text(json.dumps(record))
    dead, running = read_runs(str(tmp_path))
    assert (dead.status, dead.shown_status) == ("RUNNING", "PROBABLY_DEAD")
    assert running.shown_status == "RUNNING"
    assert [r.id for r in filter_runs([dead, running], status="probably_dead")] == [1]


def test_run_running_without_heartbeat_judged_by_start_time(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    for run_id, start in ((1, "2026-01-01T10:00:00.000000"), (2, datetime.now(timezone.utc).replace(tzinfo=None).isoformat())):
        folder = write_run(tmp_path, run_id, {"lr": 0.1}, {}, status="RUNNING")
        record = json.loads((folder / "run.json").read_text())
        record.update(heartbeat=None, stop_time=None, start_time=start)  # killed before its first heartbeat / just started
        (folder / "run.json").write_text(json.dumps(record))
    killed, starting = read_runs(str(tmp_path))
    assert (killed.status, killed.shown_status) == ("RUNNING", "PROBABLY_DEAD")
    assert starting.shown_status == "RUNNING"


def test_read_run_metrics_read_on_first_use_not_before(tmp_path: Path) -> None:
    folder = write_run(tmp_path, 1, {"lr": 0.1}, {"train.loss": [1.0]})
    (folder / "metrics.json").write_text("{damaged")
    run = read_run(folder)  # listing, matching and the sweep's skip rule never open metrics.json
    assert run.config == {"lr": 0.1}
    with pytest.raises(MLProjError, match=r"metrics\.json is not valid JSON"):
        _ = run.metrics


def test_filter_runs_where_reads_values_as_sacred_and_json_spellings_match(tmp_path: Path) -> None:
    write_run(tmp_path, 1, {"amp": True, "model": "mlp", "resume": None, "lr": 0.001}, {})
    write_run(tmp_path, 2, {"amp": False, "model": "1e-3", "resume": "runs/1", "lr": 0.01}, {})
    runs = read_runs(str(tmp_path))
    assert [r.id for r in filter_runs(runs, ["amp=true"])] == [1] == [r.id for r in filter_runs(runs, ["amp=True"])]
    assert [r.id for r in filter_runs(runs, ["resume=null"])] == [1] == [r.id for r in filter_runs(runs, ["resume=None"])]
    assert [r.id for r in filter_runs(runs, ["model='1e-3'"])] == [2]  # quoted: the string, as Sacred reads it
    assert [r.id for r in filter_runs(runs, ["lr=1e-3"])] == [1]


def test_runs_package_imports_neither_engine_writer_nor_sacred() -> None:
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import sys, mlproj.runs.query, mlproj.runs.reader, mlproj.runs.mongo, mlproj.runs.sync; "
            "from mlproj.runs.record import missing_pin_reason; missing_pin_reason({}, {}); "
            "print(sorted({m for m in sys.modules if m.startswith(('mlproj.train', 'mlproj.record', 'sacred', 'torch'))}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"  # runs/ reads records: no engine, no writer, no Sacred (slow, warns)


def test_missing_pin_reason_knows_the_prefix_the_writer_records() -> None:
    from mlproj.record.gitpin import NOT_IN_REPOSITORY
    from mlproj.runs.record import NOT_IN_REPOSITORY as READ_PREFIX

    assert READ_PREFIX == NOT_IN_REPOSITORY


def test_best_value_is_the_least_or_greatest_number_and_none_when_unranked() -> None:
    values = [0.5, None, True, float("nan"), "n/a", 0.2, 3]
    assert best_value(values, "min") == 0.2 and best_value(values, "max") == 3
    assert best_value([True, None, float("nan")], "max") is None  # no number: a bool is no metric value
    assert best_value(values, None) is None and best_value([], "min") is None


def test_goal_recorded_benchmark_decides_over_the_name() -> None:
    from mlproj.util.goals import benchmark, goal

    recorded = benchmark("validation.score", True)
    assert [goal("validation.score", recorded), goal("test.score", recorded), goal("validation.score")] == ["min", "min", "max"]
    assert goal("validation.loss", benchmark("validation.accuracy", False)) == "min"  # not the benchmark: its name decides


def test_runs_table_best_and_sort_follow_the_recorded_benchmark(tmp_path: Path) -> None:
    from mlproj.runs.query import sort_runs
    from mlproj.runs.reader import read_runs
    from mlproj.runs.rows import run_rows

    runs_dir = tmp_path / "runs"
    for i, values in enumerate(([0.5, 0.2, 0.4], [0.3, 0.1, 0.6]), start=1):
        write_run(runs_dir, i, {"lr": i}, {"validation.score": values},
                  info={"benchmark": {"metric": "validation.score", "lower_is_better": True}})
    runs = read_runs(str(runs_dir))
    assert [row["validation.score best"] for row in run_rows(runs)] == [0.2, 0.1]
    assert [run.id for run in sort_runs(runs, "validation.score")] == [2, 1]


def test_tracker_best_follows_the_noted_benchmark() -> None:
    from mlproj.train.tracker import Tracker

    tracker = Tracker()
    tracker.note_benchmark("validation.score", lower_is_better=True)
    for value in (0.5, 0.2, 0.4):
        tracker.log_scalars("validation", {"score": value}, 1)
    assert tracker.best == {"validation.score": 0.2}
