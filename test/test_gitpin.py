"""Git pinning: each run's working tree committed under refs/mlproj/runs/<key>, the repo untouched."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import EDIT, copy_project, git, make_project_repo, run_main

from mlproj.record.experiment import record_provenance
from mlproj.record.gitpin import GitError, pin_or_warn, pin_working_tree


def run_in_repo(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """`./main.py ARGS` in `repo` as a user runs it there: no MLPROJ_RUNS_DIR, so the runs dir is `repo/runs`."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLPROJ_RUNS_DIR", "MONGODB_URI")}
    return subprocess.run([sys.executable, "main.py", *args], cwd=repo, env={**env, "PYTHONUNBUFFERED": "1"},
                          capture_output=True, text=True, timeout=300)


def repo_state(repo: Path) -> dict:
    index = repo / ".git" / "index"
    return {
        "head": git(repo, "rev-parse", "HEAD"),
        "symbolic": git(repo, "symbolic-ref", "HEAD"),
        "index": (index.read_bytes(), index.stat().st_mtime_ns),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "branches": git(repo, "for-each-ref", "refs/heads", "refs/tags"),
        "stash": git(repo, "stash", "list"),
        "main.py": (repo / "main.py").read_text(),
    }


@pytest.fixture(scope="module")
def pinned_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    base = tmp_path_factory.mktemp("pin")
    repo = make_project_repo(base / "repo")
    before = repo_state(repo)
    result = run_main("with", "dataset=digits", "n_global_iterations=3", "tensorboard_dir=None", "seed=5",
                      runs=base / "runs", cwd=repo, main=repo / "main.py")
    assert result.returncode == 0, result.stderr
    return repo, base / "runs" / "1", before


def test_gitpin_run_ref_holds_edit_and_untracked_file(pinned_run: tuple[Path, Path, dict]) -> None:
    repo, run, _ = pinned_run
    pin = json.loads((run / "info.json").read_text())["git"]
    run_key = json.loads((run / "info.json").read_text())["run_key"]
    assert pin["ref"] == f"refs/mlproj/runs/{run_key}"
    assert git(repo, "rev-parse", pin["ref"]) == pin["snapshot"]
    assert git(repo, "show", f"{pin['ref']}:main.py").endswith(EDIT.strip())
    assert git(repo, "show", f"{pin['ref']}:untracked.txt") == "not yet added"
    files = git(repo, "ls-tree", "-r", "--name-only", pin["ref"]).splitlines()
    assert "build/ignored.txt" not in files and "mlproj/train/loop.py" in files
    assert git(repo, "rev-parse", f"{pin['ref']}^") == pin["head"]  # HEAD is the snapshot's parent
    assert pin["branch"] == "main" and pin["dirty"] is True


def test_gitpin_run_leaves_head_index_status_branches_and_stash_alone(pinned_run: tuple[Path, Path, dict]) -> None:
    repo, run, before = pinned_run
    assert repo_state(repo) == before
    assert json.loads((run / "info.json").read_text())["git"]["head"] == before["head"]


def test_gitpin_checkpoint_records_the_pin(pinned_run: tuple[Path, Path, dict]) -> None:
    _, run, _ = pinned_run
    checkpoint = torch.load(run / "last.pt", weights_only=True)
    assert checkpoint["run"]["git"] == json.loads((run / "info.json").read_text())["git"]


def test_gitpin_clean_tree_not_dirty_and_each_run_its_own_ref(tmp_path: Path) -> None:
    repo = copy_project(tmp_path / "repo")
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", "init")
    first = pin_working_tree(str(repo / "mlproj"), "run-a")
    second = pin_working_tree(str(repo), "run-b")
    assert first["dirty"] is False and second["dirty"] is False
    assert git(repo, "rev-parse", f"{first['snapshot']}^{{tree}}") == git(repo, "rev-parse", "HEAD^{tree}")
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/mlproj").splitlines() == [
        "refs/mlproj/runs/run-a", "refs/mlproj/runs/run-b"]


def test_gitpin_repo_without_commits_pins_with_no_parent(tmp_path: Path) -> None:
    repo = tmp_path / "fresh"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "train.py").write_text("print('hi')\n")
    pin = pin_working_tree(str(repo), "first")
    assert pin["head"] is None and pin["dirty"] is True
    assert git(repo, "show", f"{pin['ref']}:train.py") == "print('hi')"
    assert git(repo, "status", "--porcelain") == "?? train.py"


def test_gitpin_outside_repo_warns_one_line_and_returns_the_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert pin_or_warn(str(tmp_path), "k") == (None, f"not inside a Git repository: {tmp_path}")
    assert [r.getMessage() for r in caplog.records] == [
        f"source not pinned (not inside a Git repository: {tmp_path}): info.json records git = null and git_error; "
        "run inside a Git repository to pin it."]


def test_gitpin_without_git_warns_and_returns_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable anywhere on PATH
    with pytest.raises(GitError, match="git is not installed"):
        pin_working_tree(str(tmp_path), "k")
    assert pin_or_warn(str(tmp_path), "k") == (None, "git is not installed (no `git` on PATH)")
    assert len(caplog.records) == 1 and "git is not installed" in caplog.records[0].getMessage()


def test_gitpin_config_false_records_no_pin(tmp_path: Path) -> None:
    run = SimpleNamespace(info={"run_key": "k"}, config={"git_pin": False})  # a stand-in for a Sacred run
    record_provenance(run, str(tmp_path), str(tmp_path / "runs"))
    assert "git" not in run.info and run.info["cwd"]


def test_main_outside_repo_completes_with_git_none(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")  # no `git init`: /tmp is in no repository
    result = run_main("with", "dataset=digits", "n_global_iterations=2", "tensorboard_dir=None",
                      runs=tmp_path / "runs", cwd=project, main=project / "main.py")
    assert result.returncode == 0, result.stderr
    assert (f"WARNING - mlproj - source not pinned (not inside a Git repository: {project}): info.json records "
            "git = null and git_error; run inside a Git repository to pin it.\n") in result.stderr
    assert json.loads((tmp_path / "runs" / "1" / "run.json").read_text())["status"] == "COMPLETED"
    info = json.loads((tmp_path / "runs" / "1" / "info.json").read_text())
    assert info["git"] is None and info["git_error"] == f"not inside a Git repository: {project}"


def test_runs_show_and_reproduce_of_an_unpinned_run_say_it_has_no_pin(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mlproj.cli import main as mlproj_main

    project = copy_project(tmp_path / "project")  # in no repository: the run is recorded without a pin
    result = run_main("with", "dataset=digits", "n_global_iterations=1", "tensorboard_dir=None",
                      runs=tmp_path / "runs", cwd=project, main=project / "main.py")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "1"
    assert mlproj_main(["runs", str(tmp_path / "runs"), "--format", "csv"]) == 0
    (row,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert row["git"] == "-"
    assert mlproj_main(["show", str(run)]) == 0
    assert f"git:       not pinned: it ran outside a Git repository ({project})" in capsys.readouterr().out.splitlines()
    assert mlproj_main(["reproduce", str(run)]) == 1
    assert capsys.readouterr().err == (
        f"mlproj reproduce: error: run {run} has no source pin: it ran outside a Git repository ({project}), so "
        f"its exact code is unknown; `mlproj show {run}` prints the command that reruns its config on the current "
        "code.\n")


def test_main_enforce_clean_refuses_dirty_repo_before_pinning(tmp_path: Path) -> None:
    repo = make_project_repo(tmp_path / "repo")
    result = run_main("--enforce_clean", "with", "dataset=digits", "n_global_iterations=2",
                      runs=tmp_path / "runs", cwd=repo, main=repo / "main.py")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: --enforce_clean: the checkout {repo} has uncommitted changes: commit or stash the changes, "
        "or run without --enforce_clean.")
    assert "Traceback" not in result.stderr and "'url'" not in result.stderr
    assert git(repo, "for-each-ref", "refs/mlproj") == ""
    assert not (tmp_path / "runs" / "1").exists()


def test_main_enforce_clean_outside_repo_one_line(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    result = run_main("--enforce_clean", "with", "dataset=digits", "n_global_iterations=2",
                      runs=tmp_path / "runs", cwd=project, main=project / "main.py")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: --enforce_clean: {project} is in no Git repository with a commit, so there is nothing to check: "
        "commit the project in Git, or run without --enforce_clean.")
    assert not (tmp_path / "runs" / "1").exists()


def test_gitpin_result_folders_in_the_tree_left_out(tmp_path: Path) -> None:
    from mlproj.record.gitpin import pin_working_tree

    repo = make_project_repo(tmp_path / "repo")
    (repo / "results").mkdir()
    (repo / "results" / "last.pt").write_bytes(b"\0" * 1024)  # a checkpoint nobody git-ignored
    before = repo_state(repo)
    pin = pin_working_tree(str(repo), "k1", exclude=[str(repo / "results"), str(tmp_path / "elsewhere")])
    files = git(repo, "ls-tree", "-r", "--name-only", pin["snapshot"]).splitlines()
    assert "untracked.txt" in files and "main.py" in files
    assert not any(f.startswith("results/") for f in files)
    assert repo_state(repo) == before


def test_main_default_runs_dir_in_repo_pins_every_run_and_leaves_results_out(tmp_path: Path) -> None:
    repo = make_project_repo(tmp_path / "repo")  # `.gitignore` ignores /runs/, as in the template
    small = ("with", "dataset=digits", "n_global_iterations=2")
    for args in (small, small, ("-F", "results", *small)):  # results/: in the work tree, not ignored
        result = run_in_repo(repo, *args)
        assert result.returncode == 0, result.stderr
        assert "source not pinned" not in result.stderr
    for run in (repo / "runs" / "1", repo / "runs" / "2", repo / "results" / "1"):
        info = json.loads((run / "info.json").read_text())
        pin = info["git"]
        assert pin is not None and "git_error" not in info, run
        assert git(repo, "rev-parse", pin["ref"]) == pin["snapshot"]
        files = git(repo, "ls-tree", "-r", "--name-only", pin["snapshot"]).splitlines()
        assert "untracked.txt" in files and "mlproj/record/gitpin.py" in files
        assert not [f for f in files if f.startswith(("runs/", "results/"))], run
    assert len(git(repo, "for-each-ref", "refs/mlproj/runs").splitlines()) == 3


def test_gitpin_ignored_and_missing_result_folders_do_not_fail_the_pin(tmp_path: Path) -> None:
    repo = make_project_repo(tmp_path / "repo")
    (repo / "runs" / "tensorboard").mkdir(parents=True)  # ignored by /runs/
    (repo / "runs" / "tensorboard" / "events").write_text("x")
    folders = [repo / "runs", repo / "runs" / "tensorboard", repo / "build", repo / "not-yet", repo / "datasets"]
    pin = pin_working_tree(str(repo), "k", exclude=[str(f) for f in folders])
    files = git(repo, "ls-tree", "-r", "--name-only", pin["snapshot"]).splitlines()
    assert "untracked.txt" in files and not [f for f in files if f.startswith(("runs/", "build/"))]
