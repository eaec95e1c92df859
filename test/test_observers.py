"""The file record: Sacred's layout, written atomically, complete even when a metric is odd."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import torch

from mlproj.record.experiment import create_experiment


def test_run_folder_tensor_metric_recorded_and_run_completed(runs_dir: Path) -> None:
    ex = create_experiment("odd_metric")

    @ex.main
    def main(_run):
        _run.log_scalar("acc", torch.tensor(0.5), 1)  # a user's 0-d tensor, not a float

    ex.run()
    assert json.loads((runs_dir / "1" / "run.json").read_text())["status"] == "COMPLETED"
    assert json.loads((runs_dir / "1" / "metrics.json").read_text())["acc"]["values"] == [0.5]


def test_run_folder_files_get_the_umask_mode_not_0600(runs_dir: Path, tmp_path: Path) -> None:
    ex = create_experiment("modes")
    artifact = tmp_path / "best.pt"
    artifact.write_bytes(b"weights")

    @ex.main
    def main(_run):
        _run.log_scalar("loss", 1.0, 1)
        _run.add_artifact(str(artifact), "best.pt")

    ex.run()
    umask = os.umask(0)
    os.umask(umask)
    for name in ("run.json", "config.json", "metrics.json", "best.pt"):
        assert stat.S_IMODE((runs_dir / "1" / name).stat().st_mode) == 0o666 & ~umask, name
