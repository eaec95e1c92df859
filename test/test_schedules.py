"""mlproj.train.schedules: LR schedules from config, their checks, and the lr the loop logs."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from test_project import RecordingSink, recorded_by, small_factory
from torch import nn

from mlproj.cli import main as mlproj
from mlproj.errors import MLProjError
from mlproj.train.loop import MLProject
from mlproj.train.model import ClassificationModel, check_model_config
from mlproj.train.schedules import LRSchedule, lr_factor


def factors(kind: str, total: int, **kwargs: int | float) -> list[float]:
    kwargs = {"warmup_steps": 0, "steps_per_epoch": 1, **kwargs}
    return [lr_factor(kind, step, total_steps=total, **kwargs) for step in range(total)]


def test_lr_factor_cosine_with_warmup_rises_linearly_then_falls_to_near_zero() -> None:
    curve = factors("cosine", 20, warmup_steps=4)
    assert curve[:5] == pytest.approx([1 / 5, 2 / 5, 3 / 5, 4 / 5, 1.0])
    assert all(a > b for a, b in itertools.pairwise(curve[4:]))  # falls at every step after the warmup
    assert curve[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 16)))  # ~0.01 at the last step


def test_lr_factor_step_multiplies_by_gamma_every_step_size_epochs() -> None:
    curve = factors("step", 12, steps_per_epoch=2, step_size=2, gamma=0.5)
    assert curve == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25]


@pytest.mark.parametrize("total", [10, 20])
def test_lr_factor_onecycle_follows_torchs_onecycle_lr(total: int) -> None:
    net = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    torchs = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, total_steps=total, cycle_momentum=False)
    expected = []
    for _ in range(total):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        torchs.step()
    assert factors("onecycle", total) == pytest.approx(expected)


def project(tmp_path: Path, run: RecordingSink | None = None, **config) -> MLProject:
    """A linear classifier built by `ClassificationModel.from_config` on 40 samples (8 batches of 5)."""

    class Scheduled(MLProject):
        @staticmethod
        def get_dataset_factory(config):
            return small_factory(batch_size=config["batch_size"])

        @staticmethod
        def get_model(config):
            return ClassificationModel.from_config(nn.Sequential(nn.Flatten(), nn.Linear(48, 2)), config)

    base = {"batch_size": 5, "tensorboard_dir": None, "model_dir": str(tmp_path), "device": "cpu", "seed": 0,
            "optimizer": "sgd", "lr": 0.1, "log_iteration_scalars": 1}
    return Scheduled({**base, **config}, context=recorded_by(run, {**base, **config}))


def logged_lr(run: RecordingSink) -> list[float]:
    return [value for _, value in run.scalars["lr"]]


def test_project_cosine_warmup_logged_lr_follows_the_schedule(tmp_path: Path) -> None:
    run = RecordingSink()
    project(tmp_path, run, scheduler="cosine", warmup_steps=3, n_global_iterations=12).train()
    assert [step for step, _ in run.scalars["lr"]] == list(range(1, 13))
    # Logged after each optimizer step: the lr the next step uses.
    expected = [0.1 * lr_factor("cosine", k, warmup_steps=3, total_steps=12, steps_per_epoch=8) for k in range(1, 13)]
    assert logged_lr(run) == pytest.approx(expected)
    assert logged_lr(run)[-1] == 0.0  # the schedule has reached 0 after the last step
    assert logged_lr(run)[:3] == pytest.approx([0.05, 0.075, 0.1])


def test_project_step_schedule_with_accumulation_changes_lr_per_epoch(tmp_path: Path) -> None:
    # 8 batches in groups of 3: optimizer steps of 3, 3 and 2 batches, 3 steps per epoch.
    run = RecordingSink()
    proj = project(tmp_path, run, scheduler="step", step_size=1, gamma=0.5, accumulate_grad_batches=3, n_epochs=2)
    proj.train()
    assert (proj.global_step, proj.epoch, proj.epoch_step) == (6, 2, 0)
    assert [step for step, _ in run.scalars["lr"]] == [1, 2, 3, 4, 5, 6]
    assert logged_lr(run) == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.05, 0.025])


def test_project_plateau_reduces_lr_after_patience_evaluations_without_improvement(tmp_path: Path) -> None:
    proj = project(tmp_path, scheduler="plateau", plateau_patience=0, gamma=0.5, lr=1e-6, n_epochs=3)
    proj.train()  # lr 1e-6: the test accuracy never improves after the first evaluation
    assert proj.model.optimizer.param_groups[0]["lr"] == pytest.approx(1e-6 * 0.25)


def test_project_warmup_longer_than_the_epochs_raises_before_the_first_step(tmp_path: Path) -> None:
    proj = project(tmp_path, scheduler="cosine", warmup_steps=16, n_epochs=2)  # 2 epochs of 8 steps
    with pytest.raises(MLProjError, match="^config warmup_steps=16 is invalid: the run has only 16 optimizer steps"):
        proj.train()
    assert proj.global_step == 0


def test_lr_schedule_without_run_length_refuses_to_step() -> None:
    net = nn.Linear(1, 1)
    schedule = LRSchedule(torch.optim.SGD(net.parameters(), lr=1.0), "cosine")
    with pytest.raises(MLProjError, match="set_run_length"):
        schedule.after_step()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"scheduler": "cosinus"}, "config scheduler='cosinus' is invalid: expected one of none, cosine, step, onecycle, plateau"),
        ({"step_size": 0}, "config step_size=0 is invalid: expected an integer >= 1"),
        ({"step_size": -2}, "config step_size=-2 is invalid: expected an integer >= 1"),
        ({"gamma": 0}, "config gamma=0 is invalid: expected a number > 0"),
        ({"gamma": -0.5}, "config gamma=-0.5 is invalid: expected a number > 0"),
        ({"warmup_steps": -1}, "config warmup_steps=-1 is invalid: expected an integer >= 0"),
        ({"warmup_steps": 10, "n_global_iterations": 10}, "config warmup_steps=10 is invalid: the run has only 10 optimizer steps"),
        ({"label_smoothing": 1.0}, r"config label_smoothing=1.0 is invalid: expected a number in \[0, 1\)"),
        ({"label_smoothing": -0.1}, r"config label_smoothing=-0.1 is invalid"),
    ],
)
def test_check_model_config_bad_value_one_line(config: dict, message: str) -> None:
    with pytest.raises(MLProjError, match=f"^{message}") as info:
        check_model_config(config)
    assert "\n" not in str(info.value) and str(info.value).endswith("to fix it.")


def test_from_config_label_smoothing_reaches_the_loss() -> None:
    model = ClassificationModel.from_config(nn.Linear(4, 2), {"label_smoothing": 0.2})
    assert model.loss.label_smoothing == 0.2
    assert model.schedulers == []  # scheduler=none without warmup: a constant lr


def test_sweep_schedule_keys_are_axes_bad_value_named_by_trial(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLPROJ_RUNS_DIR", str(tmp_path / "runs"))
    main = str(ROOT / "main.py")
    spec = ["with", "dataset=digits", "scheduler=[cosine,step]", "warmup_steps=[0,5]", "accumulate_grad_batches=2"]
    assert mlproj(["sweep", main, *spec, "--dry-run"]) == 0
    commands = capsys.readouterr().out.splitlines()
    assert [c.split(" with ", 1)[1] for c in commands] == [
        f"dataset=digits accumulate_grad_batches=2 scheduler={s} warmup_steps={w}" for s in ("cosine", "step") for w in (0, 5)]
    assert mlproj(["sweep", main, "with", "dataset=digits", "scheduler=[cosine,cosinus]", "--dry-run"]) == 1
    assert capsys.readouterr().err.strip() == (
        "mlproj sweep: error: trial 2 (scheduler=cosinus): config scheduler='cosinus' is invalid: expected one of "
        "none, cosine, step, onecycle, plateau. Run with scheduler=<value> to fix it.")
