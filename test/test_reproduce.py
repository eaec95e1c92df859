"""`mlproj reproduce RUN`: the pinned source, config and seed run again give the same metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EDIT, git, make_project_repo, read_json, run_main

from mlproj.cli import main as mlproj_main


def test_reproduce_reruns_snapshot_with_identical_metrics(tmp_path: Path) -> None:
    repo = make_project_repo(tmp_path / "repo")
    runs = tmp_path / "runs"
    # no seed given: Sacred draws one, which the reproduction must reuse
    result = run_main("with", "dataset=digits", "model=mlp", "n_global_iterations=6", "log_iteration_scalars=1",
                      "tensorboard_dir=None", runs=runs, cwd=repo, main=repo / "main.py")
    assert result.returncode == 0, result.stderr
    (repo / "main.py").write_text("raise SystemExit('the working tree moved on since the run')\n")

    worktree = tmp_path / "again"
    env = {**os.environ, "MLPROJ_RUNS_DIR": str(tmp_path / "other-runs")}
    reproduced = subprocess.run([sys.executable, "-m", "mlproj.cli", "reproduce", str(runs / "1"), "--dir", str(worktree)],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr
    original, again = runs / "1", runs / "2"
    n_series = len(read_json(original / "metrics.json"))  # train.loss, train.accuracy, lr, validation.*
    assert f"run 1 reproduced as run 2: {n_series} metric series identical, 0 different" in reproduced.stdout
    assert read_json(again / "run.json")["status"] == "COMPLETED"
    assert read_json(again / "metrics.json") != {}
    for name, series in read_json(original / "metrics.json").items():
        assert read_json(again / "metrics.json")[name]["values"] == series["values"], name
    assert read_json(again / "config.json") == read_json(original / "config.json")  # seed included
    info = read_json(again / "info.json")
    assert info["reproduces"] == {"run_id": "1", "run_key": read_json(original / "info.json")["run_key"],
                                  "run_dir": str(original)}
    # It ran the snapshot's code (the uncommitted edit included) from the new worktree.
    pin = read_json(original / "info.json")["git"]
    assert info["git"]["head"] == pin["snapshot"] and info["git"]["dirty"] is False
    assert (worktree / "main.py").read_text().endswith(EDIT)
    experiment = read_json(again / "run.json")["experiment"]
    assert experiment["base_dir"] == str(worktree)
    assert any(path == "mlproj/train/loop.py" for path, _ in experiment["sources"])  # mlproj from the worktree
    assert git(repo, "worktree", "list").count("\n") == 1  # the repo now lists the new worktree


@pytest.mark.parametrize(("info", "config", "why"), [
    ({"git": None, "git_error": "`git add --all -- :/` failed: fatal: unable to write new index file"}, {},
     "pinning failed when it started: `git add --all -- :/` failed: fatal: unable to write new index file"),
    ({}, {"git_pin": False}, "it ran with git_pin=False"),
    ({"git": None}, {}, "it ran outside a Git repository, or pinning failed when it started"),  # before git_error
])
def test_reproduce_run_without_pin_says_why_it_has_none(tmp_path: Path, capsys: pytest.CaptureFixture, info: dict,
                                                        config: dict, why: str) -> None:
    run = tmp_path / "runs" / "1"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": "COMPLETED", "command": "train"}))
    (run / "config.json").write_text(json.dumps(config))
    (run / "info.json").write_text(json.dumps({"run_key": "k", **info}))
    assert mlproj_main(["reproduce", str(run)]) == 1
    assert capsys.readouterr().err == (
        f"mlproj reproduce: error: run {run} has no source pin: {why}, so its exact code is unknown; "
        f"`mlproj show {run}` prints the command that reruns its config on the current code.\n")


def test_reproduce_unknown_run_raises(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPROJ_RUNS_DIR", str(tmp_path))
    assert mlproj_main(["reproduce", "42"]) == 1
    assert "run '42' not found" in capsys.readouterr().err
