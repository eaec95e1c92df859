"""A run folder from elsewhere read safely: record files opened without following links and only
when regular (`open_record`), damaged run.json values said in one line, run ids as Sacred names
them, and the reading helpers that must not fail on odd input (huge integers, unreadable numbers)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import write_run

from mlproj.cli import main as cli_main
from mlproj.errors import MLProjError
from mlproj.runs.arrays import _parse_numbers
from mlproj.runs.entry import parse_time
from mlproj.runs.query import filter_runs
from mlproj.runs.reader import is_run_id, open_record, read_json, read_record, read_run, read_runs, run_ids


def finishes(call: Any, timeout: float = 20.0) -> Any:
    """`call()`'s result or exception, asserting it came within `timeout` seconds (a FIFO opened
    for reading waits for a writer forever: the thread is left behind, as a daemon)."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(call())
        except Exception as err:  # noqa: BLE001 -- handed to the test, which checks what it is
            outcome.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still reading after {timeout} s"
    return outcome[0]


# ------------------------------------------------------------------ record files: links, FIFOs, size
def test_read_run_cout_symlink_to_passwd_refused_not_shown(tmp_path: Path) -> None:
    folder = write_run(tmp_path, 3, {"lr": 0.1}, {})
    (folder / "cout.txt").symlink_to("/etc/passwd")
    run = read_run(folder)
    with pytest.raises(MLProjError, match=r"cout\.txt is a symbolic link, which mlproj does not follow") as err:
        _ = run.captured_out
    assert "root:" not in str(err.value) and "\n" not in str(err.value)


def test_read_run_cout_fifo_refused_without_blocking(tmp_path: Path) -> None:
    folder = write_run(tmp_path, 1, {"lr": 0.1}, {})
    os.mkfifo(folder / "cout.txt")
    run = read_run(folder)
    err = finishes(lambda: run.captured_out)
    assert isinstance(err, MLProjError) and "cout.txt is not a regular file" in str(err)


@pytest.mark.parametrize("name", ["run.json", "info.json", "config.json"])
def test_read_run_record_json_fifo_refused_without_blocking(tmp_path: Path, name: str) -> None:
    folder = write_run(tmp_path, 1, {"lr": 0.1}, {})
    (folder / name).unlink()
    os.mkfifo(folder / name)
    err = finishes(lambda: read_run(folder))
    assert isinstance(err, MLProjError) and name in str(err)  # run.json: "no run.json in it", others: "not a regular file"


@pytest.mark.parametrize("reader", ["read_metric_values", "iter_metric_arrays", "summarize_metrics_json"])
def test_metrics_json_symlink_to_dev_zero_refused(tmp_path: Path, reader: str) -> None:
    folder = write_run(tmp_path, 1, {"lr": 0.1}, {"train.loss": [1.0]})
    (folder / "metrics.json").unlink()
    (folder / "metrics.json").symlink_to("/dev/zero")
    # In a child with 2 GB of address space and a timeout: a reader that followed the link would
    # read zeros until the memory runs out.
    script = ("import sys\nfrom mlproj.errors import MLProjError\nfrom mlproj.runs import arrays, reader\n"
              f"read = getattr(arrays, {reader!r}, None) or getattr(reader, {reader!r})\n"
              "try:\n    list(read(sys.argv[1]))\nexcept MLProjError as err:\n    print(err)\n")
    result = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=60,
                            preexec_fn=lambda: __import__("resource").setrlimit(__import__("resource").RLIMIT_AS, (2 << 30, 2 << 30)))
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stdout == f"{folder / 'metrics.json'} is a symbolic link, which mlproj does not follow in a run folder: replace it with the file.\n"


def test_read_record_larger_than_limit_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "info.json"
    path.write_text('{"run_key": "0123456789"}')
    assert read_record(str(path), limit=100) == path.read_bytes()
    with pytest.raises(MLProjError, match=r"holds more than 10 bytes, more than mlproj reads whole") as err:
        read_record(str(path), limit=10)
    assert "\n" not in str(err.value)


def test_open_record_regular_file_read_missing_none(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{}")
    with open_record(str(tmp_path / "run.json")) as f:
        assert f.read() == b"{}"
    assert open_record(str(tmp_path / "nope.json")) is None
    assert read_json(str(tmp_path / "nope.json"), {"default": 1}) == {"default": 1}


# ------------------------------------------------------------------ run.json with values Sacred never writes
DAMAGED = {  # what is written over run 2's run.json (a function of the good record), and what the error says
    "a list": (lambda record: [], "the record is a list, not an object"),
    "start_time yesterday": (lambda record: {**record, "start_time": "yesterday"},
                             "start_time 'yesterday' is not a time (ISO text such as 2026-01-31T10:00:00)"),
    "heartbeat a number": (lambda record: {**record, "heartbeat": 5}, "heartbeat 5 is not a time"),
    "artifact a number": (lambda record: {**record, "artifacts": [1]}, "artifact 1 is not a file name"),
    "experiment text": (lambda record: {**record, "experiment": "mnist"}, "experiment is text, not an object"),
    "experiment name a list": (lambda record: {**record, "experiment": {"name": ["x"]}}, "experiment.name is a list, not text"),
}


def damage(folder: Path, case: str) -> str:
    """Write case `case` of DAMAGED over `folder`'s run.json; the error it should give."""
    write, says = DAMAGED[case]
    (folder / "run.json").write_text(json.dumps(write(json.loads((folder / "run.json").read_text()))))
    return says


@pytest.mark.parametrize("case", DAMAGED)
def test_read_run_damaged_run_json_types_one_line_naming_folder_and_field(tmp_path: Path, case: str) -> None:
    folder = write_run(tmp_path, 2, {"lr": 0.1}, {})
    says = damage(folder, case)
    with pytest.raises(MLProjError) as err:
        read_run(folder)
    assert str(err.value).startswith(f"{folder / 'run.json'}: {says}")
    assert str(err.value).endswith(": the run record is damaged; move that run folder away.") and "\n" not in str(err.value)


@pytest.mark.parametrize("case", ["a list", "start_time yesterday", "artifact a number", "experiment text"])
def test_runs_cli_one_damaged_run_json_lists_the_others_one_line_about_it(tmp_path: Path, case: str, capsys) -> None:
    runs = tmp_path / "runs"
    for run_id in (1, 2, 3):
        write_run(runs, run_id, {"lr": 0.1 * run_id}, {"validation.accuracy": [0.5]})
    says = damage(runs / "2", case)
    code = cli_main(["runs", str(runs), "--format", "csv"])
    out, err = capsys.readouterr()
    assert code == 0
    assert [line.split(",")[0] for line in out.splitlines()[1:]] == ["1", "3"]
    assert err == f"mlproj runs: skipped a run: {runs / '2' / 'run.json'}: {says}: the run record is damaged; move that run folder away.\n"


def test_read_runs_damaged_run_json_raised_without_on_damaged(tmp_path: Path) -> None:
    for run_id in (1, 2):
        write_run(tmp_path, run_id, {"lr": 0.1}, {})
    damage(tmp_path / "2", "a list")
    with pytest.raises(MLProjError, match="the record is a list"):
        read_runs(str(tmp_path))
    seen: list[MLProjError] = []
    assert [run.id for run in read_runs(str(tmp_path), on_damaged=seen.append)] == [1] and len(seen) == 1


def test_parse_time_iso_with_offset_is_naive_utc() -> None:
    assert parse_time("2026-01-31T12:00:00+02:00") == datetime(2026, 1, 31, 10, 0) == parse_time("2026-01-31T10:00:00")
    assert parse_time("") is None and parse_time(None) is None


# ------------------------------------------------------------------ which folders are runs
@pytest.mark.parametrize("name", ["²", "٢", "02", "1a", ""])
def test_is_run_id_only_ascii_digits_as_sacred_names_them(name: str) -> None:
    assert not is_run_id(name)
    assert is_run_id("2") and is_run_id("0") and is_run_id("10")


def test_read_runs_unicode_digit_folders_are_not_runs(tmp_path: Path) -> None:
    write_run(tmp_path, 2, {"lr": 0.1}, {})
    for name in ("²", "٢"):
        shutil.copytree(tmp_path / "2", tmp_path / name)
    (tmp_path / "5").mkdir()  # a run starting: no run.json yet
    assert run_ids(str(tmp_path)) == [2]
    assert [(run.id, os.path.basename(run.path)) for run in read_runs(str(tmp_path))] == [(2, "2")]
    assert read_run(tmp_path / "٢").id == "٢"  # read by its folder, it is not run 2


def test_board_unicode_digit_folders_are_not_runs(tmp_path: Path) -> None:
    from mlproj.board.app import create_app  # here: the board's imports are for these tests only
    from mlproj.board.catalog import Catalog

    runs = tmp_path / "runs"
    write_run(runs, 1, {"lr": 0.1}, {"validation.accuracy": [0.5]})
    catalog = Catalog(str(runs), clock=lambda: now)
    now = 0.0
    assert [run.id for run in catalog.runs()] == [1]
    (runs / "²").mkdir()
    shutil.copytree(runs / "1", runs / "٢")
    (runs / "7").mkdir()
    now = 100.0  # past the next check: the runs dir is listed again
    assert [run.id for run in catalog.runs()] == [1]
    assert create_app(runs).test_client().get("/").status_code == 200


# ------------------------------------------------------------------ --where with a huge integer
HUGE = "9" * 400


def test_filter_runs_where_huge_integer_compares_exactly(tmp_path: Path) -> None:
    write_run(tmp_path, 1, {"lr": 0.1, "n": int(HUGE)}, {})
    write_run(tmp_path, 2, {"lr": 0.2, "n": 5}, {})
    runs = read_runs(str(tmp_path))
    assert [run.id for run in filter_runs(runs, [f"lr={HUGE}"])] == []
    assert [run.id for run in filter_runs(runs, [f"n={HUGE}"])] == [1]
    assert [run.id for run in filter_runs(runs, ["n=5.0"])] == [2]


def test_runs_cli_where_huge_integer_no_traceback(tmp_path: Path, capsys) -> None:
    write_run(tmp_path, 1, {"lr": 0.1}, {"validation.accuracy": [0.5]})
    code = cli_main(["runs", str(tmp_path), "--where", f"lr={HUGE}"])
    out, err = capsys.readouterr()
    assert code == 0 and err == "" and out == f"no runs in {tmp_path} match\n"


# ------------------------------------------------------------------ numbers parsed by numpy, from many threads
def test_parse_numbers_concurrent_calls_leave_warning_filters_unchanged() -> None:
    before = list(warnings.filters)
    texts = [(b"[1, 2, 3]", "int64"), (b"[1.5, 2]", "int64"), (b'[1, "a"]', "float64"), (b"[NaN, Infinity, 0.5]", "float64")]

    def parse_many() -> None:
        for _ in range(500):
            for text, dtype in texts:
                _parse_numbers(text, dtype)

    threads = [threading.Thread(target=parse_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert warnings.filters == before


def test_parse_numbers_reads_numbers_with_numpy_and_anything_else_as_json() -> None:
    assert _parse_numbers(b"[1, 2, 3]", "int64").tolist() == [1, 2, 3]
    assert _parse_numbers(b"[]", "int64").tolist() == []
    nan, inf, half = _parse_numbers(b"[NaN, Infinity, 0.5]", "float64").tolist()
    assert nan != nan and inf == float("inf") and half == 0.5
    assert _parse_numbers(b"[1.5, 2]", "int64") == [1.5, 2]  # not all integers: as json reads them
    assert _parse_numbers(b'[1, "a", null]', "float64") == [1, "a", None]
    for damaged in (b"[1, 2,]", b"[1,, 2]", b"[1 2]"):
        with pytest.raises(ValueError):
            _parse_numbers(damaged, "float64")


def test_read_run_metrics_timestamp_not_a_time_one_line_naming_the_file(tmp_path: Path) -> None:
    folder = write_run(tmp_path, 1, {"lr": 0.1}, {"train.loss": [1.0]})
    (folder / "metrics.json").write_text(json.dumps({"train.loss": {"steps": [0], "values": [1.0], "timestamps": ["soon"]}}))
    with pytest.raises(MLProjError) as err:
        _ = read_run(folder).metrics
    assert str(err.value) == (f"{folder / 'metrics.json'}: a timestamp 'soon' is not a time (ISO text such as "
                              "2026-01-31T10:00:00): the run record is damaged; move that run folder away.")
