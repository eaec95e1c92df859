"""`mlproj.load_run`: a recorded run back as a project, from anywhere, without model code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_main

import mlproj
from mlproj.errors import MLProjError


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("loading") / "runs"
    result = run_main("with", "dataset=digits", "model=mlp", "n_epochs=2", "seed=2", "tensorboard_dir=None", runs=runs)
    assert result.returncode == 0, result.stderr
    return runs / "1"


def recorded_best_metric(run: Path, name: str) -> float:
    series = json.loads((run / "metrics.json").read_text())[name]
    best_step = torch.load(run / "best.pt", weights_only=True)["state"]["best_step"]
    return series["values"][series["steps"].index(best_step)]


def test_load_run_from_another_directory_reproduces_validation_metric(
    recorded_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a notebook elsewhere, with another runs dir
    monkeypatch.setenv("MLPROJ_RUNS_DIR", str(tmp_path / "elsewhere"))
    project = mlproj.load_run(str(recorded_run))
    assert not project.model.training
    metrics = project.evaluate("validation")
    assert metrics["validation.accuracy"] == pytest.approx(recorded_best_metric(recorded_run, "validation.accuracy"), abs=1e-9)
    assert metrics["validation.loss"] == pytest.approx(recorded_best_metric(recorded_run, "validation.loss"), rel=1e-6)
    assert not project.model.training  # evaluating does not switch a loaded model back to training


def test_load_run_model_call_is_inference(recorded_run: Path) -> None:
    project = mlproj.load_run(recorded_run, checkpoint="last")
    inputs, labels = next(iter(project.dataset_factory.test_loader()))
    with torch.no_grad():
        logits = project.model(inputs)
    assert logits.shape == (len(labels), 10)
    assert (logits.argmax(1) == labels).float().mean() > 0.5  # a trained model, not a fresh one
    last = torch.load(recorded_run / "last.pt", weights_only=True)
    assert project.state.global_step == last["state"]["global_step"]


def test_load_run_by_id_in_runs_dir(recorded_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPROJ_RUNS_DIR", str(recorded_run.parent))
    assert mlproj.load_run(1).state.best_step is not None


def test_load_run_builds_the_main_files_project_class(recorded_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "1"
    shutil.copytree(recorded_run, run)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "my_main.py").write_text(
        "from mlproj import MLProject\n\n\nclass Project(MLProject):\n    loaded_by_load_run = True\n"
    )
    record = json.loads((run / "run.json").read_text())
    record["experiment"].update(base_dir=str(tmp_path / "src"), mainfile="my_main.py", sources=[["my_main.py", "_sources/x.py"]])
    (run / "run.json").write_text(json.dumps(record))
    project = mlproj.load_run(run)
    assert type(project).__name__ == "Project" and project.loaded_by_load_run


@pytest.mark.parametrize("mainfile, sources", [("../elsewhere.py", None), ("other.py", [["main.py", "_sources/x.py"]])])
def test_load_run_main_file_not_among_recorded_sources_refused_unrun(
    recorded_run: Path, tmp_path: Path, mainfile: str, sources: list | None
) -> None:
    run = tmp_path / "runs" / "1"
    shutil.copytree(recorded_run, run)
    (tmp_path / "src").mkdir()
    marker = tmp_path / "marker"
    for name in ("elsewhere.py", "src/other.py"):
        (tmp_path / name).write_text(f"open({str(marker)!r}, 'w')\n")
    record = json.loads((run / "run.json").read_text())
    record["experiment"].update(base_dir=str(tmp_path / "src"), mainfile=mainfile, sources=sources or [])
    (run / "run.json").write_text(json.dumps(record))
    with pytest.raises(MLProjError, match="is not a source the run recorded"):
        mlproj.load_run(run)
    assert not marker.exists()


def test_load_run_unknown_run_raises(tmp_path: Path) -> None:
    with pytest.raises(MLProjError, match="run .*nowhere.* not found"):
        mlproj.load_run(tmp_path / "nowhere")


def test_load_run_without_best_pt_takes_last_pt_without_any_raises(recorded_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "1"
    shutil.copytree(recorded_run, run)
    (run / "best.pt").unlink()
    last = torch.load(run / "last.pt", weights_only=True)["model"]
    loaded = mlproj.load_run(run, device="cpu").model.state_dict()
    assert all(torch.equal(loaded[key].cpu(), value) for key, value in last.items())
    (run / "last.pt").unlink()
    with pytest.raises(MLProjError, match=r"holds no checkpoint \(no best\.pt or last\.pt\)"):
        mlproj.load_run(run)


def test_test_command_takes_run_folder_and_load_run_of_it_names_the_trained_run(recorded_run: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(recorded_run, runs / "1")
    result = run_main("test", "with", "checkpoint=runs/1", runs=runs, cwd=tmp_path)  # a folder, as `resume=` takes
    assert result.returncode == 0, result.stderr
    assert "test.accuracy" in json.loads((runs / "2" / "metrics.json").read_text())
    with pytest.raises(MLProjError) as err:
        mlproj.load_run(runs / "2")
    assert str(err.value) == (f"run {runs / '2'} is a `test` run: it evaluated {runs / '1'} and saved no checkpoint; "
                              f"load the run that trained it: load_run('{runs / '1'}').")


def test_load_run_caller_rng_states_process_group_and_tensorboard_untouched(
    recorded_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    import numpy as np
    import torch.distributed as dist
    from torch.utils import tensorboard

    opened: list[object] = []  # the folders a TensorBoard writer was opened on
    monkeypatch.setattr(tensorboard, "SummaryWriter", lambda *args, **kwargs: opened.append(args))
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    before = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    project = mlproj.load_run(recorded_run)
    project.evaluate("validation")
    after = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    assert after[0] == before[0], "python's random state changed"
    assert all(np.array_equal(a, b) for a, b in zip(after[1], before[1], strict=True)), "numpy's state changed"
    assert torch.equal(after[2], before[2]), "torch's state changed"
    assert not dist.is_initialized() and opened == []
