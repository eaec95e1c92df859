"""Callbacks: hook order and arguments, the stop and log verbs, failures, and early stopping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mlproj import Callback, ClassificationModel, DatasetFactory, MLProject
from mlproj.errors import MLProjError


def digits_config(tmp_path: Path, **overrides) -> dict:
    # digits' training split in batches of 512: 3 steps per epoch.
    return {"dataset": "digits", "model": "mlp", "batch_size": 512, "n_epochs": 1, "device": "cpu", "seed": 1,
            "tensorboard_dir": None, "model_dir": str(tmp_path / "ckpt"), **overrides}


class Recorder(Callback):
    """Records each hook call with what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_train_begin(self, project):
        self.calls.append(("train_begin", project.global_step))

    def on_train_batch_end(self, project, metrics):
        self.calls.append(("batch_end", project.global_step, sorted(metrics), type(metrics["loss"]).__name__))

    def on_evaluate_end(self, project, split, metrics):
        self.calls.append(("evaluate_end", split, sorted(metrics)))

    def on_epoch_end(self, project, metrics):
        self.calls.append(("epoch_end", project.epoch, sorted(metrics)))

    def on_checkpoint(self, project, path):
        self.calls.append(("checkpoint", Path(path).name, project.global_step))

    def on_train_end(self, project):
        self.calls.append(("train_end", project.global_step))


def test_callback_hooks_called_in_order_with_their_arguments(tmp_path: Path) -> None:
    recorder = Recorder()
    MLProject(digits_config(tmp_path), callbacks=[recorder]).train()
    names = ["validation.accuracy", "validation.loss"]
    assert recorder.calls == [
        ("train_begin", 0),
        *[("batch_end", step, ["accuracy", "loss"], "Tensor") for step in (1, 2, 3)],  # as train_batch returned them
        ("evaluate_end", "validation", names),
        ("epoch_end", 1, names),
        ("checkpoint", "last.pt", 3),
        ("train_end", 3),
    ]


def test_callback_on_checkpoint_reads_the_complete_file_of_its_step(tmp_path: Path) -> None:
    from mlproj.train.checkpoint import load_checkpoint

    seen = []

    class Reader(Callback):
        def on_checkpoint(self, project, path):  # epoch-end saves write in the background
            seen.append((load_checkpoint(path)["state"]["global_step"], project.global_step))

    MLProject(digits_config(tmp_path, n_epochs=3), callbacks=[Reader()]).train()
    assert seen == [(3, 3), (6, 6), (9, 9)]


def test_callback_epoch_inside_first_on_epoch_end_is_one(tmp_path: Path) -> None:
    seen = []

    class Epochs(Callback):
        def on_epoch_end(self, project, metrics):
            seen.append(project.epoch)

    MLProject(digits_config(tmp_path, n_epochs=2), callbacks=[Epochs()]).train()
    assert seen == [1, 2]


def test_callback_get_callbacks_come_before_the_passed_ones(tmp_path: Path) -> None:
    order = []

    class Named(Callback):
        def __init__(self, name):
            self.name = name

        def on_train_begin(self, project):
            order.append(self.name)

    class Project(MLProject):
        @staticmethod
        def get_callbacks(config):
            return [*MLProject.get_callbacks(config), Named("configured")]

    project = Project(digits_config(tmp_path, early_stopping_patience=2), callbacks=[Named("passed")])
    assert [type(c).__name__ for c in project.callbacks] == ["EarlyStopping", "Named", "Named"]
    project.train()
    assert order == ["configured", "passed"]


# ----------------------------------------------------------------------------- through main.py-like files
EXPERIMENT = '''
from mlproj import Callback, MLProject
from mlproj.record.experiment import create_experiment

ex = create_experiment("cb")


@ex.config
def config():
    dataset = "digits"
    model = "mlp"
    batch_size = 512
    n_epochs = 2
    device = "cpu"
    git_pin = False
    stop_at = None  # request a stop in on_train_batch_end at this step
    fail_in = None  # the hook that raises


class Hooks(Callback):
    def __init__(self, config):
        self.config = config

    def on_train_batch_end(self, project, metrics):
        if project.global_step == self.config["stop_at"]:
            project.request_stop(f"asked at step {project.global_step}")
        if self.config["fail_in"] == "on_train_batch_end":
            raise ValueError("bad\\nvalue")

    def on_epoch_end(self, project, metrics):
        if self.config["fail_in"] == "on_epoch_end":
            raise ValueError("no f1 for you")


class F1(Callback):
    def on_epoch_end(self, project, metrics):
        project.log_metrics({"validation.f1": 0.25 * project.epoch})


class Project(MLProject):
    @staticmethod
    def get_callbacks(config):
        return [*MLProject.get_callbacks(config), Hooks(config)]


@ex.main
def train(_run):
    return Project.from_run(_run, callbacks=[F1()]).train()


if __name__ == "__main__":
    ex.run_commandline()
'''


def run_experiment(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    script = tmp_path / "experiment.py"
    script.write_text(EXPERIMENT)
    result = subprocess.run([sys.executable, str(script), *(("with", *args) if args else ())], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    return result, tmp_path / "runs" / "1"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_callback_request_stop_ends_after_that_step_evaluated_saved_and_completed(tmp_path: Path) -> None:
    result, run = run_experiment(tmp_path, "stop_at=2")  # mid-epoch: an epoch has 3 steps
    assert result.returncode == 0, result.stderr
    assert read_json(run / "run.json")["status"] == "COMPLETED"
    assert read_json(run / "info.json")["stop_reason"] == "asked at step 2"
    assert torch.load(run / "last.pt", weights_only=True)["state"]["global_step"] == 2
    assert read_json(run / "metrics.json")["validation.accuracy"]["steps"] == [2]


def test_callback_log_metrics_lands_in_metrics_json_and_tensorboard(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, run = run_experiment(tmp_path)
    assert result.returncode == 0, result.stderr
    f1 = read_json(run / "metrics.json")["validation.f1"]
    assert (f1["steps"], f1["values"]) == ([3, 6], [0.25, 0.5])
    (board,) = (tmp_path / "runs" / "tensorboard").iterdir()
    events = EventAccumulator(str(board))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("validation/f1")] == [(3, 0.25), (6, 0.5)]


@pytest.mark.parametrize("hook, line", [
    ("on_epoch_end", "error: callback Hooks.on_epoch_end failed: ValueError: no f1 for you"),
    ("on_train_batch_end", "error: callback Hooks.on_train_batch_end failed: ValueError: bad value"),
])
def test_callback_raising_fails_the_run_with_one_line_naming_it(tmp_path: Path, hook: str, line: str) -> None:
    result, run = run_experiment(tmp_path, f"fail_in={hook}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == line
    assert "Traceback" not in result.stderr
    assert read_json(run / "run.json")["status"] == "FAILED"


# ----------------------------------------------------------------------------- early stopping
class Scripted(ClassificationModel):
    """Its evaluation after epoch e reports `values[e]` as its benchmark metric."""

    def __init__(self, values: list[float], metric: str, lower_is_better: bool) -> None:
        net = nn.Linear(4, 2)
        super().__init__(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss())
        self.values, self.benchmark_metric, self.benchmark_lower_is_better = values, metric, lower_is_better
        self.current = 0

    def on_epoch_begin(self, epoch: int) -> None:
        self.current = epoch

    def test_batch(self, batch):
        return {self.benchmark_metric: torch.tensor(self.values[self.current])}


def scripted_project(tmp_path: Path, values: list[float], metric: str, lower_is_better: bool, patience: int) -> MLProject:
    x, y = torch.randn(12, 4), torch.arange(12) % 2
    factory = DatasetFactory(train_set=TensorDataset(x[:8], y[:8]), validation_set=TensorDataset(x[8:], y[8:]), batch_size=4)
    config = {"n_epochs": len(values), "device": "cpu", "tensorboard_dir": None, "model_dir": str(tmp_path),
              "early_stopping_patience": patience}
    return MLProject(config, model=Scripted(values, metric, lower_is_better), dataset_factory=factory)


def test_early_stopping_stops_after_patience_evaluations_without_strict_improvement(tmp_path: Path) -> None:
    # Best 0.7 after epoch 2 (step 4); 0.7 again is no improvement: epochs 3, 4, 5 wait, 5 stops.
    project = scripted_project(tmp_path, [0.5, 0.7, 0.6, 0.7, 0.65, 0.9, 0.95], "accuracy", False, patience=3)
    assert project.train() == pytest.approx(0.7)
    assert project.epoch == 5
    assert project.state.stop_reason == "early stopping: validation.accuracy did not improve on 0.7 (step 4) for 3 evaluations"


def test_early_stopping_lower_is_better_counts_from_the_lowest(tmp_path: Path) -> None:
    # Lowest 0.8 after epoch 2 (step 4); were higher better, the best would be 1.0 and it would stop at epoch 4.
    project = scripted_project(tmp_path, [1.0, 0.8, 0.9, 0.8, 0.85, 0.1], "loss", True, patience=3)
    project.train()
    assert project.epoch == 5
    assert project.state.stop_reason == "early stopping: validation.loss did not improve on 0.8 (step 4) for 3 evaluations"


def test_early_stopping_off_by_default_trains_every_epoch(tmp_path: Path) -> None:
    project = scripted_project(tmp_path, [0.9, 0.1, 0.1, 0.1], "accuracy", False, patience=None)
    project.train()
    assert (project.epoch, project.state.stop_reason) == (4, "n_epochs")


@pytest.mark.parametrize("value", [0, -1, 1.5, "3"])
def test_early_stopping_patience_invalid_one_line_error(tmp_path: Path, value) -> None:
    with pytest.raises(MLProjError) as err:
        MLProject(digits_config(tmp_path, early_stopping_patience=value))
    assert str(err.value) == (f"config early_stopping_patience={value!r} is invalid: expected an integer >= 1 or None. "
                              "Run with early_stopping_patience=<value> to fix it.")


def test_importing_callback_loads_no_torch() -> None:
    # A main file subclasses Callback at its top; `./main.py print_config` must not pay for torch.
    code = "import sys; from mlproj import Callback, EarlyStopping; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"
