"""`mlproj runs/show/compare` on runs made by the real main.py, and the HParams summary they leave."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, run_main, write_run

from mlproj.cli import main as cli_main


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three one-epoch digits runs: lr 0.001 with seeds 1 and 2, lr 0.003 with seed 1 (and a comment)."""
    runs = tmp_path_factory.mktemp("cli") / "runs"
    for lr, seed, comment in (("0.001", "1", ()), ("0.001", "2", ()), ("0.003", "1", ("-c", "lr up"))):
        result = run_main("with", "dataset=digits", "n_epochs=1", f"lr={lr}", f"seed={seed}", *comment, runs=runs)
        assert result.returncode == 0, result.stderr
    return runs


def mlproj(*args: str, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = cli_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_table_shows_benchmark_metric_and_differing_config_only(runs: Path, capsys) -> None:
    code, out, _ = mlproj("runs", str(runs), capsys=capsys)
    header, *rows = out.splitlines()
    assert code == 0 and len(rows) == 3
    # The model's benchmark (info.benchmark: validation.accuracy), then the run, then the keys that differ.
    assert header == ("id  validation.accuracy best  validation.accuracy last  status     start                "
                      "duration  git  comment     lr  seed")
    best = max(json.loads((runs / "1" / "metrics.json").read_text())["validation.accuracy"]["values"])
    assert rows[0].split()[:4] == ["1", f"{best:.4g}", f"{best:.4g}", "COMPLETED"]
    assert max(len(line) for line in out.splitlines()) <= 160


def test_runs_all_config_shows_every_key(runs: Path, capsys) -> None:
    _, out, _ = mlproj("runs", str(runs), "--all-config", "--format", "csv", capsys=capsys)
    assert {"dataset", "batch_size", "lr", "seed"} <= set(out.splitlines()[0].split(","))


def test_runs_csv_and_json_carry_the_recorded_values(runs: Path, capsys) -> None:
    _, out_csv, _ = mlproj("runs", str(runs), "--format", "csv", capsys=capsys)
    _, out_json, _ = mlproj("runs", str(runs), "--format", "json", capsys=capsys)
    rows = list(csv.DictReader(io.StringIO(out_csv)))
    records = json.loads(out_json)
    metrics = json.loads((runs / "2" / "metrics.json").read_text())
    assert records[1]["validation.accuracy best"] == max(metrics["validation.accuracy"]["values"])
    assert records[1]["train.loss last"] == metrics["train.loss"]["values"][-1]
    assert float(rows[1]["validation.accuracy best"]) == pytest.approx(records[1]["validation.accuracy best"])
    assert [r["seed"] for r in records] == [1, 2, 1]


def test_runs_markdown_and_html_have_a_row_per_run(runs: Path, capsys) -> None:
    _, md, _ = mlproj("runs", str(runs), "--format", "markdown", capsys=capsys)
    _, html, _ = mlproj("runs", str(runs), "--format", "html", capsys=capsys)
    assert len([line for line in md.splitlines() if line.startswith("| ")]) == 4  # header + 3 runs
    assert html.count("<tr>") == 4 and html.startswith("<table")


def test_runs_where_status_last_and_sort(runs: Path, capsys) -> None:
    def ids(*args: str) -> list[str]:
        _, out, _ = mlproj("runs", str(runs), "--format", "csv", *args, capsys=capsys)
        return [row["id"] for row in csv.DictReader(io.StringIO(out))]

    assert ids("--where", "lr=0.001") == ["1", "2"]
    assert ids("--where", "lr=0.001", "--where", "seed=2") == ["2"]
    assert ids("--last", "2") == ["2", "3"]
    losses = [json.loads((runs / i / "metrics.json").read_text())["validation.loss"]["values"][0] for i in "123"]
    assert ids("--sort", "validation.loss") == [str(i + 1) for i in sorted(range(3), key=losses.__getitem__)]
    _, out, _ = mlproj("runs", str(runs), "--status", "FAILED", capsys=capsys)
    assert out.startswith("no runs in") and "match" in out


def test_runs_missing_dir_one_line_error(tmp_path: Path, capsys) -> None:
    code, _, err = mlproj("runs", str(tmp_path / "nope"), capsys=capsys)
    assert code == 1 and err.count("\n") == 1 and "does not exist" in err


def test_show_prints_config_git_metrics_artifacts_and_rerun(runs: Path, capsys) -> None:
    code, out, _ = mlproj("show", "2", "--runs-dir", str(runs), capsys=capsys)
    assert code == 0 and out.startswith("run 2  mlproj  COMPLETED")
    (rerun,) = [line for line in out.splitlines() if line.startswith("rerun:")]
    # This interpreter, as a path to paste here (in a fresh clone `.venv/bin/python`: no venv to activate).
    python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") else sys.executable
    assert rerun.split()[1:5] == [python, "main.py", "train", "with"]
    # run_main adds git_pin=False so the suite leaves no refs in the developer's repo.
    assert set(rerun.split()[5:]) == {"dataset=digits", "n_epochs=1", "lr=0.001", "seed=2", "git_pin=False"}
    for section in ("config:", "metrics:", "artifacts:", "git:", "result:"):
        assert section in out
    assert "best.pt" in out and "validation.accuracy" in out
    _, by_folder, _ = mlproj("show", str(runs / "2"), capsys=capsys)
    assert by_folder == out


def test_show_run_whose_pin_failed_says_why_and_sacreds_head(tmp_path: Path, capsys) -> None:
    info = {"run_key": "k", "git": None, "git_error": "`git write-tree` failed: fatal: git-write-tree: error building trees"}
    folder = write_run(tmp_path / "runs", 1, {}, {}, dirty=True, info=info)
    code, out, _ = mlproj("show", str(folder), capsys=capsys)
    assert code == 0
    assert ("git:       not pinned: pinning failed when it started: `git write-tree` failed: fatal: git-write-tree: "
            "error building trees; Sacred recorded HEAD abcdef1 (dirty)") in out.splitlines()


def test_runs_comment_column_when_a_run_has_one(runs: Path, capsys) -> None:
    _, out, _ = mlproj("runs", str(runs), capsys=capsys)
    header, *rows = out.splitlines()
    assert header.split()[8:10] == ["git", "comment"]
    _, out_json, _ = mlproj("runs", str(runs), "--format", "json", capsys=capsys)
    assert [r["comment"] for r in json.loads(out_json)] == ["", "", "lr up"]
    _, without, _ = mlproj("runs", str(runs), "--last", "2", "--where", "lr=0.001", capsys=capsys)
    assert "comment" not in without.splitlines()[0].split()


def test_show_prints_comment_line_only_when_given(runs: Path, capsys) -> None:
    _, out, _ = mlproj("show", "3", "--runs-dir", str(runs), capsys=capsys)
    assert "comment:   lr up" in out.splitlines()
    _, out, _ = mlproj("show", "2", "--runs-dir", str(runs), capsys=capsys)
    assert "comment:" not in out


def test_show_unknown_run_one_line_error(runs: Path, capsys) -> None:
    code, _, err = mlproj("show", "99", "--runs-dir", str(runs), capsys=capsys)
    assert code == 1 and "no run '99'" in err and err.count("\n") == 1


def test_compare_config_diff_and_group_by_seed_mean_std(runs: Path, capsys) -> None:
    code, out, _ = mlproj("compare", "1", "2", "3", "--runs-dir", str(runs), "--group-by", "seed", capsys=capsys)
    assert code == 0
    assert "config that differs:" in out and "mean ± std over seed:" in out
    group_lines = out.split("mean ± std over seed:")[1].strip().splitlines()[1:]
    assert len(group_lines) == 2 and group_lines[0].split()[1:4] == ["1", "2", "2"]  # lr 0.001: runs 1 2, n=2


def test_compare_group_by_group_of_one_shows_value_without_plus_minus(runs: Path, capsys) -> None:
    _, out, _ = mlproj("compare", "1", "2", "3", "--runs-dir", str(runs), "--group-by", "seed", capsys=capsys)
    header, pair, single = out.split("mean ± std over seed:")[1].strip().splitlines()
    column = header.split().index("validation.accuracy")
    metrics = json.loads((runs / "3" / "metrics.json").read_text())
    assert single.split()[:3] == ["0.003", "3", "1"]
    assert single.split()[column] == f"{max(metrics['validation.accuracy']['values']):.4g}" and "±" not in single
    assert "±" in pair


def test_compare_plot_unknown_metric_one_line_before_any_table(runs: Path, tmp_path: Path, capsys) -> None:
    code, out, err = mlproj("compare", "1", "2", "--runs-dir", str(runs), "--plot", str(tmp_path / "x.png"), "--metric", "nope",
                            capsys=capsys)
    assert code == 1 and out == "" and not (tmp_path / "x.png").exists()
    assert err == ("mlproj compare: error: --metric nope: none of these runs logged it; they logged lr, train.accuracy, "
                   "train.loss, validation.accuracy, validation.loss.\n")


def test_compare_plot_png_one_curve_per_run(runs: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    png = tmp_path / "curves.png"
    code, out, _ = mlproj("compare", "1", "2", "3", "--runs-dir", str(runs), "--plot", str(png), "--metric", "train.loss", capsys=capsys)
    assert code == 0 and "3 curves" in out
    image = Image.open(png)
    assert image.format == "PNG" and image.size[0] > 300
    assert image.text["Description"].splitlines() == ["run 1, lr=0.001, seed=1", "run 2, lr=0.001, seed=2", "run 3, lr=0.003, seed=1"]


def test_compare_plot_into_a_folder_not_there_yet_makes_it(runs: Path, tmp_path: Path, capsys) -> None:
    png = tmp_path / "plots" / "curves.png"  # as the README's `--plot runs/plots/curves.png`
    code, out, _ = mlproj("compare", "1", "2", "--runs-dir", str(runs), "--plot", str(png), "--metric", "train.loss", capsys=capsys)
    assert code == 0 and png.is_file() and f"wrote {png}: train.loss, 2 curves" in out


def test_compare_plot_group_by_one_curve_per_group(runs: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    png = tmp_path / "groups.png"
    mlproj("compare", "1", "2", "3", "--runs-dir", str(runs), "--group-by", "seed", "--plot", str(png), "--metric", "train.loss", capsys=capsys)
    assert Image.open(png).text["Description"].splitlines() == ["lr=0.001 (n=2)", "lr=0.003 (n=1)"]


def test_compare_plot_group_set_apart_by_an_unset_key_is_labelled_unset(tmp_path: Path, capsys) -> None:
    from PIL import Image

    runs, png = tmp_path / "runs", tmp_path / "groups.png"
    for run_id, checkpoint, seed in ((1, None, 1), (2, None, 2), (3, "runs/1/best.pt", 1)):
        write_run(runs, run_id, {"checkpoint": checkpoint, "seed": seed}, {"train.loss": [1.0, 0.5]})
    mlproj("compare", "1", "2", "3", "--runs-dir", str(runs), "--group-by", "seed", "--plot", str(png), "--metric", "train.loss",
           capsys=capsys)
    assert Image.open(png).text["Description"].splitlines() == ["checkpoint unset (n=2)", "checkpoint=runs/1/best.pt (n=1)"]


def test_compare_plot_without_metric_one_line_error(runs: Path, capsys) -> None:
    code, _, err = mlproj("compare", "1", "2", "--runs-dir", str(runs), "--plot", "x.png", capsys=capsys)
    assert code == 1 and "--plot needs --metric" in err


def hparams_events(folder: Path) -> tuple[Any, Any, Any]:
    """(events, session start info, experiment) of a TensorBoard folder holding an HParams summary."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    return events, start, plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment


def test_hparams_summary_holds_the_given_config_keys_and_best_values_apart(runs: Path) -> None:
    (run_tb,) = [p for p in (runs / "tensorboard").iterdir() if p.name.startswith("2_mlproj_")]
    events, start, experiment = hparams_events(run_tb)
    # The keys its command line set (git_pin=False, which the test runner adds, says nothing about learning).
    assert set(start.hparams) == {"dataset", "n_epochs", "lr", "seed"}
    assert start.hparams["lr"].number_value == 0.001 and start.hparams["dataset"].string_value == "digits"
    assert {m.name.tag for m in experiment.metric_infos} >= {"hparams/best/validation/accuracy", "hparams/best/train/loss"}
    assert not [tag for tag in events.Tags()["scalars"] if tag.startswith("best/")]
    metrics = json.loads((runs / "2" / "metrics.json").read_text())
    (best,) = events.Scalars("hparams/best/validation/accuracy")
    assert best.value == pytest.approx(max(metrics["validation.accuracy"]["values"]))


def test_hparams_booleans_stay_booleans_and_run_place_keys_left_out(tmp_path: Path) -> None:
    from mlproj.train.tracker import Tracker

    tracker = Tracker(None, str(tmp_path / "tb"))  # no Sacred run: no config updates, every key but the run's place
    tracker.log_scalars("validation", {"accuracy": 0.5}, 1)
    tracker.log_hparams({"amp": True, "lr": 0.1, "optim": {"name": "adam"}, "device": "cpu", "data_dir": "/d"}, 1)
    tracker.close()
    _, start, experiment = hparams_events(tmp_path / "tb")
    assert set(start.hparams) == {"amp", "lr", "optim.name"}
    assert start.hparams["amp"].bool_value is True and start.hparams["amp"].WhichOneof("kind") == "bool_value"
    from tensorboard.plugins.hparams import api_pb2

    assert {h.name: h.type for h in experiment.hparam_infos}["amp"] == api_pb2.DATA_TYPE_BOOL


def test_mlproj_help_lists_runs_commands() -> None:
    result = subprocess.run([sys.executable, "-m", "mlproj.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    # The command list, one command per line: the description above it names runs too.
    listed = re.findall(r"^    (\S+)", result.stdout.split("positional arguments:", 1)[1].split("options:", 1)[0], re.M)
    assert {"runs", "show", "compare", "diff", "sync", "check-mongo"} <= set(listed)
    assert "export" not in listed  # no such command


@pytest.mark.parametrize("args", [
    ["--help"], ["runs", "{runs}"], ["show", "{runs}/1"], ["compare", "1", "2", "--runs-dir", "{runs}"],
    ["diff", "1", "2", "--runs-dir", "{runs}"],
    ["sync", "{runs}", "--mongo", "mongodb://127.0.0.1:1/db?serverSelectionTimeoutMS=100"], ["check-mongo"],
    ["reproduce", "{runs}/1"], ["datasets"], ["sweep", "--help"],
    ["sweep", "main.py", "with", "dataset=digits", "lr=[0.1,0.01]", "--dry-run"],
], ids=lambda args: " ".join(a for a in args[:2] if "{" not in a))
def test_mlproj_command_prints_no_pkg_resources_warning(args: list[str], tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for run_id in (1, 2):
        write_run(runs, run_id, {"lr": 0.1 * run_id}, {"train.loss": [1.0, 0.5]})
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "PYTHONWARNINGS")}
    result = subprocess.run([sys.executable, "-m", "mlproj.cli", *(a.format(runs=runs) for a in args)], cwd=ROOT,
                            env={**env, "MLPROJ_RUNS_DIR": str(runs)}, capture_output=True, text=True, timeout=120)
    assert "pkg_resources" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr  # the command ran (or failed in one line), it did not crash
