"""`mlproj sweep` end to end: trials run as real processes and are read back from the runs dir.

The digits test runs the real main.py; the others run a tiny experiment written here (no data, no
training, a failure where the config says), so the scheduler and the skip rule are tested fast.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, read_json

from mlproj.cli import main as mlproj

TOY = '''"""A tiny experiment for sweep tests: returns lr * batch_size, fails where told to."""
import os
import time

from mlproj.record.experiment import create_experiment

ex = create_experiment("toy")


@ex.config
def config():
    lr = 0.1
    batch_size = 64
    fail_lr = None  # the trial with this lr raises
    sleep_s = 0.0


@ex.main
def train(lr, batch_size, fail_lr, sleep_s):
    time.sleep(sleep_s)
    if lr == fail_lr or str(lr) == os.environ.get("TOY_FAIL_LR"):  # the variable: a failure outside the config
        raise RuntimeError(f"diverged at lr={lr}")
    return lr * batch_size


if __name__ == "__main__":
    ex.run_commandline()
'''


def runs_of(runs: Path) -> dict[int, dict]:
    """Every recorded run: id -> {status, result, config, sweep}."""
    found = {}
    for folder in runs.iterdir() if runs.exists() else []:
        files = [folder / name for name in ("run.json", "config.json", "info.json")]
        if folder.name.isdigit() and all(f.exists() for f in files):  # a starting run may lack some
            record = read_json(folder / "run.json")
            found[int(folder.name)] = {
                "status": record["status"],
                "result": record.get("result"),
                "config": read_json(folder / "config.json"),
                "sweep": read_json(folder / "info.json").get("sweep"),
            }
    return found


@pytest.fixture
def toy(tmp_path: Path) -> str:
    path = tmp_path / "toy.py"
    path.write_text(TOY)
    return str(path)


@pytest.fixture(scope="module")
def digits_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], subprocess.CompletedProcess]:
    runs = tmp_path_factory.mktemp("sweep") / "runs"
    args = ["sweep", "main.py", "digits_mlp", "with", "lr=[0.01,0.001]", "batch_size=[32,64]",
            "n_global_iterations=2", "tensorboard_dir=None", "--jobs", "2"]
    return runs, args, run_cli(*args, runs=runs)


def run_cli(*args: str, runs: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLPROJ_RUNS_DIR": str(runs)}
    env.pop("MONGODB_URI", None)
    return subprocess.run([sys.executable, "-m", "mlproj.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_sweep_digits_grid_two_jobs_four_completed_runs_with_distinct_ids(digits_sweep) -> None:
    runs, _, result = digits_sweep
    assert result.returncode == 0, result.stdout + result.stderr
    recorded = runs_of(runs)
    assert sorted(recorded) == [1, 2, 3, 4]
    assert all(r["status"] == "COMPLETED" for r in recorded.values())
    assert sorted(r["sweep"]["trial"] for r in recorded.values()) == [1, 2, 3, 4]
    assert {(r["sweep"]["name"], r["sweep"]["of"]) for r in recorded.values()} == {("main", 4)}
    points = {(r["config"]["lr"], r["config"]["batch_size"]) for r in recorded.values()}
    assert points == {(0.01, 32), (0.01, 64), (0.001, 32), (0.001, 64)}
    keys = {read_json(runs / str(i) / "info.json")["run_key"] for i in recorded}
    assert len(keys) == 4
    assert "4 completed, 0 failed" in result.stdout


def test_sweep_digits_summary_lists_runs_best_first(digits_sweep) -> None:
    runs, _, result = digits_sweep
    table = result.stdout.split("best first", 1)[1].splitlines()[2:6]  # after the header row
    ids = [int(line.split()[0]) for line in table]
    results = [runs_of(runs)[i]["result"] for i in ids]
    assert sorted(ids) == [1, 2, 3, 4]
    assert results == sorted(results, reverse=True)


def test_sweep_digits_rerun_starts_no_trial(digits_sweep) -> None:
    runs, args, _ = digits_sweep
    again = run_cli(*args, runs=runs)
    assert again.returncode == 0, again.stderr
    assert "4 done already, 0 to run" in again.stdout
    assert "started" not in again.stdout
    assert sorted(runs_of(runs)) == [1, 2, 3, 4]


def test_sweep_one_failing_point_of_four_one_failed_three_completed(toy: str, runs_dir: Path, capsys) -> None:
    code = mlproj(["sweep", toy, "with", "lr=[0.1,0.2,0.3,0.4]", "fail_lr=0.3", "--jobs", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert "3 completed, 1 failed" in out
    assert "trial 3 FAILED (exit 1)" in out and "diverged at lr=0.3" in out
    recorded = runs_of(runs_dir)
    failed = [r for r in recorded.values() if r["status"] == "FAILED"]
    assert len(failed) == 1 and failed[0]["config"]["lr"] == 0.3 and failed[0]["sweep"]["trial"] == 3
    assert sorted(r["config"]["lr"] for r in recorded.values() if r["status"] == "COMPLETED") == [0.1, 0.2, 0.4]


def test_sweep_rerun_after_failure_runs_only_the_failed_trial(toy: str, runs_dir: Path, capsys,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOY_FAIL_LR", "0.3")  # trial 3 fails for a reason its config does not hold
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2,0.3]"]) == 1
    capsys.readouterr()
    monkeypatch.delenv("TOY_FAIL_LR")
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2,0.3]"]) == 0  # the same command, the cause fixed
    out = capsys.readouterr().out
    assert "3 trial(s), 2 done already, 1 to run" in out
    assert "trial 3 started: lr=0.3" in out and "trial 1 started" not in out and "trial 2 started" not in out
    statuses = sorted((r["config"]["lr"], r["status"]) for r in runs_of(runs_dir).values())
    assert statuses == [(0.1, "COMPLETED"), (0.2, "COMPLETED"), (0.3, "COMPLETED"), (0.3, "FAILED")]


def test_sweep_rerun_with_changed_config_runs_every_trial_again(toy: str, runs_dir: Path, capsys) -> None:
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2,0.3]", "fail_lr=0.3"]) == 1
    capsys.readouterr()
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2,0.3]", "fail_lr=0.5"]) == 0
    out = capsys.readouterr().out
    assert "3 trial(s), 0 done already" in out  # fail_lr changed, so every effective config changed


def test_sweep_extended_grid_runs_only_new_points(toy: str, runs_dir: Path, capsys) -> None:
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2]"]) == 0
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2,0.3]"]) == 0
    out = capsys.readouterr().out
    assert "3 trial(s), 2 done already, 1 to run" in out
    assert sorted(r["config"]["lr"] for r in runs_of(runs_dir).values()) == [0.1, 0.2, 0.3]


def test_sweep_force_reruns_done_trials(toy: str, runs_dir: Path, capsys) -> None:
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2]"]) == 0
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2]", "--force"]) == 0
    assert len(runs_of(runs_dir)) == 4


def test_sweep_other_name_does_not_skip(toy: str, runs_dir: Path, capsys) -> None:
    assert mlproj(["sweep", toy, "with", "lr=[0.1]"]) == 0
    assert mlproj(["sweep", toy, "with", "lr=[0.1]", "--name", "other"]) == 0
    assert sorted(r["sweep"]["name"] for r in runs_of(runs_dir).values()) == ["other", "toy"]


def test_sweep_seeds_run_each_point_per_seed_and_record_them(toy: str, runs_dir: Path, capsys) -> None:
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2]", "--seeds", "2", "--jobs", "2"]) == 0
    points = sorted((r["config"]["lr"], r["config"]["seed"]) for r in runs_of(runs_dir).values())
    assert points == [(0.1, 1), (0.1, 2), (0.2, 1), (0.2, 2)]


def test_sweep_seeds_one_seed_done_other_seed_still_runs(toy: str, runs_dir: Path, capsys) -> None:
    args = ["sweep", toy, "with", "lr=[0.1]", "--seeds", "2"]
    assert mlproj([*args, "--trial", "1"]) == 0  # only seed 1 ran
    capsys.readouterr()
    assert mlproj(args) == 0  # the rerun must run seed 2, not take seed 1's run for it
    assert sorted(r["config"]["seed"] for r in runs_of(runs_dir).values()) == [1, 2]


def test_sweep_random_fixed_seed_draws_same_trials_twice(toy: str, runs_dir: Path, capsys) -> None:
    args = ["sweep", toy, "with", "lr=loguniform(1e-4,1e-1)", "batch_size=randint(8,256)", "--random", "3",
            "--sweep-seed", "5"]
    assert mlproj(args) == 0
    first = sorted((r["config"]["lr"], r["config"]["batch_size"]) for r in runs_of(runs_dir).values())
    assert mlproj([*args, "--dry-run"]) == 0
    dry = capsys.readouterr().out.splitlines()[-3:]
    assert all(line.startswith("# done in run") for line in dry)  # the same three draws, all done
    assert mlproj([*args, "--name", "again"]) == 0
    again = sorted((r["config"]["lr"], r["config"]["batch_size"]) for r in runs_of(runs_dir).values()
                   if r["sweep"]["name"] == "again")
    assert again == first and len(set(first)) == 3


def test_sweep_dry_run_one_runnable_command_per_trial(toy: str, runs_dir: Path, capsys) -> None:
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2]", "batch_size=[8,16]", "--dry-run", "--devices", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("MLPROJ_SWEEP='{\"name\":\"toy\",\"of\":4,\"trial\":1}' ")
    assert lines[3].endswith("toy.py with lr=0.2 batch_size=16 device=cpu")
    assert not runs_dir.exists()  # nothing ran
    subprocess.run(lines[1], shell=True, check=True, capture_output=True, cwd=ROOT)  # as a user would paste it
    (run,) = runs_of(runs_dir).values()
    assert run["sweep"] == {"name": "toy", "of": 4, "trial": 2}
    assert (run["config"]["lr"], run["config"]["batch_size"], run["config"]["device"]) == (0.1, 16, "cpu")
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2]", "batch_size=[8,16]", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("# done in run 1: MLPROJ_SWEEP=")


def test_sweep_slurm_script_one_task_per_trial_with_skip_rule(toy: str, runs_dir: Path, tmp_path: Path, capsys) -> None:
    script = tmp_path / "sweep.sbatch"
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2,0.3]", "--jobs", "2", "--slurm", str(script)]) == 0
    text = script.read_text()
    assert "#SBATCH --array=1-3%2" in text
    assert f"export MLPROJ_RUNS_DIR={runs_dir}" in text
    assert '--name toy --sweep-seed 0 --trial "$SLURM_ARRAY_TASK_ID"' in text
    from mlproj.util.files import plain_python  # the interpreter by the name the README shows, absolute
    assert f"exec {plain_python()} -m mlproj.cli sweep" in text and os.path.isabs(plain_python())
    assert not [p for p in runs_dir.iterdir() if p.name.isdigit()]  # writing it ran nothing
    # Run array task 2 as SLURM would (bash, with the task id set), twice: the second is skipped.
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "2"}
    first = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stdout + first.stderr
    (run,) = runs_of(runs_dir).values()
    assert run["config"]["lr"] == 0.2 and run["sweep"] == {"name": "toy", "of": 3, "trial": 2}
    second = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and "1 done already, 0 to run" in second.stdout
    assert len(runs_of(runs_dir)) == 1


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (["lr=[]"], "lr=\\[\\] is an empty list"),
        (["lr=normal(0,1)"], "unknown distribution"),
        (["lrr=[0.1,0.2]"], "unknown config key lrr"),
        (["no_such_named_config", "lr=[0.1]"], "no_such_named_config"),
        (["lr=[0.1,-1]"], "trial 2 \\(lr=-1\\): config lr=-1 is invalid"),
        (["lr=[0.1]", "--jobs", "0"], "--jobs 0: run at least 1 trial at a time"),
        (["lr=[0.1]", "--devices", "cuda"], "list devices by name"),
        (["lr=[0.1]", "device=cpu", "--devices", "cpu"], "device is set in the spec and by --devices"),
    ],
)
def test_sweep_bad_spec_one_line_before_any_run(spec: list[str], match: str, toy: str, runs_dir: Path, capsys) -> None:
    code = mlproj(["sweep", toy, "with", *spec])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("mlproj sweep: error: ")
    assert re.search(match, err), err
    assert not runs_dir.exists()


def test_sweep_missing_script_one_line(runs_dir: Path, tmp_path: Path, capsys) -> None:
    assert mlproj(["sweep", str(tmp_path / "nope.py"), "with", "lr=[0.1]"]) == 1
    assert "nope.py not found" in capsys.readouterr().err


def statuses(runs: Path) -> set[str]:
    """The statuses in the run folders' run.json files (a file being written is skipped)."""
    found = set()
    for path in runs.glob("[0-9]*/run.json"):
        with contextlib.suppress(OSError, ValueError):
            found.add(read_json(path)["status"])
    return found


def test_sweep_killed_halfway_rerun_completes_only_missing_trials(toy: str, runs_dir: Path) -> None:
    args = [sys.executable, "-m", "mlproj.cli", "sweep", toy, "with", "lr=[0.1,0.2,0.3,0.4]", "sleep_s=1.5"]
    sweep = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180  # generous: trials start slowly on a busy 2-core machine
    while not {"COMPLETED", "RUNNING"} <= statuses(runs_dir):  # one trial done, one going
        assert time.monotonic() < deadline and sweep.poll() is None
        time.sleep(0.1)
    sweep.send_signal(signal.SIGTERM)
    out, _ = sweep.communicate(timeout=60)
    assert sweep.returncode == 130, out
    assert "interrupted: run the same command again" in out
    before = runs_of(runs_dir)
    done = {r["config"]["lr"] for r in before.values() if r["status"] == "COMPLETED"}
    assert 1 <= len(done) < 4
    assert all(r["status"] in ("COMPLETED", "INTERRUPTED") for r in before.values())
    stopped = [r["sweep"]["trial"] for r in before.values() if r["status"] == "INTERRUPTED"]
    assert stopped  # the trial that was running
    for trial in stopped:  # the sweep passed its SIGTERM on as SIGTERM
        assert "interrupted (SIGTERM)" in next(runs_dir.glob(f"_sweeps/*/trial-{trial}.log")).read_text()

    rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{len(done)} done already, {4 - len(done)} to run" in rerun.stdout
    after = runs_of(runs_dir)
    completed = sorted(r["config"]["lr"] for r in after.values() if r["status"] == "COMPLETED")
    assert completed == [0.1, 0.2, 0.3, 0.4]  # each point completed exactly once


@pytest.mark.parametrize("lower_is_better, minimize, order", [(True, False, ["1", "2"]), (False, False, ["2", "1"]), (False, True, ["1", "2"])])
def test_sweep_summary_best_first_follows_recorded_benchmark_minimize_overrides(
    tmp_path: Path, capsys, lower_is_better: bool, minimize: bool, order: list[str]
) -> None:
    import json

    from conftest import write_run

    from mlproj.cli.sweep import _print_summary

    benchmark = {"metric": "validation.score", "lower_is_better": lower_is_better}
    for i, result in ((1, 0.2), (2, 0.7)):
        folder = write_run(tmp_path, i, {"lr": i}, {}, info={"sweep": {"name": "s", "trial": i}, "benchmark": benchmark})
        record = json.loads((folder / "run.json").read_text())
        (folder / "run.json").write_text(json.dumps({**record, "result": result}))
    _print_summary(str(tmp_path), "s", ["lr"], minimize)
    rows = capsys.readouterr().out.splitlines()[3:5]
    assert [row.split()[0] for row in rows] == order


def test_sweep_slurm_options_written_as_sbatch_lines(toy: str, runs_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "sweep.sbatch"
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2]", "--slurm", str(script), "--slurm-option=--partition=gpu",
                   "--slurm-option=--gres=gpu:1", "--slurm-option=--time=1:00:00"]) == 0
    lines = script.read_text().splitlines()
    sbatch = [line for line in lines if line.startswith("#SBATCH ")]
    assert sbatch[-3:] == ["#SBATCH --partition=gpu", "#SBATCH --gres=gpu:1", "#SBATCH --time=1:00:00"]
    assert lines.index(sbatch[-1]) < lines.index("set -euo pipefail")  # sbatch reads #SBATCH before the first command
    assert "#SBATCH --array=1-2\n" in script.read_text()  # no --jobs: no throttle


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--slurm", "S", "--slurm-option=--time 1:00"], "--slurm-option=--time 1:00: give one sbatch option as one word"),
        (["--slurm", "S", "--slurm-option=partition=gpu"], "give one sbatch option"),
        (["--slurm", "S", "--slurm-option=--array=1-9"], "the script sets --array itself"),
        (["--slurm-option=--partition=gpu"], "--slurm-option goes into a SLURM script: add --slurm FILE or --submit"),
        (["--status", "--submit"], "--status only looks"),
    ],
)
def test_sweep_slurm_bad_option_one_line_no_script(args: list[str], match: str, toy: str, runs_dir: Path,
                                                   tmp_path: Path, capsys) -> None:
    args = [str(tmp_path / "S") if arg == "S" else arg for arg in args]
    assert mlproj(["sweep", toy, "with", "lr=[0.1]", *args]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and match in err, err
    assert not (tmp_path / "S").exists()


def test_sweep_submit_without_sbatch_one_line(toy: str, runs_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # a machine without SLURM's commands
    assert mlproj(["sweep", toy, "with", "lr=[0.1]", "--submit"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--submit: no sbatch on this machine" in err, err


def test_sweep_status_without_squeue_states_from_the_runs(toy: str, runs_dir: Path, tmp_path: Path, monkeypatch,
                                                         capsys) -> None:
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2,0.3]", "--trial", "2"]) == 0
    monkeypatch.setenv("TOY_FAIL_LR", "0.3")
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2,0.3]", "--trial", "3"]) == 1
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    capsys.readouterr()
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2,0.3]", "--status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in out[1:4]] == [["1", "NOT_RUN", "-"], ["2", "COMPLETED", "1"], ["3", "FAILED", "2"]]
    assert out[-1] == ("sweep toy: 3 trial(s): 1 NOT_RUN, 1 COMPLETED, 1 FAILED (no squeue here: states from the runs "
                       "alone)")


def test_sweep_status_squeue_failing_states_from_the_runs_with_its_reason(toy: str, runs_dir: Path, tmp_path: Path,
                                                                         monkeypatch, capsys) -> None:
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2]", "--trial", "1"]) == 0
    # A stand-in squeue that fails as Debian's does when no slurmctld answers: no controller can be
    # reached under `make test` (make test-cluster runs the real one).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\necho 'squeue: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host' >&2\nexit 1\n")
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    capsys.readouterr()
    assert mlproj(["sweep", toy, "with", "lr=[0.1,0.2]", "--status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[1:3]] == [["1", "COMPLETED"], ["2", "NOT_RUN"]]
    assert out[-1] == ("sweep toy: 2 trial(s): 1 COMPLETED, 1 NOT_RUN (squeue failed: squeue: error: "
                       "resolve_ctls_from_dns_srv: res_nsearch error: Unknown host: states from the runs alone)")
