"""DDP under torchrun on CPU (gloo): one job, one recorded run, metrics averaged over ranks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from mlproj.data.factory import EpochSampler


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("ddp") / "runs"
    env = {**os.environ, "MLPROJ_RUNS_DIR": str(runs), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("MONGODB_URI", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "main.py"), "with", "dataset=digits", "model=mlp", "n_epochs=2", "log_iteration_scalars=5",
               "git_pin=False"]
    # Its own session, so a hung rank is killed with torchrun instead of outliving the test.
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("torchrun did not finish within 180 s")
    assert process.returncode == 0, stderr[-3000:]
    (runs.parent / "stderr.txt").write_text(stderr)  # both ranks' stderr, for the logging test
    return runs


def test_ddp_two_processes_record_exactly_one_completed_run(ddp_runs: Path) -> None:
    runs = sorted(p.name for p in ddp_runs.iterdir() if p.name.isdigit())
    assert runs == ["1"]
    record = json.loads((ddp_runs / "1" / "run.json").read_text())
    assert record["status"] == "COMPLETED"
    assert sorted(record["artifacts"]) == ["best.pt", "last.pt"]
    assert len(list((ddp_runs / "tensorboard").iterdir())) == 1
    assert not (ddp_runs / "checkpoints").exists()  # rank 1 wrote no checkpoint of its own


def test_ddp_metrics_logged_once_per_step_by_rank_zero(ddp_runs: Path) -> None:
    metrics = json.loads((ddp_runs / "1" / "metrics.json").read_text())
    # digits: 1294 training samples, 647 per rank, batch 64 -> 11 steps per epoch, 22 in all.
    assert metrics["train.loss"]["steps"] == [5, 10, 15, 20]
    assert len(metrics["validation.accuracy"]["values"]) == 2


def test_ddp_sacred_info_lines_logged_by_rank_zero_only(ddp_runs: Path) -> None:
    stderr = (ddp_runs.parent / "stderr.txt").read_text()
    assert stderr.count("INFO - mlproj - Running command 'train'") == 1, stderr
    assert stderr.count("INFO - mlproj - Completed after") == 1


def test_ddp_checkpoint_loads_without_torchrun(ddp_runs: Path) -> None:
    from mlproj.train.loop import MLProject

    project = MLProject({"dataset": "digits", "model": "mlp", "tensorboard_dir": None})
    project.load_checkpoint(str(ddp_runs / "1" / "last.pt"))
    assert project.global_step == 22
    assert not any(".module." in key for key in torch.load(ddp_runs / "1" / "last.pt")["model"])


def test_epoch_sampler_shards_pad_to_equal_length_and_cover_everything() -> None:
    shards = [EpochSampler(11, seed=1, rank=rank, world_size=3) for rank in range(3)]
    indices = [s.indices().tolist() for s in shards]
    assert [len(s) for s in shards] == [4, 4, 4] == [len(i) for i in indices]
    assert set(sum(indices, [])) == set(range(11))


def test_distributed_timeout_from_environment_else_600_and_bad_value_one_line(monkeypatch) -> None:
    from mlproj.errors import MLProjError
    from mlproj.train.distributed import timeout_s

    monkeypatch.delenv("MLPROJ_DIST_TIMEOUT", raising=False)
    assert timeout_s() == 600
    monkeypatch.setenv("MLPROJ_DIST_TIMEOUT", "45")
    assert timeout_s() == 45
    monkeypatch.setenv("MLPROJ_DIST_TIMEOUT", "10m")
    with pytest.raises(MLProjError, match="MLPROJ_DIST_TIMEOUT=10m: give whole seconds"):
        timeout_s()
