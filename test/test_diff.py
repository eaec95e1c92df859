"""`mlproj diff A B` and `mlproj.runs.diff.diff_runs`: the config keys that differ and the source diff
between two runs' Git pins, made by the real pinning code in real repositories."""

from __future__ import annotations

import copy
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import git, run_main, write_run

from mlproj.cli import main as cli_main
from mlproj.record.gitpin import pin_or_warn, pin_working_tree
from mlproj.runs.diff import MISSING, diff_runs
from mlproj.runs.reader import read_run
from mlproj.util.git import run_git

TRAIN = "lr = 0.1\nprint('train')\n"
# A main file as small as mlproj allows: its runs are recorded and pinned as main.py's are.
TINY_MAIN = """from mlproj.record.experiment import create_experiment

ex = create_experiment("tiny")


@ex.config
def config():
    lr = 0.1


@ex.automain
def main(lr):
    return lr
"""


def mlproj(*args: str, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = cli_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs 1 and 2 pinned in tmp_path/repo, train.py's second line edited between them; runs 1 and 2
    differ in lr and optim (run 2 has optim.beta, run 1 not) and share seed. The current folder is in
    no repository: the repository is found from what the runs recorded."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "train.py").write_text(TRAIN)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", "train")
    first = pin_working_tree(str(repo), "key-1")
    (repo / "train.py").write_text(TRAIN.replace("print('train')", "print('train harder')"))
    second = pin_working_tree(str(repo), "key-2")
    runs = tmp_path / "runs"
    for run_id, config, pin in ((1, {"lr": 0.001, "seed": 1, "optim": {"name": "sgd"}}, first),
                                (2, {"lr": 0.003, "seed": 1, "optim": {"name": "adam", "beta": 0.9}}, second)):
        write_run(runs, run_id, config, {"validation.accuracy": [0.5]}, info={"run_key": f"key-{run_id}", "git": pin, "cwd": str(repo)})
    monkeypatch.chdir(tmp_path)
    return runs


def add_unpinned_run(runs: Path, tmp_path: Path) -> None:
    """Run 3, started outside any Git repository: its info records git = None and the reason, as a run does."""
    outside = tmp_path / "outside"
    outside.mkdir()
    pin, error = pin_or_warn(str(outside), "key-3")
    write_run(runs, 3, {"lr": 0.001, "seed": 2}, {"validation.accuracy": [0.5]},
              info={"run_key": "key-3", "git": pin, "git_error": error, "cwd": str(outside)})


def test_diff_runs_config_only_differing_keys_absent_as_missing(runs: Path) -> None:
    diff = diff_runs(read_run(runs / "1"), read_run(runs / "2"))
    assert diff.config == [("lr", 0.001, 0.003), ("optim.beta", MISSING, 0.9), ("optim.name", "sgd", "adam")]
    assert str(MISSING) == "(absent)"


def test_diff_runs_source_shows_the_changed_line(runs: Path) -> None:
    diff = diff_runs(read_run(runs / "1"), read_run(runs / "2"))
    assert diff.note is None
    assert "-print('train')\n+print('train harder')\n" in diff.source
    assert " lr = 0.1\n" in diff.source  # the unchanged line as context, A -> B


def test_diff_runs_same_pin_empty_source(runs: Path) -> None:
    diff = diff_runs(read_run(runs / "1"), read_run(runs / "1"))
    assert diff == type(diff)(config=[], source="", note=None)


def test_diff_cli_prints_config_table_and_source_diff(runs: Path, capsys) -> None:
    code, out, err = mlproj("diff", "1", "2", "--runs-dir", str(runs), capsys=capsys)
    assert code == 0 and err == ""
    table, source = out.split("\nsource that differs")
    lines = [line.split() for line in table.splitlines()]
    assert lines[1] == ["key", "run", "1", "run", "2"]
    assert ["lr", "0.001", "0.003"] in lines and ["optim.beta", "(absent)", "0.9"] in lines
    assert not any(line[0] == "seed" for line in lines[2:])
    assert "+print('train harder')" in source and "diff --git a/train.py b/train.py" in source


def test_diff_cli_stat_lists_files_not_lines(runs: Path, capsys) -> None:
    code, out, _ = mlproj("diff", str(runs / "1"), str(runs / "2"), "--stat", "--runs-dir", str(runs), capsys=capsys)
    assert code == 0
    source = out.split("\nsource that differs")[1]
    assert " train.py | 2 +-\n" in source and "1 file changed, 1 insertion(+), 1 deletion(-)" in source
    assert "+print" not in source


def test_diff_cli_one_side_unpinned_config_diff_and_why_exit_0(runs: Path, tmp_path: Path, capsys) -> None:
    add_unpinned_run(runs, tmp_path)
    code, out, err = mlproj("diff", "1", "3", "--runs-dir", str(runs), capsys=capsys)
    assert code == 0 and err == ""
    assert ["seed", "1", "2"] in [line.split() for line in out.splitlines()]
    assert out.endswith(f"\nno source diff: run 3 is not pinned: it ran outside a Git repository ({tmp_path / 'outside'})\n")


def test_diff_runs_pins_in_no_repository_here_says_so(runs: Path, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "repo")
    diff = diff_runs(read_run(runs / "1"), read_run(runs / "2"))
    assert diff.source == "" and diff.config
    assert diff.note == ("no Git repository here holds run 1's pin refs/mlproj/runs/key-1 and run 2's pin "
                         "refs/mlproj/runs/key-2 (the runs' folders and the current folder are in no Git repository): "
                         "run `mlproj diff` inside the repository the runs were started from, or a clone that "
                         "fetched refs/mlproj/runs/*.")


def test_diff_runs_clone_that_fetched_the_pins_diffs_from_the_current_folder(runs: Path, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-local", str(tmp_path / "repo"), str(clone)], check=True)
    without_pins = diff_runs(read_run(runs / "1"), read_run(runs / "2"))  # the original is still found
    git(clone, "fetch", "-q", "origin", "refs/mlproj/runs/*:refs/mlproj/runs/*")
    shutil.rmtree(tmp_path / "repo")
    monkeypatch.chdir(clone)
    diff = diff_runs(read_run(runs / "1"), read_run(runs / "2"))
    assert diff.note is None and diff.source == without_pins.source and "+print('train harder')" in diff.source


def test_diff_runs_first_repository_holding_both_pins_is_used(runs: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"  # run 4's recorded folder: a clone holding run 1's pin only
    subprocess.run(["git", "clone", "-q", "--no-local", str(tmp_path / "repo"), str(clone)], check=True)
    git(clone, "fetch", "-q", "origin", "refs/mlproj/runs/key-1:refs/mlproj/runs/key-1")
    info = {**read_run(runs / "1").info, "cwd": str(clone)}
    write_run(runs, 4, {"lr": 0.001}, {"validation.accuracy": [0.5]}, info=info)
    diff = diff_runs(read_run(runs / "4"), read_run(runs / "2"))
    assert diff.note is None and "+print('train harder')" in diff.source


def test_diff_runs_pins_in_two_repositories_says_so(runs: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    (other / "train.py").write_text(TRAIN)
    write_run(runs, 5, {"lr": 0.001}, {"validation.accuracy": [0.5]},
              info={"run_key": "key-5", "git": pin_working_tree(str(other), "key-5"), "cwd": str(other)})
    diff = diff_runs(read_run(runs / "1"), read_run(runs / "5"))
    assert diff.source == ""
    assert diff.note.startswith(f"the pins of run 1 and run 5 lie in different repositories (looked in {tmp_path / 'repo'}, {other}): ")


def test_diff_cli_real_runs_of_a_main_file_started_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    repo, elsewhere, runs = tmp_path / "repo", tmp_path / "elsewhere", tmp_path / "runs"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "main.py").write_text(TINY_MAIN)
    elsewhere.mkdir()  # started from here, so only the main file's folder (Sacred's base_dir) leads to the repo
    first = run_main("with", "lr=0.2", "seed=1", runs=runs, cwd=elsewhere, main=repo / "main.py")
    (repo / "main.py").write_text(TINY_MAIN.replace("return lr", "return 2 * lr"))
    second = run_main("with", "seed=1", runs=runs, cwd=elsewhere, main=repo / "main.py")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    monkeypatch.chdir(elsewhere)
    code, out, _ = mlproj("diff", "1", "2", "--runs-dir", str(runs), capsys=capsys)
    assert code == 0
    assert [line.split() for line in out.splitlines()[1:3]] == [["key", "run", "1", "run", "2"], ["lr", "0.2", "0.1"]]
    assert "-    return lr\n+    return 2 * lr\n" in out


def test_diff_runs_without_git_config_diff_and_note(runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = read_run(runs / "1"), read_run(runs / "2")
    with_git = diff_runs(a, b)
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    diff = diff_runs(a, b)
    assert diff.config == with_git.config and diff.source == "" and diff.note == "git is not installed (no `git` on PATH)"


def test_diff_cli_same_id_in_two_runs_dirs_columns_say_which(runs: Path, tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "other-runs", 1, {"lr": 0.01, "seed": 1, "optim": {"name": "sgd"}}, {"validation.accuracy": [0.5]},
              info=read_run(runs / "2").info)
    first, second = str(runs / "1"), str(tmp_path / "other-runs" / "1")
    code, out, _ = mlproj("diff", first, second, capsys=capsys)
    assert code == 0
    assert [line.split() for line in out.splitlines()[1:3]] == [["key", "A:", first, "B:", second], ["lr", "0.001", "0.01"]]
    assert "+print('train harder')" in out


def test_diff_cli_unknown_run_one_line_exit_1(runs: Path, capsys) -> None:
    code, out, err = mlproj("diff", "1", "99", "--runs-dir", str(runs), capsys=capsys)
    assert code == 1 and out == ""
    assert err.startswith("mlproj diff: error: no run '99'") and err.count("\n") == 1


def test_diff_missing_copied_or_pickled_is_the_same_sentinel() -> None:
    assert copy.deepcopy(MISSING) is MISSING and pickle.loads(pickle.dumps(MISSING)) is MISSING


# ------------------------------------------------------------------ a runs dir from elsewhere runs nothing
def planted_repository(repo: Path, marker: Path) -> list[dict]:
    """A repository whose own config makes git run a program that writes `marker` (a textconv for
    every file, an fsmonitor), holding two pins of train.py; the pins, as info.json's `git` records them."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / ".gitattributes").write_text("* diff=pwn\n")
    (repo / "train.py").write_text(TRAIN)
    pins = [pin_working_tree(str(repo), "key-1")]
    (repo / "train.py").write_text(TRAIN.replace("print('train')", "print('train harder')"))
    pins.append(pin_working_tree(str(repo), "key-2"))
    program = f"sh -c 'id > {marker}; cat \"$0\"'"
    git(repo, "config", "diff.pwn.textconv", program)
    git(repo, "config", "core.fsmonitor", program)
    return pins


def planted_runs(tmp_path: Path, *, in_run_folder: bool) -> tuple[Path, Path]:
    """Runs 1 and 2 pinned in a planted repository: their base_dir when not `in_run_folder`, else run
    folder 1 itself (base_dir then names no folder). Returns (runs dir, the marker the program writes)."""
    runs, marker = tmp_path / "runs", tmp_path / "PWNED"
    repo = runs / "1" if in_run_folder else tmp_path / "planted"
    repo.mkdir(parents=True)
    pins = planted_repository(repo, marker)
    for run_id, pin in zip((1, 2), pins, strict=True):
        folder = runs / str(run_id)
        tmp = tmp_path / f"record-{run_id}"
        write_run(tmp, run_id, {"lr": 0.001 * run_id}, {"validation.accuracy": [0.5]}, info={"run_key": f"key-{run_id}", "git": pin})
        folder.mkdir(parents=True, exist_ok=True)
        record = json.loads((tmp / str(run_id) / "run.json").read_text())
        record["experiment"]["base_dir"] = str(tmp_path / "nowhere" if in_run_folder else repo)
        for name in ("config.json", "info.json", "metrics.json"):
            shutil.copy(tmp / str(run_id) / name, folder / name)
        (folder / "run.json").write_text(json.dumps(record))
    return runs, marker


def test_diff_cli_planted_textconv_in_base_dir_runs_nothing_and_diffs(tmp_path: Path) -> None:
    runs, marker = planted_runs(tmp_path, in_run_folder=False)
    result = subprocess.run([sys.executable, "-m", "mlproj.cli", "diff", "1", "2", "--runs-dir", str(runs)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "-print('train')\n+print('train harder')\n" in result.stdout
    assert not marker.exists()


def test_diff_cli_planted_repository_in_the_run_folder_is_not_used(tmp_path: Path) -> None:
    runs, marker = planted_runs(tmp_path, in_run_folder=True)
    result = subprocess.run([sys.executable, "-m", "mlproj.cli", "diff", "1", "2", "--runs-dir", str(runs)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "no source diff: no Git repository here holds" in result.stdout and "+print" not in result.stdout
    assert not marker.exists()


@pytest.mark.parametrize("in_run_folder", [False, True])
def test_board_compare_planted_textconv_runs_nothing(tmp_path: Path, in_run_folder: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlproj.board.app import create_app  # here: the board's imports are for these tests only

    runs, marker = planted_runs(tmp_path, in_run_folder=in_run_folder)
    monkeypatch.chdir(tmp_path)
    page = create_app(runs).test_client().get("/compare?run=1&run=2")
    assert page.status_code == 200
    assert (b"+print(&#39;train harder&#39;)" in page.data) is not in_run_folder
    assert not marker.exists()


@pytest.mark.parametrize("pin", ["HEAD", "--output=/tmp/x", "a" * 39, "A" * 40, 12])
def test_diff_runs_pin_not_a_commit_id_says_so_runs_no_git(runs: Path, pin: object) -> None:
    info = json.loads((runs / "2" / "info.json").read_text())
    info["git"]["snapshot"] = pin
    (runs / "2" / "info.json").write_text(json.dumps(info))
    diff = diff_runs(read_run(runs / "1"), read_run(runs / "2"))
    assert diff.source == "" and diff.config
    assert diff.note == f"run 2's pin {str(pin)!r} is not a commit id (its info.json is damaged)"


# ------------------------------------------------------------------ a bounded diff (the board's)
def test_diff_runs_limit_cuts_the_source_there_and_says_so(runs: Path) -> None:
    whole = diff_runs(read_run(runs / "1"), read_run(runs / "2"))
    cut = diff_runs(read_run(runs / "1"), read_run(runs / "2"), limit=40)
    exact = diff_runs(read_run(runs / "1"), read_run(runs / "2"), limit=len(whole.source))
    assert not whole.cut and len(whole.source) > 40
    assert cut.source == whole.source[:40] and cut.cut and cut.note is None
    assert exact.source == whole.source and not exact.cut


def test_run_git_limit_stops_reading_there_as_a_success(runs: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "big.txt").write_text("".join(f"line {i}\n" for i in range(200_000)))  # a diff of ~2 MB
    git(repo, "add", "big.txt")
    whole = run_git(["diff", "--cached"], cwd=str(repo), strip=False)
    assert run_git(["diff", "--cached"], cwd=str(repo), strip=False, limit=1000) == whole[:1000]
    assert len(whole) > 1_000_000


def test_diff_runs_limited_diff_kept_for_the_same_pins(runs: Path, tmp_path: Path) -> None:
    a, b = read_run(runs / "1"), read_run(runs / "2")
    first = diff_runs(a, b, limit=10_000)
    shutil.rmtree(tmp_path / "repo")  # git could no longer find the pins: the kept diff is shown
    assert diff_runs(a, b, limit=10_000) == first and "+print('train harder')" in first.source
    assert diff_runs(a, b).note.startswith("no Git repository here holds")  # the whole diff is read now


def test_board_compare_long_diff_cut_at_diff_chars_says_so(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlproj.board import views  # here: the board's imports are for these tests only
    from mlproj.board.app import create_app

    monkeypatch.setattr(views, "DIFF_CHARS", 60)
    page = create_app(runs).test_client().get("/compare?run=1&run=2").data.decode()
    assert "The diff is cut here" in page and "diff --git a/train.py" in page and "train harder" not in page


def test_diff_runs_recorded_folders_of_other_types_ignored(runs: Path) -> None:
    info = json.loads((runs / "2" / "info.json").read_text())
    (runs / "2" / "info.json").write_text(json.dumps({**info, "cwd": ["not", "a", "folder"]}))
    diff = diff_runs(read_run(runs / "1"), read_run(runs / "2"), limit=10_000)
    assert diff.note is None and "+print('train harder')" in diff.source  # found through run 1's folder
