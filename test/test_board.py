"""mlproj board, through Flask's test client: the pages show what `mlproj runs/show/compare` print,
curves come downsampled as JSON, a running run is followed, and bad requests get a 4xx and one log line."""

from __future__ import annotations

import contextlib
import html
import json
import logging
import math
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import write_run

from mlproj.board import create_app
from mlproj.board.catalog import Catalog, Query
from mlproj.errors import MLProjError
from mlproj.runs.arrays import read_metric_arrays
from mlproj.runs.reader import read_metric_values, read_runs
from mlproj.runs.record import STALE_HEARTBEAT
from mlproj.runs.rows import run_rows
from mlproj.util.series import downsample

BENCHMARK = {"metric": "validation.loss", "lower_is_better": True}


def make_runs(runs: Path) -> Path:
    """Six runs of a sweep over lr (each drew its seed); run 3's command line set its model to `<script>`,
    run 1 has output and an artifact."""
    for i in range(1, 7):
        write_run(runs, i, {"lr": [0.1, 0.01][i % 2], "seed": (i - 1) // 2, "model": "<script>alert(1)</script>" if i == 3 else "mlp"},
                  {"train.loss": [1.0 / (j + 1) + 0.01 * i for j in range(50)], "validation.loss": [0.9 - 0.1 * i + 0.001 * j for j in range(5)]},
                  info={"run_key": f"key-{i}", "sweep": {"name": "lr-sweep", "trial": i, "of": 6}, "benchmark": BENCHMARK})
    record = json.loads((runs / "3" / "run.json").read_text())
    record["meta"]["config_updates"]["model"] = "<script>alert(1)</script>"
    (runs / "3" / "run.json").write_text(json.dumps(record))
    (runs / "1" / "cout.txt").write_text("epoch 1 <b>not bold</b>\nepoch 2\n")
    (runs / "1" / "last.pt").write_bytes(b"weights" * 10)
    return runs


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    return make_runs(tmp_path / "runs")


@pytest.fixture
def client(runs: Path):
    return create_app(runs).test_client()


def text_of(page: bytes) -> str:
    """What a person reads on the page: its text without tags, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page.decode()))


def table_header(page: bytes) -> list[str]:
    head = re.search(rb"<table class=\"runs\"[^>]*>\s*<thead>(.*?)</thead>", page, re.S).group(1).decode()
    return [html.unescape(re.sub(r"<[^>]+>|[▲▼]", "", cell)).strip() for cell in re.findall(r"<th[^>]*>(.*?)</th>", head, re.S)][1:]


def row_ids(page: bytes) -> list[int]:
    return [int(i) for i in re.findall(rb'class="run-link" href="/runs/(\d+)"', page)]


# ------------------------------------------------------------------------------ runs table
def test_board_runs_table_has_the_columns_of_mlproj_runs(client, runs: Path) -> None:
    page = client.get("/").data
    all_runs = read_runs(str(runs))
    assert table_header(page) == list(run_rows(all_runs, metrics=["validation.loss"])[0])
    assert "validation.loss best" in table_header(page) and "lr" in table_header(page)


def test_board_runs_table_with_a_test_run_has_its_test_columns(runs: Path) -> None:
    write_run(runs, 7, {"lr": 0.1, "seed": 0, "model": "mlp"}, {"test.loss": [0.25]},
              info={"run_key": "key-7", "benchmark": BENCHMARK})
    header = table_header(create_app(runs).test_client().get("/").data)
    assert "test.loss best" in header and "test.loss last" in header  # as `mlproj runs` lists them (listed_metrics)
    assert header == list(run_rows(read_runs(str(runs)), metrics=["validation.loss", "test.loss"])[0])


def test_board_runs_table_best_column_sorted_best_first_as_the_record_says(client) -> None:
    # validation.loss is lower-is-better by its record: the best first is the lowest (run 6).
    page = client.get("/", query_string={"sort": "validation.loss best", "desc": "1"}).data
    assert row_ids(page) == [6, 5, 4, 3, 2, 1]
    assert re.search(rb'class="num best"[^>]*>0.3<', page)  # run 6's best, 0.9 - 0.6, marked the best
    assert row_ids(client.get("/", query_string={"sort": "validation.loss best", "desc": "0"}).data) == [1, 2, 3, 4, 5, 6]


def test_board_runs_table_filters_by_status_config_and_text(client, runs: Path) -> None:
    run_json = runs / "2" / "run.json"
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "status": "FAILED"}))
    client = create_app(runs).test_client()
    assert row_ids(client.get("/?status=FAILED").data) == [2]
    assert sorted(row_ids(client.get("/", query_string={"where": "lr=0.1 seed=1"}).data)) == [4]
    assert row_ids(client.get("/", query_string={"q": "<script>"}).data) == [3]


def test_board_runs_table_pages_on_the_server(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for i in range(1, 61):
        folder = write_run(runs, i, {"lr": 0.1 * i}, {"validation.loss": [1.0 / i]}, info={"run_key": f"k{i}"})
        record = json.loads((folder / "run.json").read_text())  # write_run dates runs 1 to 9 only
        (folder / "run.json").write_text(json.dumps({**record, "start_time": "2026-01-01T10:00:00", "stop_time": None, "heartbeat": None}))
    client = create_app(runs).test_client()
    first = client.get("/?size=25").data
    assert row_ids(first) == list(range(60, 35, -1))  # newest first
    assert row_ids(client.get("/?size=25&page=3").data) == list(range(10, 0, -1))
    assert "60 of 60 runs" in text_of(first) and "page 1 of 3" in text_of(first)
    assert client.get("/?size=25&page=4").status_code == 404


# ------------------------------------------------------------------------------ run page
def test_board_run_page_shows_config_pin_result_output_artifacts_and_rerun(client, runs: Path) -> None:
    info = json.loads((runs / "1" / "info.json").read_text())
    info["git"] = {"snapshot": "0123456789abcdef", "head": "fedcba9876543210", "branch": "main", "dirty": True, "ref": "refs/mlproj/runs/key-1"}
    (runs / "1" / "info.json").write_text(json.dumps(info))
    page = client.get("/runs/1")
    text = text_of(page.data)
    assert page.status_code == 200
    assert "refs/mlproj/runs/key-1" in text and "fedcba9* on main (dirty)" in text  # the pin, as mlproj show says it
    assert "epoch 1 <b>not bold</b>" in text and b"<b>not bold</b>" not in page.data  # output is text
    assert 'href="/runs/1/artifacts/last.pt"' in page.data.decode() and "70 Bytes" in text
    assert "main.py train with lr=0.01 seed=0" in text  # rerun_command
    assert "seed" in text and "validation.loss" in text


def test_board_config_value_script_is_shown_as_text(client) -> None:
    for url in ("/runs/3", "/", "/compare?run=1&run=3", "/sweeps/lr-sweep"):
        page = client.get(url).data
        assert b"<script>alert(1)</script>" not in page, url
        assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in page, url


def test_board_artifact_downloads_as_an_attachment(client) -> None:
    response = client.get("/runs/1/artifacts/last.pt")
    assert response.status_code == 200 and response.data == b"weights" * 10
    assert response.headers["Content-Disposition"].startswith("attachment")


def test_board_plain_sacred_runs_show_up(tmp_path: Path) -> None:
    from sacred.observers import FileStorageObserver

    runs, now = tmp_path / "runs", datetime(2026, 1, 1, tzinfo=timezone.utc).replace(tzinfo=None)
    observer = FileStorageObserver(str(runs), copy_sources=False)
    observer.started_event({"name": "plain", "base_dir": str(tmp_path), "sources": [], "dependencies": [], "repositories": []},
                           "main", {"hostname": "h"}, now, {"alpha": 0.5}, {}, None)
    observer.log_metrics({"loss": {"steps": [1, 2, 3], "values": [0.9, 0.5, 0.7], "timestamps": [now] * 3}}, None)
    observer.completed_event(now, 0.5)
    client = create_app(runs).test_client()
    assert row_ids(client.get("/").data) == [1]
    page = text_of(client.get("/runs/1").data)
    assert "plain" in page and "alpha" in page and "not pinned" in page
    assert client.get("/api/runs/1/curves").get_json()["metrics"]["loss"]["values"] == [0.9, 0.5, 0.7]


# ------------------------------------------------------------------------------ curves and live runs
def test_board_curves_downsampled_keep_the_spike(tmp_path: Path) -> None:
    n = 50_000
    values = [math.sin(i / 1000) for i in range(n)]
    values[31_337] = 40.0
    write_run(tmp_path / "runs", 1, {}, {"train.loss": values})
    curve = create_app(tmp_path / "runs").test_client().get("/api/runs/1/curves").get_json()["metrics"]["train.loss"]
    assert curve["count"] == n and len(curve["steps"]) <= 2 * 1000 + 2
    assert max(curve["values"]) == 40.0 and 31_337 in curve["steps"]
    assert curve["steps"][0] == 0 and curve["steps"][-1] == n - 1


def test_curve_cache_workers_read_a_large_file_as_one_process_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlproj.board.curves as curves

    series = {f"m{k}": [math.cos(i / 50 + k) for i in range(6000)] for k in range(5)}
    write_run(tmp_path / "runs", 1, {}, series)
    run = read_runs(str(tmp_path / "runs"))[0]
    alone = curves.downsampled_metrics(run.path, None, curves.BUCKETS)
    monkeypatch.setattr(curves, "PARALLEL_BYTES", 0)  # every file is large: the workers read it
    cache = curves.CurveCache()
    cache.start_workers(1)
    try:
        assert cache._pool is not None
        assert cache.run_curves(run) == alone and len(alone) == 5 and len(alone["m0"]["steps"]) < 6000
    finally:
        cache.close()


def test_downsample_keeps_min_and_max_of_each_bucket_and_drops_nan() -> None:
    values = [0.0] * 1000
    values[10], values[500], values[501] = -3.0, 7.0, math.nan
    steps, kept = downsample(list(range(1000)), values, 10)
    assert len(steps) <= 22 and -3.0 in kept and 7.0 in kept and all(v == v for v in kept)
    assert downsample([1, 2, 3], [1.0, None, 3.0], 10) == ([1, 3], [1.0, 3.0])


def test_read_metric_arrays_numbers_json_reads_differently_stay_as_json_reads_them(tmp_path: Path) -> None:
    metrics = {"big": {"steps": [1, 2**70], "values": [0.1, float("nan")]}, "floats": {"steps": [0.5, 1.5], "values": [float("inf"), -1e300]}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    read = read_metric_arrays(str(tmp_path))
    assert read["big"][0] == [1, 2**70]  # past int64: json's whole integer, not numpy's clamped one
    assert read["floats"][0] == [0.5, 1.5] and list(read["floats"][1]) == [float("inf"), -1e300]
    assert math.isnan(read["big"][1][1])


@pytest.mark.parametrize("indent", [None, 2])
def test_read_metric_arrays_equals_the_whole_read(tmp_path: Path, indent: int | None) -> None:
    metrics = {"a": {"steps": list(range(0, 300, 3)), "timestamps": ["2026-01-01T00:00:00"] * 100, "values": [i / 7 for i in range(100)]},
               "b]": {"steps": [5, 1, 9], "timestamps": ["t"] * 3, "values": [1, "NaN-ish", None]}, "empty": {"steps": [], "values": []}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics, indent=indent))
    whole = {name: (m["steps"], m["values"]) for name, m in read_metric_values(str(tmp_path)).items()}
    read = {name: (list(steps), list(values)) for name, (steps, values) in read_metric_arrays(str(tmp_path)).items()}
    assert read == whole
    (steps, values), = read_metric_arrays(str(tmp_path), ["b]"]).values()
    assert list(steps) == [5, 1, 9] and values == [1, "NaN-ish", None]  # text among the values: json's list


def test_read_metric_arrays_finds_arrays_cut_by_the_pieces_it_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlproj.runs.arrays as reader

    metrics = {f"m{i}": {"steps": list(range(i, 400 + i)), "timestamps": ["2026-01-01T00:00:00"] * 400, "values": [i + k / 3 for k in range(400)]}
               for i in range(5)}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    monkeypatch.setattr(reader, "_CHUNK", 97)  # a piece ends inside names, array starts and arrays
    read = {name: (list(steps), list(values)) for name, (steps, values) in read_metric_arrays(str(tmp_path)).items()}
    assert read == {name: (m["steps"], m["values"]) for name, m in metrics.items()}


def test_board_live_sends_output_after_the_offset_and_new_metrics(runs: Path) -> None:
    run_json = runs / "1" / "run.json"
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "status": "RUNNING", "stop_time": None,
                                    "heartbeat": datetime.now(timezone.utc).replace(tzinfo=None).isoformat()}))
    client = create_app(runs).test_client()
    first = client.get("/api/runs/1/live?offset=0").get_json()
    assert first["running"] and first["status"] == "RUNNING" and first["output"].startswith("epoch 1")
    with open(runs / "1" / "cout.txt", "a") as f:
        f.write("epoch 3\n")
    metrics = runs / "1" / "metrics.json"
    metrics.write_text(json.dumps({"train.loss": {"steps": [0, 1], "values": [2.0, 1.0], "timestamps": []}}))
    later = client.get(f"/api/runs/1/live?offset={first['offset']}").get_json()
    assert later["output"] == "epoch 3\n" and later["stamp"] != first["stamp"]
    assert client.get("/api/runs/1/curves").get_json()["metrics"]["train.loss"]["values"] == [2.0, 1.0]


def test_catalog_sees_new_gone_and_finished_runs_without_rereading_all(runs: Path) -> None:
    now = [0.0]
    catalog = Catalog(str(runs), clock=lambda: now[0])
    run_json = runs / "2" / "run.json"
    record = json.loads(run_json.read_text())
    run_json.write_text(json.dumps({**record, "status": "RUNNING"}))
    assert len(catalog.runs()) == 6 and catalog.table(Query()).total == 6
    write_run(runs, 7, {"lr": 0.5}, {"validation.loss": [0.1]})
    import shutil

    shutil.rmtree(runs / "5")
    run_json.write_text(json.dumps({**record, "status": "FAILED"}))
    assert 7 not in {r.id for r in catalog.runs()}  # within CHECK_S: the snapshot is trusted
    now[0] = 10.0
    seen = {r.id: r.status for r in catalog.runs()}
    assert sorted(seen) == [1, 2, 3, 4, 6, 7] and seen[2] == "FAILED"
    assert [row["id"] for row in catalog.table(Query()).rows] == [7, 6, 4, 3, 2, 1]
    (runs / "8").mkdir()
    (runs / "8" / "run.json").write_text('{"status": "RUNN')  # caught mid-write
    now[0] = 20.0
    assert 8 not in {r.id for r in catalog.runs()}
    (runs / "8" / "run.json").write_text('{"status": "RUNNING"}')
    now[0] = 30.0
    assert {r.id: r.status for r in catalog.runs()}[8] == "RUNNING"



def test_catalog_reused_id_and_rewritten_queued_record_are_read_again(runs: Path) -> None:
    import shutil

    now = [0.0]
    catalog = Catalog(str(runs), clock=lambda: now[0])
    run_json = runs / "4" / "run.json"
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "status": "QUEUED"}))  # plain Sacred's queued run
    seen = {run.id: run for run in catalog.runs()}
    assert seen[3].config["model"] != "cnn" and seen[4].status == "QUEUED"
    shutil.rmtree(runs / "3")
    write_run(runs, 3, {"lr": 0.1, "seed": 9, "model": "cnn"}, {"validation.loss": [0.05]})  # a new run got id 3
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "status": "COMPLETED"}))
    now[0] = 10.0
    seen = {run.id: run for run in catalog.runs()}
    assert seen[3].config["model"] == "cnn" and seen[4].status == "COMPLETED"
    assert {row["id"]: row["status"] for row in catalog.table(Query()).rows}[4] == "COMPLETED"


def test_catalog_table_running_run_whose_heartbeat_stops_turns_probably_dead(runs: Path) -> None:
    now = [0.0]
    catalog = Catalog(str(runs), clock=lambda: now[0])
    run_json = runs / "2" / "run.json"
    # The heartbeat goes stale (runs/record.py STALE_HEARTBEAT) 2 s from now, with no file changing.
    beat = datetime.now(timezone.utc).replace(tzinfo=None) - STALE_HEARTBEAT + timedelta(seconds=2)
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "status": "RUNNING", "stop_time": None,
                                    "heartbeat": beat.isoformat()}))
    assert {row["id"]: row["status"] for row in catalog.table(Query()).rows}[2] == "RUNNING"
    time.sleep(max(0.0, (beat + STALE_HEARTBEAT - datetime.now(timezone.utc).replace(tzinfo=None)).total_seconds()) + 0.2)
    now[0] = 10.0
    assert {row["id"]: row["status"] for row in catalog.table(Query()).rows}[2] == "PROBABLY_DEAD"

def running(runs: Path, run_id: int, heartbeat: datetime | None = None) -> None:
    """Make run `run_id` RUNNING, its heartbeat `heartbeat` (default now)."""
    run_json = runs / str(run_id) / "run.json"
    beat = heartbeat or datetime.now(timezone.utc).replace(tzinfo=None)
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "status": "RUNNING", "stop_time": None, "heartbeat": beat.isoformat()}))


def test_catalog_run_folder_whose_record_cannot_be_read_is_listed_unreadable(runs: Path) -> None:
    (runs / "7").mkdir()
    (runs / "7" / "run.json").write_text("not json")
    client = create_app(runs).test_client()  # its first look meets the bad folder
    page = client.get("/")
    assert page.status_code == 200 and row_ids(page.data) == [6, 5, 4, 3, 2, 1]
    assert re.search(r"run folder 7: \S*run\.json is not valid JSON", text_of(page.data))
    assert client.get("/sweeps").status_code == 200 and client.get("/runs/7").status_code == 400


def test_catalog_run_folder_damaged_after_the_first_look_is_listed_unreadable(runs: Path) -> None:
    now = [0.0]
    catalog = Catalog(str(runs), clock=lambda: now[0])
    assert len(catalog.runs()) == 6 and catalog.table(Query()).unreadable == []
    write_run(runs, 7, {"lr": 0.5}, {"validation.loss": [0.1]})
    (runs / "7" / "metrics.json").write_text('{"validation.loss": {"steps": [0')  # a finished run's metrics, damaged
    (runs / "8").mkdir()
    (runs / "8" / "run.json").write_text("{")
    now[0] = 10.0
    table = catalog.table(Query())
    assert [row["id"] for row in table.rows] == [6, 5, 4, 3, 2, 1] and [i for i, _ in table.unreadable] == [7, 8]
    (runs / "8" / "run.json").write_text('{"status": "COMPLETED"}')  # mended: read at the next check
    now[0] = 20.0
    assert 8 in {run.id for run in catalog.runs()} and [i for i, _ in catalog.table(Query()).unreadable] == [7]
    (runs / "7" / "metrics.json").write_text('{"validation.loss": {"steps": [0], "values": [0.1], "timestamps": []}}')
    (runs / "7" / "run.json").touch()  # read again when its run.json changes
    now[0] = 30.0
    assert catalog.table(Query()).unreadable == [] and 7 in {run.id for run in catalog.runs()}


def test_catalog_running_run_half_written_metrics_keeps_its_last_summaries(runs: Path) -> None:
    running(runs, 2)
    now = [0.0]
    app = create_app(runs)
    app.extensions["mlproj.catalog"] = Catalog(str(runs), clock=lambda: now[0])
    client = app.test_client()
    before = client.get("/?sort=id&desc=0").data
    metrics = runs / "2" / "metrics.json"
    metrics.write_text(metrics.read_text()[:40])  # caught while plain Sacred rewrites it in place
    running(runs, 2)  # and its heartbeat touched run.json
    now[0] = 10.0
    after = client.get("/?sort=id&desc=0")
    assert after.status_code == 200 and row_ids(after.data) == [1, 2, 3, 4, 5, 6]
    def cells(page: bytes) -> list[bytes]:  # but a RUNNING run's duration, which grows by the second
        return [c for c in re.findall(rb"<td[^>]*>([^<]*)</td>", page) if not re.fullmatch(rb"(\d+ days?, )?\d+:\d\d:\d\d", c)]

    assert cells(after.data) == cells(before)
    assert re.search(r"validation.loss\s+0.7\s", text_of(client.get("/runs/2").data))  # its best, as last read
    assert client.get("/api/runs/2/live").get_json()["metrics"] == ["train.loss", "validation.loss"]
    assert client.get("/api/runs/2/curves").status_code == 503  # try again, not a damaged record
    for group in ("", "&group=seed"):
        assert client.get(f"/api/compare/curves?run=2&run=3&metric=validation.loss{group}").status_code == 503
    assert create_app(runs).test_client().get("/").status_code == 200  # a board started now
    metrics.write_text(json.dumps({"validation.loss": {"steps": [0], "values": [0.05], "timestamps": []}}))  # written whole
    now[0] = 20.0
    assert {row["id"]: row["validation.loss best"] for row in app.extensions["mlproj.catalog"].table(Query()).rows}[2] == 0.05


def test_catalog_run_pages_reuse_the_summaries_while_metrics_unchanged(client, runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlproj.runs.reader as reader

    client.get("/")
    reads = []
    summarize = reader.summarize_metrics_json
    monkeypatch.setattr(reader, "summarize_metrics_json", lambda path: reads.append(path) or summarize(path))
    for url in ("/runs/1", "/runs/1", "/api/runs/1/live"):
        assert client.get(url).status_code == 200
    assert reads == []
    (runs / "1" / "metrics.json").write_text(json.dumps({"train.loss": {"steps": [0], "values": [3.0], "timestamps": []}}))
    assert b"train.loss" in client.get("/runs/1").data and client.get("/runs/1").status_code == 200
    assert reads == [str(runs / "1")]  # read once when it changed


def test_catalog_run_that_finishes_while_first_read_is_seen_finished(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlproj.board.catalog as catalog_module

    running(runs, 2)
    read_all = catalog_module.read_runs

    def read_then_finish(runs_dir: str) -> list:
        found = read_all(runs_dir)  # run 2 read RUNNING; it finishes before the catalog looks at its files
        run_json = runs / "2" / "run.json"
        run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "status": "COMPLETED", "stop_time": "2026-01-02T11:00:00"}))
        return found

    monkeypatch.setattr(catalog_module, "read_runs", read_then_finish)
    now = [0.0]
    catalog = Catalog(str(runs), clock=lambda: now[0])
    assert {run.id: run.status for run in catalog.runs()}[2] == "RUNNING"
    now[0] = 10.0
    assert {run.id: run.status for run in catalog.runs()}[2] == "COMPLETED"


def test_catalog_probably_dead_filter_sees_a_heartbeat_stop(runs: Path) -> None:
    beat = datetime.now(timezone.utc).replace(tzinfo=None) - STALE_HEARTBEAT + timedelta(seconds=1)
    running(runs, 2, beat)
    now = [0.0]
    catalog = Catalog(str(runs), clock=lambda: now[0])
    assert catalog.table(Query(status="PROBABLY_DEAD")).rows == []
    time.sleep(max(0.0, (beat + STALE_HEARTBEAT - datetime.now(timezone.utc).replace(tzinfo=None)).total_seconds()) + 0.2)
    now[0] = 10.0
    assert [row["id"] for row in catalog.table(Query(status="PROBABLY_DEAD")).rows] == [2]


def test_catalog_tables_kept_are_bounded_by_their_rows(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlproj.board.catalog as catalog_module

    monkeypatch.setattr(catalog_module, "ROWS_KEPT", 10)
    catalog = Catalog(str(runs))
    first = catalog.table(Query())
    assert catalog.table(Query()) is first  # kept: 6 rows
    catalog.table(Query(sort="lr"))  # 12 rows kept: the oldest table goes
    assert catalog.table(Query()) is not first
    monkeypatch.setattr(catalog_module, "ROWS_KEPT", 3)
    newest = catalog.table(Query(sort="seed"))
    assert catalog.table(Query(sort="seed")) is newest  # the newest is kept, whatever its size


def test_catalog_linked_run_folder_outside_the_runs_dir_is_not_served(runs: Path, tmp_path: Path) -> None:
    elsewhere = write_run(tmp_path / "elsewhere", 3, {"lr": 0.3}, {"validation.loss": [0.2]})
    (runs / "7").symlink_to(elsewhere)
    client = create_app(runs).test_client()
    assert 7 not in row_ids(client.get("/").data) and client.get("/runs/7").status_code == 404


# ------------------------------------------------------------------------------ compare
def test_board_compare_shows_only_the_config_keys_that_differ(client) -> None:
    page = client.get("/compare?run=1&run=3").data
    table = re.search(rb'id="config-diff">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    assert re.findall(rb"<tr><th>([^<]+)</th>", table) == [b"model", b"seed"]  # lr is 0.01 in both
    assert "No source diff: run 1 is not pinned" in text_of(page)


def test_board_compare_groups_by_seed_into_mean_and_std_bands(client) -> None:
    query = "run=1&run=2&run=3&run=4&run=5&run=6"
    page = client.get(f"/compare?{query}&group=seed").data
    assert b'id="groups"' in page
    body = client.get(f"/api/compare/curves?{query}&metric=train.loss&group=seed").get_json()
    assert body["group_by"] == "seed" and len(body["series"]) == 3  # lr 0.1, lr 0.01 with mlp, and run 3's model
    assert sorted(s["n"] for s in body["series"]) == [1, 2, 3]
    band = next(s for s in body["series"] if s["n"] == 2)  # runs 1 and 5: lr=0.01, model=mlp, seeds 0 and 2
    assert band["label"].startswith("lr=0.01, model=mlp")
    values = [1.0 + 0.01 * i for i in (1, 5)]  # their train.loss at step 0
    mean = sum(values) / len(values)
    assert band["values"][0] == pytest.approx(mean)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    assert band["high"][0] - band["values"][0] == pytest.approx(std)


def test_board_compare_overlays_each_run_on_the_union_of_steps(client) -> None:
    body = client.get("/api/compare/curves?run=1&run=2&metric=validation.loss").get_json()
    assert body["x"] == [0, 1, 2, 3, 4] and [s["label"] for s in body["series"]] == ["run 1, lr=0.01", "run 2, lr=0.1"]


def test_board_compare_source_diff_is_between_pinned_runs(client, runs: Path) -> None:
    for i, snapshot in ((2, "a" * 40), (3, "b" * 40)):
        info = json.loads((runs / str(i) / "info.json").read_text())
        (runs / str(i) / "info.json").write_text(json.dumps({**info, "git": {"snapshot": snapshot, "commit": snapshot}}))
    page = text_of(client.get("/compare?run=1&run=2&run=3").data)  # run 1 is not pinned
    assert "mlproj diff 2 3" in page


# ------------------------------------------------------------------------------ sweeps and studies
def test_board_sweep_page_lists_its_trials(client) -> None:
    assert "lr-sweep" in text_of(client.get("/sweeps").data)
    page = client.get("/sweeps/lr-sweep").data
    assert "6 recorded trials of 6 planned" in text_of(page)
    assert row_ids(page) == [1, 2, 3, 4, 5, 6]


def test_board_sweep_page_lists_only_the_keys_the_sweep_varied(client) -> None:
    # The trials' command lines set lr and model (meta.config_updates); seed differs but was not set.
    header = table_header(client.get("/sweeps/lr-sweep").data)
    assert header[:4] == ["trial", "id", "lr", "model"] and "seed" not in header


def test_board_sweep_and_study_named_with_a_slash_have_their_pages(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for i in (1, 2):
        write_run(runs, i, {"lr": 0.1 * i}, {"validation.loss": [0.5 / i]},
                  info={"run_key": f"k{i}", "sweep": {"name": "grid/lr", "trial": i, "of": 2}, "tune": {"study": "opt/lr", "trial": i, "params": {"lr": 0.1 * i}}})
    client = create_app(runs).test_client()
    links = re.findall(rb'href="(/(?:sweeps|studies)/[^"]+)"', client.get("/sweeps").data)
    assert sorted(links) == [b"/studies/opt/lr", b"/sweeps/grid/lr"]
    for link in links:
        assert row_ids(client.get(link.decode()).data) == [1, 2]


def test_board_study_page_shows_params_run_status_and_value(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for trial, (lr, value, pruned) in enumerate([(0.01, 0.8, False), (0.1, 0.9, False), (0.5, None, True)]):
        folder = write_run(runs, trial + 1, {"lr": lr}, {"validation.accuracy": [0.5, value or 0.1]},
                           info={"run_key": f"t{trial}", "tune": {"study": "s1", "trial": trial, "params": {"lr": lr}, "pruned": pruned}})
        record = json.loads((folder / "run.json").read_text())
        (folder / "run.json").write_text(json.dumps({**record, "result": value}))
    client = create_app(runs).test_client()
    assert "s1" in text_of(client.get("/sweeps").data)
    page = client.get("/studies/s1").data
    # the run's status, named so: Optuna's state (COMPLETE) is not recorded in the run
    assert table_header(page)[:5] == ["trial", "id", "run status", "value", "lr"]
    assert "PRUNED" in text_of(page) and re.search(rb'class="num best"[^>]*>0.9<', page)


# ------------------------------------------------------------------------------ safety
@pytest.mark.parametrize(("url", "code"), [
    ("/runs/..%2F..%2Fetc%2Fpasswd", 404),          # a path outside the runs dir
    ("/static/..%2F..%2Fsetup.cfg", 404),
    ("/runs/1/artifacts/..%2F2%2Frun.json", 404),    # an artifact name with ..
    ("/runs/1/artifacts/%2Fetc%2Fpasswd", 404),
    ("/runs/abc", 404),                              # a run id that is not one
    ("/runs/99", 404),
    ("/api/runs/-1/curves", 404),
    ("/compare?run=1", 400),
    ("/compare?run=1&run=1", 400),
    ("/compare?run=1&run=%201", 400),                # run 1 named twice, spelt differently
    ("/compare?run=1&run=01", 400),
    ("/compare?" + "&".join(f"run={i}" for i in range(1, 12)), 400),
    ("/?q=" + "x" * 5000, 414),                      # a request too large
    ("/?page=x", 400),
    ("/?page=%C2%B2", 400),                          # digits to isdigit(), not to int(): ², ٢
    ("/?size=%C2%B2", 400),
    ("/api/runs/1/live?offset=%C2%B2", 400),
    ("/?where=%22unclosed", 400),
    ("/?where=novalue", 400),
    ("/api/runs/1/live?offset=-5", 400),
    ("/api/compare/curves?run=1&run=2&metric=nope", 404),
])
def test_board_bad_request_gets_a_4xx_and_one_log_line(client, caplog, url: str, code: int) -> None:
    with caplog.at_level(logging.INFO, logger="mlproj.board"):
        response = client.get(url)
    assert response.status_code == code
    assert b"Traceback" not in response.data and b"File \"" not in response.data
    assert len([r for r in caplog.records if r.name == "mlproj.board"]) == 1
    assert str(code) in caplog.records[0].getMessage()


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:80", "localhost:8765", "127.0.0.1.attacker.example"])
def test_board_foreign_host_header_gets_a_400_and_one_log_line(client, caplog, host: str) -> None:
    # DNS rebinding: another site's name, pointed at 127.0.0.1, or a loopback name on another port.
    with caplog.at_level(logging.INFO, logger="mlproj.board"):
        response = client.get("/runs/1/artifacts/last.pt", headers={"Host": host})
    assert response.status_code == 400 and len(caplog.records) == 1 and "is not this board's address" in caplog.records[0].getMessage()


@pytest.mark.parametrize("base", ["http://localhost:8765", "http://127.0.0.1:8765", "http://[::1]", "http://LocalHost"])
def test_board_loopback_host_on_its_port_is_served(client, base: str) -> None:
    assert client.get("/runs/1", base_url=base).status_code == 200


def test_board_served_on_an_address_answers_that_address(runs: Path) -> None:
    client = create_app(runs, host="10.1.2.3").test_client()
    assert client.get("/runs/1", base_url="http://10.1.2.3:8765").status_code == 200
    assert client.get("/runs/1", base_url="http://10.1.2.4:8765").status_code == 400


def test_board_log_line_of_a_path_with_a_newline_is_one_line(client, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="mlproj.board"):
        client.get("/runs/1%0A2026-12-05 mlproj.board WARNING forged%1B[2J")
    [line] = [r.getMessage() for r in caplog.records]
    assert "\n" not in line and "\x1b" not in line and "1\\n2026-12-05" in line and "\\x1b[2J" in line


def test_board_request_body_too_large_is_refused(client, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="mlproj.board"):
        response = client.get("/", data=b"x" * 100_000)
    assert response.status_code == 413 and len(caplog.records) == 1


def test_board_pages_load_scripts_only_from_the_board(client) -> None:
    response = client.get("/runs/1")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert not re.search(rb"<script(?![^>]*(src=|type=\"application/json\"))", response.data)  # no inline script
    data = re.search(rb'<script type="application/json" id="board-data">(.*?)</script>', response.data, re.S).group(1)
    assert json.loads(data)["curves"] == "/api/runs/1/curves"


def test_board_static_uplot_is_vendored(client) -> None:
    for name in ("uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE", "board.js", "board.css"):
        assert client.get(f"/static/{name}").status_code == 200, name
    assert b"uPlot" in client.get("/static/uPlot.iife.min.js").data


def test_create_app_missing_runs_dir_raises(tmp_path: Path) -> None:
    with pytest.raises(MLProjError, match="does not exist"):
        create_app(tmp_path / "nope")


# ------------------------------------------------------------------------------ the command
@contextlib.contextmanager
def served(runs: Path, *args: str) -> Iterator[tuple[str, list[str]]]:
    """`mlproj board RUNS --port 0 ARGS` running: its address (http://127.0.0.1:PORT/) and the lines it printed first."""
    import urllib.request

    process = subprocess.Popen([sys.executable, "-m", "mlproj.cli", "board", str(runs), "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        url = re.search(r"open (http://127\.0\.0\.1:\d+/)", "".join(lines)).group(1)
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(url + "static/board.css", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url, lines
    finally:
        process.terminate()
        process.wait(timeout=10)


def raw_request(url: str, request: bytes, timeout: float = 5.0) -> bytes:
    """What the server at `url` answers to the bytes `request` (until it closes or `timeout` passes: then TimeoutError)."""
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer:
                return answer
    return answer


def test_board_command_serves_the_runs_dir_on_loopback(runs: Path) -> None:
    import urllib.request

    with served(runs) as (url, lines):
        assert "6 runs in" in lines[0]
        assert b"run 1" in urllib.request.urlopen(url + "runs/1", timeout=5).read()


def test_board_command_foreign_host_header_gets_a_400(runs: Path) -> None:
    with served(runs) as (url, _):
        port = url.rsplit(":", 1)[1].strip("/")
        request = "GET /runs/1/artifacts/last.pt HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n"
        assert raw_request(url, request.format(f"attacker.example:{port}").encode()).startswith(b"HTTP/1.1 400")
        assert raw_request(url, request.format(f"localhost:{port}").encode()).startswith(b"HTTP/1.1 200")


def test_board_command_large_body_is_refused_before_it_is_read(runs: Path) -> None:
    # A body the board takes no part of: refused on its Content-Length, not read (waitress would take 1 GB).
    with served(runs) as (url, _):
        port = url.rsplit(":", 1)[1].strip("/")
        head = f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {10**9}\r\n\r\n".encode()
        answer = raw_request(url, head + b"x" * 1000)
        assert answer == b"" or re.match(rb"HTTP/1.[01] 413 ", answer)
        too_long = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Pad: {'x' * 100_000}\r\n\r\n".encode()
        answer = raw_request(url, too_long)
        assert answer == b"" or re.match(rb"HTTP/1.[01] 431 ", answer)


def test_board_command_runs_dir_a_file_is_one_line_saying_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# not runs\n")
    result = subprocess.run([sys.executable, "-m", "mlproj.cli", "board", str(tmp_path / "README.md")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "README.md is not a folder" in result.stderr


def test_board_command_missing_runs_dir_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "mlproj.cli", "board", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "does not exist" in result.stderr


def test_board_run_output_linked_to_a_file_outside_is_one_line_not_its_content(runs: Path) -> None:
    """cout.txt -> /etc/passwd: the run page and its live poll name the refusal, never the file."""
    (runs / "1" / "cout.txt").unlink()
    (runs / "1" / "cout.txt").symlink_to("/etc/passwd")
    client = create_app(runs).test_client()
    page = client.get("/runs/1")
    live = client.get("/api/runs/1/live?offset=0")
    assert page.status_code == 200 and live.status_code == 200
    assert "root:" not in page.get_data(as_text=True) and "root:" not in live.get_json()["output"]
    assert live.get_json()["output"].startswith("[output not shown: ") and "symbolic link" in live.get_json()["output"]
    assert live.get_json()["offset"] == 0
