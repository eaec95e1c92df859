"""Listing runs from small summaries: the observer's own, and the cache for runs plain Sacred recorded."""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import math
import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from test_runs import write_run

from mlproj.errors import MLProjError
from mlproj.record.observers import RunFolderObserver
from mlproj.runs import reader
from mlproj.runs.reader import CACHE_FILE, read_run, read_runs
from mlproj.runs.record import Series, summarize
from mlproj.util.series import SUMMARY_FILE, summarize_series

NOW = datetime.datetime(2026, 1, 1, 10, 0, 0)


def observed_run(base: Path, beats: list[dict[str, tuple[list[int], list[float]]]]) -> Path:
    """A run folder written by RunFolderObserver, one `log_metrics` per beat, then completed."""
    observer = RunFolderObserver(str(base))
    _id = observer.started_event({"name": "t", "base_dir": str(base), "sources": [], "dependencies": [], "repositories": []},
                                 "train", {}, NOW, {"lr": 0.1}, {}, None)
    for beat in beats:
        observer.log_metrics({name: {"steps": s, "values": v, "timestamps": [NOW] * len(s)} for name, (s, v) in beat.items()}, None)
    observer.completed_event(NOW, None)
    return base / str(_id)


def test_observer_summary_matches_every_metric_of_the_full_series(tmp_path: Path) -> None:
    rng = random.Random(0)
    beats = []
    for first in range(0, 300, 50):  # six heartbeats, with ties, a NaN and an inf in the series
        steps = list(range(first, first + 50))
        values = [round(rng.uniform(0, 1), 1) for _ in steps]
        values[7] = math.nan if first == 100 else values[7]
        values[9] = math.inf if first == 150 else values[9]
        beats.append({"train.loss": (steps, values), "validation.accuracy": (steps, [v * 2 for v in values]), "lr": (steps, [0.1] * 50)})
    folder = observed_run(tmp_path, beats)
    run = read_run(folder)
    assert (folder / SUMMARY_FILE).exists()
    full = json.loads((folder / "metrics.json").read_text())
    assert run.metric_names == sorted(full)
    for name, series in full.items():
        finite = [(s, v) for s, v in zip(series["steps"], series["values"], strict=True) if math.isfinite(v)]
        low, high = min(finite, key=lambda p: p[1]), max(finite, key=lambda p: p[1])  # the first of tied values
        assert run.summaries[name] == {"count": len(finite), "first": finite[0][1], "first_step": finite[0][0],
                                       "last": finite[-1][1], "last_step": finite[-1][0], "min": low[1], "min_step": low[0],
                                       "max": high[1], "max_step": high[0]}, name
        assert run.summary(name) == summarize(name, Series(series["steps"], series["values"])), name
    assert run.summaries["train.loss"]["count"] == 298 and run.summaries["train.loss"]["first_step"] == 0
    assert run.summary("lr").best is None and run.summary("lr").last == 0.1


def test_read_runs_mlproj_run_uses_its_summary_not_the_series(tmp_path: Path) -> None:
    folder = observed_run(tmp_path / "runs", [{"validation.loss": ([1, 2], [0.5, 0.3])}])
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    summary["metrics"]["validation.loss"]["min"] = 0.123  # a summary that describes this metrics.json is believed
    (folder / SUMMARY_FILE).write_text(json.dumps(summary))
    (run,) = read_runs(str(tmp_path / "runs"))
    assert run.summary("validation.loss").best == 0.123
    assert run._metrics is None  # the series were never read
    assert not (tmp_path / "runs" / CACHE_FILE).exists()  # nothing to cache


def test_read_runs_summary_of_an_older_metrics_json_is_not_believed(tmp_path: Path) -> None:
    folder = observed_run(tmp_path / "runs", [{"validation.loss": ([1, 2], [0.5, 0.3])}])
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["validation.loss"]["values"] = [0.5, 0.1]  # rewritten by a plain Sacred observer, say
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (run,) = read_runs(str(tmp_path / "runs"))
    assert run.summary("validation.loss").best == 0.1


def plain_sacred_runs(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    write_run(runs, 1, {"lr": 0.1}, {"validation.loss": [1.0, 0.6], "lr": [0.1, 0.1]})
    write_run(runs, 2, {"lr": 0.2}, {"validation.loss": [0.9, 0.4]})
    return runs


def fake_edit(path: Path, old: str, new: str) -> None:
    """Change metrics.json's content but keep its size and mtime: only the cache can tell the old one."""
    st = path.stat()
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_read_runs_plain_sacred_run_summarized_once_then_from_the_cache(tmp_path: Path) -> None:
    runs = plain_sacred_runs(tmp_path)
    first = read_runs(str(runs))
    assert [r.summary("validation.loss").best for r in first] == [0.6, 0.4]
    cache = json.loads((runs / CACHE_FILE).read_text())
    assert sorted(cache["runs"]) == ["1", "2"]
    fake_edit(runs / "1" / "metrics.json", "0.6", "0.5")
    assert read_runs(str(runs))[0].summary("validation.loss").best == 0.6  # from the cache, not the file


def test_read_runs_cache_entry_dropped_when_metrics_json_mtime_changes(tmp_path: Path) -> None:
    runs = plain_sacred_runs(tmp_path)
    read_runs(str(runs))
    fake_edit(runs / "1" / "metrics.json", "0.6", "0.5")
    st = (runs / "1" / "metrics.json").stat()
    os.utime(runs / "1" / "metrics.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a live run wrote it again
    assert read_runs(str(runs))[0].summary("validation.loss").best == 0.5


def test_read_runs_cache_entry_dropped_when_metrics_json_replaced_by_rename(tmp_path: Path) -> None:
    runs = plain_sacred_runs(tmp_path)
    read_runs(str(runs))
    replacement = runs / "1" / "metrics.json.tmp"
    replacement.write_text(json.dumps({"validation.loss": {"steps": [0, 1, 2], "values": [1.0, 0.6, 0.25], "timestamps": []}}))
    os.replace(replacement, runs / "1" / "metrics.json")  # as Sacred and atomic writers do
    first, second = read_runs(str(runs))
    assert first.summary("validation.loss").best == 0.25 and first.summary("validation.loss").count == 3
    assert second.summary("validation.loss").best == 0.4
    assert json.loads((runs / CACHE_FILE).read_text())["runs"]["1"]["metrics"]["validation.loss"]["min"] == 0.25


def test_read_runs_cache_unwritable_still_lists(tmp_path: Path) -> None:
    runs = plain_sacred_runs(tmp_path)
    (runs / ".mlproj-cache").write_text("not a folder")  # the cache cannot be written: listing goes on without it
    assert [r.summary("validation.loss").best for r in read_runs(str(runs))] == [0.6, 0.4]


def test_read_runs_without_summaries_reads_no_metrics(tmp_path: Path) -> None:
    runs = plain_sacred_runs(tmp_path)
    (runs / "1" / "metrics.json").write_text("{damaged")  # the sweep's skip rule must not need it
    assert [r.config["lr"] for r in read_runs(str(runs), summaries=False)] == [0.1, 0.2]
    assert not (runs / CACHE_FILE).exists()


@pytest.mark.parametrize("value", [0.1, 0.3])
def test_best_and_last_of_summary_agree_with_metric_goal(tmp_path: Path, value: float) -> None:
    folder = observed_run(tmp_path, [{"validation.error": ([1, 2, 3], [0.2, value, 0.25]), "test.f1": ([1, 2, 3], [0.2, value, 0.25])}])
    run = read_run(folder)
    assert run.summary("validation.error").best == min(0.2, value)
    assert run.summary("test.f1").best == max(0.25, value)
    assert run.summary("test.f1").last == 0.25 and run.summary("test.f1").last_step == 3


def sweep_runs(tmp_path: Path) -> Path:
    """Three runs of a sweep over lr and a long tag, with the config keys a real run records."""
    runs = tmp_path / "runs"
    base = {"dataset": "digits", "batch_size": 64, "model": "lenet", "optimizer": "adam", "n_epochs": 3, "data_dir": "/data/" + "x" * 60}
    for i, lr in enumerate((0.1, 0.01, 0.001), start=1):
        config = {**base, "lr": lr, "tag": f"a-very-long-tag-that-nobody-reads-whole-{i}"}
        metrics = {"train.loss": [2.0, 1.0], "train.accuracy": [0.1, 0.5], "lr": [lr, lr], "validation.loss": [1.5, 0.9 + i / 10],
                   "validation.accuracy": [0.3, 0.6 + i / 10]}
        write_run(runs, i, config, metrics, info={"run_key": f"k{i}", "benchmark": {"metric": "validation.loss", "lower_is_better": True}})
    return runs


def test_runs_table_benchmark_from_info_long_values_cut_fits_160_columns(tmp_path: Path, capsys) -> None:
    from mlproj.cli import main

    assert main(["runs", str(sweep_runs(tmp_path))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("id  validation.loss best  validation.loss last  status     start                duration  git     lr  tag")
    assert lines[3] == " 3                   1.2                   1.2  COMPLETED  2026-01-03 10:00:00  0:01:30   -    0.001  a-very-long-tag-that-no…"
    assert max(map(len, lines)) <= 160


def test_runs_metrics_option_widens_the_table_and_unknown_metric_one_line(tmp_path: Path, capsys) -> None:
    from mlproj.cli import main

    runs = sweep_runs(tmp_path)
    assert main(["runs", str(runs), "--metrics", "train.loss,lr"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:6] == ["id", "train.loss", "best", "train.loss", "last", "lr"]
    assert main(["runs", str(runs), "--metrics", "train.los"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--metrics train.los: no run logged train.los" in err


def test_runs_json_keeps_every_metric_and_whole_values(tmp_path: Path, capsys) -> None:
    from mlproj.cli import main

    assert main(["runs", str(sweep_runs(tmp_path)), "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert record["tag"] == "a-very-long-tag-that-nobody-reads-whole-1"
    assert {"train.loss best", "train.accuracy last", "lr last", "validation.accuracy best"} <= set(record)


def test_read_mongo_runs_lists_from_summaries_and_fetches_output_on_first_use() -> None:
    import mongomock

    from mlproj.runs.mongo import read_mongo_runs

    database = mongomock.MongoClient().db
    database["runs"].insert_one({"_id": 1, "status": "COMPLETED", "config": {"lr": 0.1}, "captured_out": "epoch 1\n"})
    database["metrics"].insert_one({"run_id": 1, "name": "validation.loss", "steps": [1, 2, 3], "values": [0.9, 0.4, 0.5],
                                    "timestamps": [NOW] * 3})
    (run,) = read_mongo_runs(database)
    assert run.summary("validation.loss").best == 0.4 and run.summary("validation.loss").last_step == 3
    assert run._metrics is None and run._captured_out is None  # listing took neither
    database["runs"].update_one({"_id": 1}, {"$set": {"captured_out": "epoch 1\nepoch 2\n"}})
    assert run.captured_out == "epoch 1\nepoch 2\n"  # read from the database when asked for, not with the list
    assert run.metrics["validation.loss"].values == [0.9, 0.4, 0.5]


def sacred_runs(base: Path, n: int) -> Path:
    """`n` runs recorded by plain Sacred's FileStorageObserver (indented metrics.json, no summaries),
    each with a series of its own and the odd values a series can hold (NaN, inf, ints, text, none)."""
    from sacred.observers import FileStorageObserver

    rng = random.Random(0)
    for i in range(n):
        observer = FileStorageObserver(str(base), copy_sources=False)
        observer.started_event({"name": "t", "base_dir": str(base), "sources": [], "dependencies": [], "repositories": []},
                               "train", {}, NOW, {"lr": 0.1, "seed": i}, {}, None)
        loss = [rng.uniform(0, 2) for _ in range(200)]
        loss[i % 200] = math.nan if i % 3 == 0 else loss[i % 200]
        metrics = {"train.loss": (list(range(200)), loss), "epoch": ([10, 20, 30], [1, 2, 2]), "lr": ([1, 2], [0.1, math.inf]),
                   "note": ([1, 2], ["warm-up", 0.5]), "empty": ([], [])}
        observer.log_metrics({name: {"steps": s, "values": v, "timestamps": [NOW] * len(s)} for name, (s, v) in metrics.items()}, None)
        observer.completed_event(NOW, None)
    return base


class RecordedPool(ProcessPoolExecutor):
    """A real process pool that notes each time one is started (the reader imports it where it uses it)."""

    started: list[int] = []
    start_methods: list[str] = []

    def __init__(self, max_workers: int, mp_context=None) -> None:
        super().__init__(max_workers, mp_context=mp_context)
        RecordedPool.started.append(max_workers)
        RecordedPool.start_methods.append(mp_context.get_start_method())


@pytest.fixture
def recorded_pool(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    RecordedPool.started, RecordedPool.start_methods = [], []
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", RecordedPool)
    monkeypatch.setattr(reader, "usable_cpus", lambda: 2)  # workers even where this test runs on one CPU
    return RecordedPool.started


def test_read_runs_many_plain_sacred_runs_summarized_in_workers_as_json_reads_them(tmp_path: Path, recorded_pool: list[int]) -> None:
    runs = sacred_runs(tmp_path / "runs", reader.PARALLEL_FROM)
    listed = read_runs(str(runs))
    assert recorded_pool == [2]
    assert [r.id for r in listed] == list(range(1, reader.PARALLEL_FROM + 1))
    for run in listed:
        assert not (Path(run.path) / SUMMARY_FILE).exists()  # Sacred's own record: read, not given a summary
        assert run.summaries == summarize_series(json.loads((Path(run.path) / "metrics.json").read_text())), run.id
    assert listed[0].summaries["train.loss"]["count"] == 199 and listed[1].summaries["train.loss"]["count"] == 200  # NaN left out
    assert listed[0].summaries["epoch"] == {"count": 3, "first": 1, "first_step": 10, "last": 2, "last_step": 30,
                                            "min": 1, "min_step": 10, "max": 2, "max_step": 20}
    assert listed[0].summaries["empty"] == {"count": 0}
    cache = json.loads((runs / CACHE_FILE).read_text())["runs"]
    assert sorted(cache, key=int) == [str(r.id) for r in listed]
    assert all(cache[str(r.id)]["metrics"] == r.summaries for r in listed)


def test_read_runs_few_plain_sacred_runs_summarized_without_workers(tmp_path: Path, recorded_pool: list[int]) -> None:
    runs = sacred_runs(tmp_path / "runs", reader.PARALLEL_FROM - 1)
    listed = read_runs(str(runs))
    assert recorded_pool == []  # starting them would cost more than it saves
    assert all(r.summaries == summarize_series(json.loads((Path(r.path) / "metrics.json").read_text())) for r in listed)


def test_read_runs_cached_runs_start_no_workers(tmp_path: Path, recorded_pool: list[int]) -> None:
    runs = sacred_runs(tmp_path / "runs", reader.PARALLEL_FROM)
    first = [r.summaries for r in read_runs(str(runs))]
    assert [r.summaries for r in read_runs(str(runs))] == first
    assert recorded_pool == [2]  # the second listing came from the cache


def test_read_runs_damaged_metrics_json_read_in_a_worker_says_so_in_one_line(tmp_path: Path, recorded_pool: list[int]) -> None:
    runs = sacred_runs(tmp_path / "runs", reader.PARALLEL_FROM)
    (runs / "7" / "metrics.json").write_text('{"train.loss": {"steps": [1, 2], "values": [0.5,')  # cut short
    with pytest.raises(MLProjError, match=r"runs/7/metrics.json is not valid JSON .* move that run folder away") as err:
        read_runs(str(runs))
    assert recorded_pool == [2] and "\n" not in str(err.value)


def test_read_runs_from_a_process_running_threads_spawns_its_workers(tmp_path: Path, recorded_pool: list[int]) -> None:
    # A fork copies other threads' locks mid-use (a notebook, an app): such a process spawns its workers.
    import threading

    runs = sacred_runs(tmp_path / "runs", reader.PARALLEL_FROM)
    stop = threading.Event()
    busy = threading.Thread(target=stop.wait)
    busy.start()
    try:
        listed = read_runs(str(runs))
    finally:
        stop.set()
        busy.join()
    assert RecordedPool.start_methods == ["spawn"]
    assert listed[1].summaries == summarize_series(json.loads((Path(listed[1].path) / "metrics.json").read_text()))
    read_runs(str(tmp_path / "runs"))  # all cached now: no pool at all
    assert RecordedPool.start_methods == ["spawn"]
