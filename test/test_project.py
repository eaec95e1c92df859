"""MLProject's loop: counters, intervals, hooks, evaluation and the original template's API."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sacred import Experiment
from torch import nn
from torch.utils.data import TensorDataset

from mlproj import DatasetFactory, MLProject, SimpleModel
from mlproj.train.context import RunContext, RunSink
from mlproj.train.model import ClassificationModel


def small_factory(n_train: int = 40, n_test: int = 10, batch_size: int = 5) -> DatasetFactory:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_test, 3, 4, 4, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    return DatasetFactory(
        train_set=TensorDataset(x[:n_train], y[:n_train]),
        test_set=TensorDataset(x[n_train:], y[n_train:]),
        batch_size=batch_size,
    )


class LinearModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class MyModel(SimpleModel):
    def __init__(self) -> None:
        model = LinearModel()
        super().__init__("test", model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())


class MyProject(MLProject):
    @staticmethod
    def get_dataset_factory(config):
        return small_factory(batch_size=config["batch_size"])

    @staticmethod
    def get_model(config):
        return MyModel()


def test_project_get_model_as_an_instance_method_sees_the_dataset_factory(tmp_path: Path) -> None:
    seen = []

    class SizedProject(MyProject):
        def get_model(self, config):  # a method of the project, not a staticmethod: it reads its data
            seen.append(len(self.dataset_factory.train_loader()))
            return MyModel()

    proj = SizedProject({"batch_size": 5, "tensorboard_dir": None, "model_dir": str(tmp_path), "device": "cpu", "n_epochs": 1})
    assert seen == [8]  # 40 training samples in batches of 5
    assert proj.train() is not None


def test_project_original_readme_example_runs_in_sacred(tmp_path: Path) -> None:
    n_global_iterations = 3
    ex = Experiment("original")
    ex.add_config({
        "batch_size": 5,
        "n_global_iterations": n_global_iterations,
        "tensorboard_dir": None,
        "device": "cpu",
        "model_dir": str(tmp_path / "models"),
    })
    seen = {}

    @ex.main
    def main(_run):
        proj = MyProject.from_run(_run)
        proj.train()
        proj.test()
        seen["global_step"], seen["epoch"] = proj.global_step, proj.epoch
        seen["checkpoints"] = sorted(p.name for p in (tmp_path / "models").rglob("*.pt"))

    ex.run()
    assert seen["global_step"] == n_global_iterations
    assert seen["epoch"] == 0  # 3 steps of an 8-step epoch
    assert seen["checkpoints"] == ["best.pt", "last.pt"]


def project(tmp_path: Path, sink: RunSink | None = None, **config) -> MLProject:
    base = {"batch_size": 5, "tensorboard_dir": None, "model_dir": str(tmp_path), "device": "cpu", "seed": 0}
    return MyProject({**base, **config}, context=recorded_by(sink, {**base, **config}))


def recorded_by(sink: RunSink | None, config: dict) -> RunContext | None:
    """A run recorded into `sink` that has no runs folder (None: no record)."""
    if sink is None:
        return None
    return RunContext.create(config, run_key="20260101-000000-abcdef12", run_dir=None, recording_root=None, sink=sink)


class RecordingSink(RunSink):
    """Keeps what the loop records: scalars, artifact names and info."""

    def __init__(self) -> None:
        self.info: dict = {}
        self.scalars: dict[str, list[tuple[int, float]]] = {}
        self.artifacts: list[str] = []

    def log_scalar(self, name: str, value: float, step: int) -> None:
        self.scalars.setdefault(name, []).append((step, value))

    def add_artifact(self, path: str, name: str) -> None:
        self.artifacts.append(name)

    def set_info(self, key: str, value: object) -> None:
        self.info[key] = value


def test_project_n_global_iterations_wins_over_n_epochs(tmp_path: Path) -> None:
    proj = project(tmp_path, n_epochs=5, n_global_iterations=11)
    proj.train()
    assert proj.global_step == 11
    assert proj.epoch == 1 and proj.epoch_step == 3


def test_project_n_epochs_counts_full_epochs(tmp_path: Path) -> None:
    proj = project(tmp_path, n_epochs=2)
    proj.train()
    assert (proj.epoch, proj.global_step, proj.epoch_step) == (2, 16, 0)


def test_project_log_iteration_scalars_sets_train_logging_steps(tmp_path: Path) -> None:
    run = RecordingSink()
    project(tmp_path, run, n_epochs=2, log_iteration_scalars=3).train()
    assert [step for step, _ in run.scalars["train.loss"]] == [3, 6, 9, 12, 15]
    assert [step for step, _ in run.scalars["test.accuracy"]] == [8, 16]  # no validation set: test
    assert [step for step, _ in run.scalars["lr"]] == [3, 6, 9, 12, 15]


def test_project_save_iterations_writes_last_mid_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = project(tmp_path, n_epochs=1, save_iterations=3)
    saved = []
    original = proj.save_checkpoint

    def recording_save(best: bool = False) -> str:
        saved.append((proj.global_step, best))
        return original(best)

    monkeypatch.setattr(proj, "save_checkpoint", recording_save)
    proj.train()
    assert saved == [(3, False), (6, False), (8, True)]


def test_project_log_iteration_all_writes_histograms_and_images(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proj = project(tmp_path, n_global_iterations=4, log_iteration_all=2, tensorboard_dir=str(tmp_path / "tb"))
    proj.train()
    proj.tracker.close()
    events = EventAccumulator(proj.tracker.tensorboard_dir, size_guidance={"histograms": 0, "images": 0})
    events.Reload()
    assert any(tag.startswith("weights/") for tag in events.Tags()["histograms"])
    assert [e.step for e in events.Images("train/inputs")] == [2, 4]


def test_tracker_histograms_binned_on_device_hold_each_parameters_count_and_range(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mlproj.train.tracker import Tracker

    net = torch.nn.Linear(3, 2)
    tracker = Tracker(None, str(tmp_path / "tb"))
    tracker.log_histograms(net, 5)
    tracker.close()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"histograms": 0})
    events.Reload()
    weight = events.Histograms("weights/weight")[0]
    assert weight.step == 5
    assert weight.histogram_value.num == 6 and sum(weight.histogram_value.bucket) == 6
    assert weight.histogram_value.min == pytest.approx(float(net.weight.detach().min()))
    assert weight.histogram_value.max == pytest.approx(float(net.weight.detach().max()))
    assert weight.histogram_value.sum_squares == pytest.approx(float(net.weight.detach().square().sum()))


def test_project_train_closes_its_tensorboard_writer_and_a_later_write_opens_one(tmp_path: Path) -> None:
    import threading

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def writer_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if "tensorboard" in type(t).__module__]

    before = len(writer_threads())
    proj = project(tmp_path, n_global_iterations=2, tensorboard_dir=str(tmp_path / "tb"))
    proj.train()
    assert proj.tracker.writer is None and len(writer_threads()) == before  # nothing left open or idle
    proj.log_metrics({"extra": 2.5})  # a write after training (a notebook's) goes to a new event file
    proj.tracker.close()
    events = EventAccumulator(proj.tracker.tensorboard_dir)
    events.Reload()
    assert [e.value for e in events.Scalars("extra")] == [2.5]
    assert [e.step for e in events.Scalars("test/accuracy")] == [2]  # the first file, written at the end of train()


def test_project_train_ended_by_an_error_still_closes_its_tensorboard_writer(tmp_path: Path) -> None:
    from mlproj import Callback
    from mlproj.errors import MLProjError

    class Broken(Callback):
        def on_epoch_end(self, project, metrics):
            raise RuntimeError("a bug in a callback")

    proj = MyProject({"batch_size": 5, "tensorboard_dir": str(tmp_path / "tb"), "model_dir": str(tmp_path),
                      "device": "cpu", "n_epochs": 2}, callbacks=[Broken()])
    with pytest.raises(MLProjError, match="callback Broken.on_epoch_end failed: RuntimeError: a bug in a callback"):
        proj.train()
    assert proj.tracker.writer is None  # the events logged before the error are on disk


def test_project_train_ended_by_an_error_has_written_and_recorded_the_epoch_checkpoint(tmp_path: Path) -> None:
    from mlproj import Callback
    from mlproj.errors import MLProjError
    from mlproj.train.checkpoint import load_checkpoint

    class Broken(Callback):
        def on_train_batch_end(self, project, metrics):
            if project.epoch == 1:
                raise RuntimeError("a bug in the second epoch")

    run = RecordingSink()
    proj = MyProject({"batch_size": 5, "tensorboard_dir": None, "model_dir": str(tmp_path), "device": "cpu", "n_epochs": 2},
                     context=recorded_by(run, {"model_dir": str(tmp_path)}), callbacks=[Broken()])
    with pytest.raises(MLProjError, match="a bug in the second epoch"):
        proj.train()
    assert load_checkpoint(proj.checkpoint_dir)["state"]["global_step"] == 8  # the first epoch's, written behind
    assert run.artifacts == ["last.pt", "best.pt"]


def test_project_sigterm_while_the_final_checkpoint_is_written_still_completes_that_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal
    import time

    from mlproj.train import checkpoint
    from mlproj.train.checkpoint import load_checkpoint

    proj = MyProject({"batch_size": 5, "tensorboard_dir": None, "model_dir": str(tmp_path), "device": "cpu", "n_epochs": 2})
    real_save = checkpoint.atomic_save

    def signalled_save(obj, path):
        if obj["state"]["global_step"] == 16:  # the final epoch-end write, waited for as training ends
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + 5
            while proj.state.stop_reason is None and time.monotonic() < deadline:
                time.sleep(0.01)
        real_save(obj, path)

    def outside(signum, frame):  # stands for the default handler, which would end the process here
        raise RuntimeError("SIGTERM reached the handler outside training")

    monkeypatch.setattr(checkpoint, "atomic_save", signalled_save)
    before = signal.signal(signal.SIGTERM, outside)
    try:
        proj.train()  # training was over: the stop it asks for has nothing left to stop
    finally:
        signal.signal(signal.SIGTERM, before)
    assert proj.state.stop_reason == "SIGTERM"
    assert load_checkpoint(os.path.join(proj.checkpoint_dir, "last.pt"))["state"]["global_step"] == 16


class HookModel(ClassificationModel):
    def __init__(self, calls: list) -> None:
        net = LinearModel()
        super().__init__(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss())
        self.calls = calls

    def on_train_begin(self) -> None:
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch: int) -> None:
        self.calls.append(f"epoch_begin {epoch}")

    def on_epoch_end(self, epoch: int, metrics=None) -> None:
        self.calls.append(f"epoch_end {epoch} {sorted(metrics)}")

    def on_train_end(self) -> None:
        self.calls.append("train_end")


def test_project_hooks_called_in_order_with_metrics(tmp_path: Path) -> None:
    calls: list = []
    proj = MLProject({"n_epochs": 2, "tensorboard_dir": None, "model_dir": str(tmp_path), "device": "cpu"},
                     model=HookModel(calls), dataset_factory=small_factory())
    proj.train()
    assert calls == [
        "train_begin",
        "epoch_begin 0", "epoch_end 0 ['test.accuracy', 'test.loss']",
        "epoch_begin 1", "epoch_end 1 ['test.accuracy', 'test.loss']",
        "train_end",
    ]


class EpochStepped(ClassificationModel):
    """SGD at lr 0.1 halved each epoch by a StepLR; its `on_epoch_end` overridden without `super()`."""

    def __init__(self, steps_its_own: bool = False) -> None:
        net = LinearModel()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        super().__init__(net, optimizer, nn.CrossEntropyLoss(), torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5))
        self.steps_its_own, self.epochs = steps_its_own, []

    def on_epoch_end(self, epoch: int, metrics=None) -> None:
        self.epochs.append(epoch)
        if self.steps_its_own:
            self.schedulers[0].step()


@pytest.mark.parametrize("steps_its_own", [False, True])
def test_project_on_epoch_end_overridden_without_super_lr_still_steps_once_per_epoch(tmp_path: Path,
                                                                                     steps_its_own: bool) -> None:
    model = EpochStepped(steps_its_own)
    MLProject({"n_epochs": 2, "tensorboard_dir": None, "model_dir": str(tmp_path), "device": "cpu"},
              model=model, dataset_factory=small_factory()).train()
    assert model.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 2)


def test_project_model_hook_epoch_and_callbacks_project_epoch_agree(tmp_path: Path) -> None:
    from mlproj import Callback

    seen = []

    class Epochs(Callback):
        def on_epoch_end(self, project, metrics):
            seen.append(project.epoch)

    model = EpochStepped()
    MLProject({"n_epochs": 3, "tensorboard_dir": None, "model_dir": str(tmp_path), "device": "cpu"},
              model=model, dataset_factory=small_factory(), callbacks=[Epochs()]).train()
    assert seen == [epoch + 1 for epoch in model.epochs] == [1, 2, 3]


def test_project_best_checkpoint_follows_benchmark_metric(tmp_path: Path) -> None:
    run = RecordingSink()
    proj = project(tmp_path, run, n_epochs=3)
    best = proj.train()
    accuracies = [v for _, v in run.scalars["test.accuracy"]]
    assert best == max(accuracies)
    assert proj.state.best_step == 8 * (accuracies.index(max(accuracies)) + 1)
    assert run.artifacts.count("best.pt") >= 1 and run.artifacts.count("last.pt") == 3
    stored = torch.load(Path(proj.checkpoint_dir) / "best.pt", weights_only=True)
    assert stored["state"]["best_score"] == best


def test_project_empty_training_set_clear_error(tmp_path: Path) -> None:
    from mlproj.errors import MLProjError

    empty = DatasetFactory(train_set=TensorDataset(torch.zeros(0, 3, 4, 4), torch.zeros(0).long()), batch_size=2)
    proj = MLProject({"n_epochs": 1, "tensorboard_dir": None, "model_dir": str(tmp_path), "device": "cpu"},
                     model=MyModel(), dataset_factory=empty)
    with pytest.raises(MLProjError, match="training set is empty"):
        proj.train()
