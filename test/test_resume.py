"""Resuming: a run stopped and resumed ends bit-identical to one that never stopped (CPU, deterministic).

The in-process tests drive `MLProject` directly on digits; the SIGINT test runs main.py as a user would.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ROOT, run_main
from torch import nn

from mlproj.errors import MLProjError
from mlproj.train.loop import MLProject
from mlproj.train.model import ClassificationModel


class DropoutProject(MLProject):
    """A net with dropout, so training draws from torch's global RNG at every step: resuming is
    exact only if that RNG's state is saved and restored at exactly the saved step."""

    @staticmethod
    def get_model(config: dict[str, Any]) -> ClassificationModel:
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10))
        return ClassificationModel(net, torch.optim.Adam(net.parameters(), lr=1e-2), nn.CrossEntropyLoss())


class KeepEverySave(DropoutProject):
    """Also keeps a copy of each last.pt it writes (`step<N>.pt`), to resume from any save point."""

    def save_checkpoint(self, best: bool = False) -> str:
        path = super().save_checkpoint(best)
        shutil.copyfile(path, os.path.join(self.checkpoint_dir, f"step{self.state.global_step}.pt"))
        return path


def digits_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "dataset": "digits", "model": "lenet", "batch_size": 64, "lr": 1e-3, "val_fraction": 0.1,
        "seed": 3, "deterministic": True, "device": "cpu", "n_epochs": 2, "tensorboard_dir": None,
        "model_dir": str(tmp_path / "checkpoints"), **overrides,
    }


def assert_same_training_state(a: MLProject, b: MLProject) -> None:
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(x, y), f"weights {name} differ"
    state_a, state_b = a.model.optimizers[0].state_dict()["state"], b.model.optimizers[0].state_dict()["state"]
    for key in state_a:
        for field in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state_a[key][field], state_b[key][field]), f"optimizer {key}.{field} differs"
    assert (a.state.epoch, a.state.global_step, a.state.best_score) == (b.state.epoch, b.state.global_step, b.state.best_score)


def test_resume_at_epoch_end_is_bit_identical(tmp_path: Path) -> None:
    straight = MLProject(digits_config(tmp_path))
    straight.train()

    first = MLProject(digits_config(tmp_path, n_epochs=1))
    first.train()
    resumed = MLProject(digits_config(tmp_path, resume=first.checkpoint_dir))
    assert resumed.state.epoch == 1 and resumed.state.epoch_step == 0
    resumed.train()

    assert_same_training_state(straight, resumed)


def test_resume_mid_epoch_at_save_point_is_bit_identical(tmp_path: Path) -> None:
    straight = KeepEverySave(digits_config(tmp_path, save_iterations=5))
    straight.train()
    steps_per_epoch = len(straight.dataset_factory.train_loader())
    assert 5 % steps_per_epoch != 0  # step 5 is inside the first epoch

    resumed = DropoutProject(digits_config(tmp_path, resume=os.path.join(straight.checkpoint_dir, "step5.pt")))
    assert (resumed.state.epoch, resumed.state.epoch_step, resumed.state.global_step) == (0, 5, 5)
    resumed.train()

    assert_same_training_state(straight, resumed)


class ScheduledProject(MLProject):
    """Dropout net trained as `ClassificationModel.from_config` reads the config (its LR schedule)."""

    @staticmethod
    def get_model(config: dict[str, Any]) -> ClassificationModel:
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10))
        return ClassificationModel.from_config(net, config)


class KeepEveryScheduledSave(ScheduledProject):
    def save_checkpoint(self, best: bool = False) -> str:
        path = super().save_checkpoint(best)
        shutil.copyfile(path, os.path.join(self.checkpoint_dir, f"step{self.state.global_step}.pt"))
        return path


def test_resume_mid_epoch_scheduled_accumulated_run_is_bit_identical(tmp_path: Path) -> None:
    # digits: 1294 samples, 26 batches of 50 an epoch, in groups of 3: 8 full groups and one of 2, 9 steps.
    config = dict(scheduler="cosine", warmup_steps=4, accumulate_grad_batches=3, save_iterations=5, lr=1e-2,
                  batch_size=50)
    straight = KeepEveryScheduledSave(digits_config(tmp_path, **config))
    straight.train()
    assert (straight.state.global_step, len(straight.dataset_factory.train_loader())) == (18, 26)

    resumed = ScheduledProject(digits_config(tmp_path, **config, resume=os.path.join(straight.checkpoint_dir, "step5.pt")))
    assert (resumed.state.epoch, resumed.state.epoch_step, resumed.state.global_step) == (0, 15, 5)
    resumed.train()

    assert_same_training_state(straight, resumed)
    (schedule,), (other,) = straight.model.schedulers, resumed.model.schedulers
    assert schedule.state_dict() == other.state_dict()
    assert resumed.model.optimizer.param_groups[0]["lr"] == straight.model.optimizer.param_groups[0]["lr"] < 1e-4


def test_resume_mid_epoch_continues_the_epochs_data_order(tmp_path: Path) -> None:
    project = MLProject(digits_config(tmp_path))
    loader = project.dataset_factory.train_loader()
    project.dataset_factory.set_epoch(1)
    whole = torch.cat([inputs for inputs, _ in loader])
    project.dataset_factory.set_epoch(1, start_batch=3)
    rest = torch.cat([inputs for inputs, _ in loader])
    assert torch.equal(whole[3 * 64 :], rest)
    project.dataset_factory.set_epoch(2)
    assert not torch.equal(torch.cat([inputs for inputs, _ in loader]), whole)  # each epoch its own order


def test_resume_unknown_target_raises(tmp_path: Path) -> None:
    with pytest.raises(MLProjError, match="names no checkpoint"):
        MLProject(digits_config(tmp_path, resume=str(tmp_path / "nowhere")))


def test_main_sigint_writes_last_then_the_printed_resume_line_is_bit_identical(tmp_path: Path) -> None:
    # The user's layout: `./runs` in the folder main.py is started from, and the printed line pasted as is.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("MLPROJ_RUNS_DIR", "MONGODB_URI"):
        env.pop(name, None)
    runs = tmp_path / "runs"
    common = ["dataset=digits", "seed=3", "deterministic=True", "device=cpu", "model=mlp", "git_pin=False", "tensorboard_dir=None"]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "with", *common, "n_epochs=1000"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not (runs / "1" / "last.pt").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)  # interrupt once training is under way (epoch 1 written)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out + err
    (printed,) = re.findall(r"SIGINT: saved runs/1/last.pt; continue with `([^`]+)`", out)
    assert shlex.split(printed) == [sys.executable, str(ROOT / "main.py"), "with", "resume=runs/1"]  # as it was started
    assert json.loads((runs / "1" / "run.json").read_text())["status"] == "INTERRUPTED"
    stopped = torch.load(runs / "1" / "last.pt", weights_only=True)["state"]
    assert stopped["global_step"] > 0

    n_epochs = stopped["epoch"] + 1
    result = subprocess.run(  # the printed line pasted as it is, in the folder it was started from
        [*shlex.split(printed), f"n_epochs={n_epochs}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((runs / "2" / "run.json").read_text())["status"] == "COMPLETED"
    resumed_from = json.loads((runs / "2" / "info.json").read_text())["resumed_from"]
    assert str(resumed_from["run_id"]) == "1" and resumed_from["global_step"] == stopped["global_step"]
    config = json.loads((runs / "2" / "config.json").read_text())
    assert {k: config[k] for k in ("dataset", "model", "seed", "n_epochs", "resume")} == {
        "dataset": "digits", "model": "mlp", "seed": 3, "n_epochs": n_epochs, "resume": "runs/1"}

    # The same config trained without a stop (in this process) ends with the same weights.
    straight = MLProject(digits_config(tmp_path, model="mlp", n_epochs=n_epochs))
    straight.train()
    resumed = torch.load(runs / "2" / "last.pt", weights_only=True)
    assert resumed["state"]["global_step"] == straight.state.global_step
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed["model"][name], value), f"weights {name} differ"


def _process_tree(pid: int) -> list[int]:
    """`pid` and every process below it, read from /proc (what SLURM's proctrack/linuxproc signals)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # "pid (comm) state ppid ..."
        except (OSError, IndexError, ValueError):
            continue  # a process that ended meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def test_main_sigterm_to_every_process_twice_as_scancel_and_a_sweep_send_it_is_the_orderly_stop(tmp_path: Path) -> None:
    # SLURM's scancel and time limit signal every process of the job (systemd's stop every process
    # of the unit), and `mlproj sweep --trial` then passes the stop on to its trial: the run gets
    # SIGTERM twice, and whatever process it started gets one too: the `tee` processes of Sacred's
    # "fd" capture ended first, and the stop was recorded FAILED (BrokenPipeError), unless they are
    # started with SIGTERM blocked; a second SIGTERM stopped at once, without saving the step reached.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("MLPROJ_RUNS_DIR", "MONGODB_URI"):
        env.pop(name, None)
    runs = tmp_path / "runs"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "with", "dataset=digits", "model=mlp", "device=cpu", "git_pin=False",
         "tensorboard_dir=None", "n_epochs=1000"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not (runs / "1" / "last.pt").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)  # once training is under way (epoch 1 written)
    for pid in _process_tree(process.pid):
        with contextlib.suppress(ProcessLookupError):  # a process that ended since the tree was read
            os.kill(pid, signal.SIGTERM)
    time.sleep(0.1)  # the sweep passes its own SIGTERM on a moment later (signals sent together count once)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out + err
    assert "SIGTERM: saved runs/1/last.pt; continue with `" in out, out + err
    assert json.loads((runs / "1" / "run.json").read_text())["status"] == "INTERRUPTED", err
    assert json.loads((runs / "1" / "info.json").read_text())["stop_reason"] == "SIGTERM"
    assert "SIGTERM: saved runs/1/last.pt" in (runs / "1" / "cout.txt").read_text()  # the record has the line too
    assert step_of(runs / "1") > 0


@pytest.fixture(scope="module")
def digits_mlp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-epoch digits/mlp run (not the experiment's default config) in `<folder>/runs/1`."""
    folder = tmp_path_factory.mktemp("trained")
    result = run_main("with", "dataset=digits", "model=mlp", "n_epochs=1", "device=cpu", runs=Path("runs"), cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "runs"


@pytest.fixture
def user_dir(digits_mlp_run: Path, tmp_path: Path) -> Path:
    """A folder to start main.py in, whose `./runs` holds a copy of `digits_mlp_run`."""
    shutil.copytree(digits_mlp_run, tmp_path / "runs")
    return tmp_path


def step_of(run_dir: Path) -> int:
    return torch.load(run_dir / "last.pt", weights_only=True)["state"]["global_step"]


def test_main_resume_by_folder_id_or_file_continues_the_recorded_config(user_dir: Path) -> None:
    runs = user_dir / "runs"
    steps = step_of(runs / "1")
    # resume= as a run folder (the form the program prints), a run id, and a checkpoint file.
    for n_epochs, target in ((2, "runs/1"), (3, "2"), (4, "runs/3/last.pt")):
        result = run_main("with", f"resume={target}", f"n_epochs={n_epochs}", runs=Path("runs"), cwd=user_dir)
        assert result.returncode == 0, result.stderr
        run = runs / str(n_epochs)
        assert f"Training mlp on digits (cpu) for {n_epochs} epochs, resuming at step {steps * (n_epochs - 1)}" in result.stdout
        config = json.loads((run / "config.json").read_text())
        assert (config["dataset"], config["model"], config["n_epochs"], config["device"]) == ("digits", "mlp", n_epochs, "cpu")
        assert step_of(run) == steps * n_epochs  # one more epoch on top of the resumed run's steps
        steps_logged = json.loads((run / "metrics.json").read_text())["validation.accuracy"]["steps"]
        assert steps_logged == [steps * n_epochs]


@pytest.mark.parametrize(("given", "recorded"), [("model=lenet", "model=mlp"), ("dataset=mnist", "dataset=digits"),
                                                 ("batch_size=32", "batch_size=64")])
def test_main_resume_with_another_model_or_data_refused_one_line_exit_1(user_dir: Path, given: str, recorded: str) -> None:
    result = run_main("with", "resume=runs/1", given, runs=Path("runs"), cwd=user_dir)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line == (f"error: resume=runs/1 continues a run of {recorded}, but this run is given {given}: drop {given} "
                    "to continue that run as recorded, or start a new run without resume.")
    assert sorted(p.name for p in (user_dir / "runs").iterdir() if p.name.isdigit()) == ["1"]


def test_main_test_command_records_the_evaluated_runs_config(user_dir: Path) -> None:
    result = run_main("test", "with", "checkpoint=runs/1/best.pt", runs=Path("runs"), cwd=user_dir)
    assert result.returncode == 0, result.stderr
    config = json.loads((user_dir / "runs" / "2" / "config.json").read_text())
    assert (config["dataset"], config["model"], config["checkpoint"], config["resume"]) == ("digits", "mlp", "runs/1/best.pt", None)
    listed = subprocess.run([sys.executable, "-m", "mlproj.cli", "runs", "--where", "model=mlp", "--status", "COMPLETED"],
                            cwd=user_dir, env={**os.environ, "MLPROJ_RUNS_DIR": "runs"}, capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["1", "2"]


def test_resume_command_is_this_interpreter_and_script_as_started(tmp_path: Path, monkeypatch) -> None:
    from mlproj.record.experiment import _resume_command

    (tmp_path / "main.py").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "executable", str(tmp_path / ".venv" / "bin" / "python"))
    monkeypatch.setattr(sys, "argv", ["main.py", "with", "n_epochs=3"])
    assert _resume_command().format("runs/4") == "`.venv/bin/python main.py with resume=runs/4`"  # a fresh clone's layout
    monkeypatch.setattr(sys, "executable", "/opt/py/bin/python3")
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "main.py")])
    assert _resume_command().format("runs/4") == f"`/opt/py/bin/python3 {tmp_path / 'main.py'} with resume=runs/4`"
    monkeypatch.setattr(sys, "argv", ["-c"])  # a notebook's or `python -c`'s ex.run(): no script to name
    assert _resume_command() is None
