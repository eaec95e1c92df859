"""A sweep as a SLURM job array, for real: the README's commands against the one-node cluster that
`make test-cluster` starts (test/cluster/up.sh); skipped where there is none."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, cluster_service

from mlproj.runs.reader import read_runs

pytestmark = pytest.mark.cluster

README = (ROOT / "README.md").read_text()
SECTION = README.split("**On a SLURM cluster**", 1)[1].split("Mistakes in the spec", 1)[0]


def readme_command(*words: str) -> str:
    """The README's SLURM command line holding every one of `words`, without its `$ `."""
    (line,) = [line[2:] for line in SECTION.splitlines() if line.startswith("$ ") and all(w in line for w in words)]
    return line


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder laid out as the project's checkout, as the README's commands expect it (./main.py,
    ./.venv), recording into its own runs/."""
    cluster_service("MLPROJ_TEST_SLURM", "SLURM cluster")
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "main.py").symlink_to(ROOT / "main.py")
    (folder / ".venv").symlink_to(Path(sys.executable).parent.parent)
    return folder


def shell(line: str, cwd: Path, runs: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLPROJ_RUNS_DIR": str(runs), "OMP_NUM_THREADS": "1"}
    env.pop("MONGODB_URI", None)
    result = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{line}\n{result.stdout}{result.stderr}"
    return result


def wait_for_job(job: str, timeout: float = 240) -> None:
    """Until SLURM holds no task of array `job` pending or running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "--noheader", "--array", f"--jobs={job}", "--format=%i %T"],
                                capture_output=True, text=True)
        if (queued.returncode == 0 and not queued.stdout.strip()) or "Invalid job id" in queued.stderr:
            return  # gone from the queue (or already purged from slurmctld's memory)
        time.sleep(1)
    pytest.fail(f"job {job} still queued after {timeout} s: {queued.stdout}")


def submitted_job(output: str) -> str:
    (job,) = re.findall(r"(?:Submitted batch job|as job) (\d+)", output)
    return job


def runs_of_sweep(runs: Path, name: str) -> list:
    return [run for run in read_runs(str(runs), summaries=False) if run.sweep.get("name") == name]


def max_overlap(runs: list) -> int:
    """The most runs running at one moment, from their recorded start and stop times."""
    events = sorted([(run.start, 1) for run in runs] + [(run.stop_time, -1) for run in runs], key=lambda e: (e[0], e[1]))
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def test_sweep_slurm_readme_script_runs_every_trial_within_limit_and_resubmission_runs_none(project: Path) -> None:
    runs = project / "runs"
    wrote = shell(readme_command("--slurm sweep.sbatch"), project, runs)
    assert "wrote sweep.sbatch: 4 array tasks (0 already done)" in wrote.stdout
    script = (project / "sweep.sbatch").read_text()
    assert "#SBATCH --array=1-4%2\n" in script and "#SBATCH --time=0:30:00\n" in script
    elsewhere = project.parent / "elsewhere"  # sbatch from another folder: the script holds its paths
    elsewhere.mkdir()
    job = submitted_job(shell(f"sbatch {project / 'sweep.sbatch'}", elsewhere, runs).stdout)
    wait_for_job(job)
    recorded = runs_of_sweep(runs, "main")
    assert sorted(run.sweep["trial"] for run in recorded) == [1, 2, 3, 4]
    assert {run.status for run in recorded} == {"COMPLETED"}
    assert max_overlap(recorded) <= 2  # the array's %2 limit
    assert not list(elsewhere.iterdir())  # the tasks wrote nothing where sbatch ran

    again = submitted_job(shell(f"sbatch {project / 'sweep.sbatch'}", elsewhere, runs).stdout)
    wait_for_job(again)
    assert len(runs_of_sweep(runs, "main")) == 4  # every task found its trial done
    logs = sorted((runs / "_sweeps" / "main").glob(f"slurm-{again}_*.log"))
    assert len(logs) == 4 and all("1 trial(s), 1 done already, 0 to run" in log.read_text() for log in logs)

    status = shell(readme_command("--status"), project, runs).stdout
    assert status.strip().endswith("sweep main: 4 trial(s): 4 COMPLETED"), status


def test_sweep_slurm_submit_cancelled_task_reruns_on_next_submission(project: Path) -> None:
    runs = project / "runs"
    # Two trials (batch_size 64, then 128), long enough to cancel mid-run.
    submit = readme_command("--submit").replace("n_epochs=5", "n_epochs=150").replace("'lr=[0.1,0.01]'", "'lr=[0.1]'")
    job = submitted_job(shell(submit, project, runs).stdout)
    # Cancel trial 1's task mid-training (its log shows epochs going by).
    log = runs / "_sweeps" / "main" / "trial-1.log"
    deadline = time.monotonic() + 120
    while not (log.exists() and "epoch 2 " in log.read_text()):
        assert time.monotonic() < deadline, "trial 1 never trained"
        time.sleep(0.2)
    subprocess.run(["scancel", f"{job}_1"], check=True)
    wait_for_job(job)
    by_trial = {run.sweep["trial"]: run for run in runs_of_sweep(runs, "main")}
    # scancel's SIGTERM reaches every process of the task, the sweep passes it on as well: one
    # orderly stop, which saves the step reached and says so in the record.
    assert by_trial[1].status == "INTERRUPTED"
    assert "SIGTERM: saved " in log.read_text()
    assert "SIGTERM: saved " in (runs / str(by_trial[1].id) / "cout.txt").read_text()
    assert by_trial[2].status == "COMPLETED"
    status = shell(submit.replace("--submit", "--status"), project, runs).stdout
    assert re.search(rf"^1\s+INTERRUPTED\s+{by_trial[1].id}\s", status, re.M), status

    again = submitted_job(shell(submit, project, runs).stdout)
    wait_for_job(again)
    recorded = runs_of_sweep(runs, "main")
    assert len(recorded) == 3  # trial 1 ran again, and nothing else
    rerun = max(recorded, key=lambda run: run.id)
    assert rerun.sweep["trial"] == 1 and rerun.status == "COMPLETED"
    assert "2 trial(s): 2 COMPLETED" in shell(submit.replace("--submit", "--status"), project, runs).stdout


def test_sweep_slurm_option_bad_value_one_line_and_no_script(project: Path) -> None:
    line = readme_command("--slurm sweep.sbatch").replace("--slurm-option=--time=0:30:00", "--slurm-option='--time 1:00'")
    env = {**os.environ, "MLPROJ_RUNS_DIR": str(project / "runs")}
    result = subprocess.run(["bash", "-c", line], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "--slurm-option=--time 1:00: give one sbatch option" in result.stderr
    assert not (project / "sweep.sbatch").exists()


def test_sweep_slurm_readme_commands_quoted_as_run() -> None:
    # The commands above are the README's own, word for word: each one parses as a shell line.
    for words in (("--slurm sweep.sbatch",), ("--submit",), ("--status",)):
        assert shlex.split(readme_command(*words))[0] == ".venv/bin/mlproj"
