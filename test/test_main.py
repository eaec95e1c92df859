"""main.py end to end, as a subprocess: what a user types and what ends up in the run folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_cifar, make_mnist, read_json, run_main


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    runs = tmp_path_factory.mktemp("digits") / "runs"
    result = run_main("with", "dataset=digits", "n_epochs=2", "seed=1", runs=runs)
    assert result.returncode == 0, result.stderr
    return runs, runs / "1"


def test_main_digits_run_completed_with_metrics_and_checkpoints(digits_run: tuple[Path, Path]) -> None:
    _, run = digits_run
    record = read_json(run / "run.json")
    assert record["status"] == "COMPLETED"
    assert sorted(record["artifacts"]) == ["best.pt", "last.pt"]
    metrics = read_json(run / "metrics.json")
    for name in ("train.loss", "train.accuracy", "validation.loss", "validation.accuracy", "lr"):
        assert metrics[name]["values"], name
    assert len(metrics["validation.accuracy"]["values"]) == 2  # one evaluation per epoch
    assert record["result"] == pytest.approx(max(metrics["validation.accuracy"]["values"]))
    assert read_json(run / "config.json")["dataset"] == "digits"
    assert "run_key" in read_json(run / "info.json")


def test_main_digits_run_records_sources_and_stdout(digits_run: tuple[Path, Path]) -> None:
    _, run = digits_run
    record = read_json(run / "run.json")
    sources = [path for path, _ in record["experiment"]["sources"]]
    assert "main.py" in sources and any(s.startswith("mlproj/") for s in sources)
    cout = (run / "cout.txt").read_bytes().decode()  # read_text would turn a "\r" into "\n"
    assert "epoch 2 step" in cout
    assert "\r" not in cout  # progress-bar redraws are collapsed, not stored


def test_main_tensorboard_events_readable(digits_run: tuple[Path, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs, _ = digits_run
    (run_tb,) = (runs / "tensorboard").iterdir()
    assert run_tb.name.startswith("1_mlproj_")
    events = EventAccumulator(str(run_tb))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "validation/accuracy", "lr"} <= set(tags)
    assert len(events.Scalars("validation/accuracy")) == 2


def test_main_best_checkpoint_loads_weights_only(digits_run: tuple[Path, Path]) -> None:
    _, run = digits_run
    checkpoint = torch.load(run / "best.pt", weights_only=True)
    assert checkpoint["state"]["epoch"] >= 1
    assert checkpoint["config"]["dataset"] == "digits"
    assert any(key.startswith("net.") for key in checkpoint["model"])


def test_main_test_command_reproduces_recorded_metric(digits_run: tuple[Path, Path], tmp_path: Path) -> None:
    runs, run = digits_run
    best = torch.load(run / "best.pt", weights_only=True)
    result = run_main("test", "with", f"checkpoint={run / 'best.pt'}", "val_fraction=0.1", runs=runs)
    assert result.returncode == 0, result.stderr
    test_run = max((p for p in runs.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    record, logged = read_json(test_run / "run.json"), read_json(test_run / "metrics.json")
    assert record["status"] == "COMPLETED"

    # best.pt evaluated again here: on the test set it gives what the test command logged and returned,
    # on the validation split the value recorded when training chose it.
    from mlproj.train.loop import MLProject

    project = MLProject({**best["config"], "tensorboard_dir": None, "model_dir": str(tmp_path)})
    project.load_checkpoint(str(run / "best.pt"))
    expected = project.evaluate("test")
    for name in ("test.accuracy", "test.loss"):
        assert logged[name]["values"] == [pytest.approx(expected[name], abs=1e-6)], name
        assert record["result"][name] == pytest.approx(expected[name], abs=1e-6), name
    recorded = read_json(run / "metrics.json")["validation.accuracy"]
    at_best = recorded["values"][recorded["steps"].index(best["state"]["best_step"])]
    assert project.evaluate("validation")["validation.accuracy"] == pytest.approx(at_best, abs=1e-6)


def test_main_n_global_iterations_wins_over_n_epochs(runs_dir: Path) -> None:
    result = run_main("with", "dataset=digits", "n_epochs=5", "n_global_iterations=7", "log_iteration_scalars=1", runs=runs_dir)
    assert result.returncode == 0, result.stderr
    metrics = read_json(runs_dir / "1" / "metrics.json")
    assert metrics["train.loss"]["steps"] == list(range(1, 8))
    checkpoint = torch.load(runs_dir / "1" / "last.pt", weights_only=True)
    assert checkpoint["state"]["global_step"] == 7


@pytest.mark.parametrize(
    ("dataset", "make"),
    [
        ("mnist", lambda root: make_mnist(root, "MNIST")),
        ("fashion_mnist", lambda root: make_mnist(root, "FashionMNIST")),
        ("cifar10", lambda root: make_cifar(root, "cifar10")),
        ("cifar100", lambda root: make_cifar(root, "cifar100")),
    ],
)
def test_main_trains_from_files_in_real_format(dataset: str, make, tmp_path: Path, runs_dir: Path) -> None:
    data = make(tmp_path / "data")
    args = ["with", f"dataset={dataset}", f"data_dir={data}", "download=False", "n_epochs=1", "batch_size=16"]
    if dataset.startswith("cifar"):
        args += ["verify_checksums=False", "model=mlp"]
    result = run_main(*args, runs=runs_dir)
    assert result.returncode == 0, result.stderr
    assert read_json(runs_dir / "1" / "run.json")["status"] == "COMPLETED"
    assert read_json(runs_dir / "1" / "metrics.json")["validation.accuracy"]["values"]


RECIPE_WITHOUT_BATCH_SIZE = '''
import torch
from torch.utils.data import TensorDataset

from mlproj import DatasetFactory, MLProject, register_dataset
from mlproj.record.experiment import create_experiment


@register_dataset("blobs", input_shape=(1, 4, 4), num_classes=2)
def blobs(config):
    x = torch.randn(200, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = (x.sum(dim=(1, 2, 3)) > 0).long()
    return DatasetFactory(train_set=TensorDataset(x[:150], y[:150]), test_set=TensorDataset(x[150:], y[150:]),
                          batch_size=config["batch_size"])


ex = create_experiment("recipe")


@ex.config
def config():
    dataset = "blobs"
    model = "mlp"
    n_epochs = 1


@ex.main
def train(_run):
    return MLProject.from_run(_run).train()


if __name__ == "__main__":
    ex.run_commandline()
'''


def test_create_experiment_recipe_without_batch_size_runs_with_the_default(tmp_path: Path) -> None:
    script = tmp_path / "recipe.py"
    script.write_text(RECIPE_WITHOUT_BATCH_SIZE)
    runs = tmp_path / "runs"
    result = run_main("with", "git_pin=False", "device=cpu", runs=runs, cwd=tmp_path, main=script)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Training mlp on blobs (cpu) for 1 epoch; checkpoints in" in result.stdout  # "1 epoch", not "1 epochs"
    assert read_json(runs / "1" / "run.json")["status"] == "COMPLETED"
    assert read_json(runs / "1" / "config.json")["batch_size"] == 64


# A user's own project: its network and optimizer named by its own config values, an extra key
# (`width`) only its code reads, its own data. The main file names the class `Project`.
OWN_PROJECT = '''
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mlproj import ClassificationModel, DatasetFactory, MLProject
from mlproj.record.experiment import create_experiment

ex = create_experiment("own_project")


@ex.config
def config():
    model = "tiny_cnn"
    optimizer = "adamw"
    width = 4
    lr = 0.01
    n_epochs = 1


class Project(MLProject):
    @staticmethod
    def get_dataset_factory(config):
        x = torch.randn(96, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        y = (x.sum(dim=(1, 2, 3)) > 0).long()
        return DatasetFactory(train_set=TensorDataset(x[:64], y[:64]), validation_set=TensorDataset(x[64:], y[64:]),
                              batch_size=config["batch_size"])

    @staticmethod  # OWN_MODEL
    def get_model(config):  # OWN_MODEL
        nets = {"tiny_cnn": lambda w: nn.Sequential(nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.Flatten(),  # OWN_MODEL
                                                    nn.Linear(w * 16, 2))}  # OWN_MODEL
        net = nets[config["model"]](config["width"])  # OWN_MODEL
        optimizers = {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}  # OWN_MODEL
        optimizer = optimizers[config["optimizer"]](net.parameters(), lr=config["lr"])  # OWN_MODEL
        return ClassificationModel(net, optimizer, nn.CrossEntropyLoss())  # OWN_MODEL


@ex.main
def train(_run):
    return Project.from_run(_run).train()


if __name__ == "__main__":
    ex.run_commandline()
'''


def test_main_own_project_own_model_optimizer_and_keys_completes(tmp_path: Path) -> None:
    script = tmp_path / "own.py"
    script.write_text(OWN_PROJECT)
    runs = tmp_path / "runs"
    result = run_main("with", "model=tiny_cnn", "optimizer=adamw", "width=8", "git_pin=False", "device=cpu",
                      runs=runs, cwd=tmp_path, main=script)
    assert result.returncode == 0, result.stderr
    assert read_json(runs / "1" / "run.json")["status"] == "COMPLETED"
    config = read_json(runs / "1" / "config.json")
    assert (config["model"], config["optimizer"], config["width"]) == ("tiny_cnn", "adamw", 8)
    assert read_json(runs / "1" / "metrics.json")["validation.accuracy"]["values"]


def test_main_own_project_named_otherwise_without_project_line_is_checked_with_it(tmp_path: Path) -> None:
    script = tmp_path / "own.py"
    # As the original template's users write it: their own class name, no `Project = ...` line.
    script.write_text(OWN_PROJECT.replace("Project(MLProject)", "MyProject(MLProject)")
                      .replace("Project.from_run", "MyProject.from_run"))
    assert "Project =" not in script.read_text() and "class MyProject(MLProject)" in script.read_text()
    runs = tmp_path / "runs"
    result = run_main("with", "model=tiny_cnn", "git_pin=False", "device=cpu", runs=runs, cwd=tmp_path, main=script)
    assert result.returncode == 0, result.stderr
    assert read_json(runs / "1" / "run.json")["status"] == "COMPLETED"


def test_main_several_project_subclasses_without_project_line_names_them_nothing_written(tmp_path: Path) -> None:
    script = tmp_path / "own.py"
    script.write_text(OWN_PROJECT.replace("Project(MLProject)", "MyProject(MLProject)")
                      .replace("Project.from_run", "MyProject.from_run")
                      .replace("@ex.main", "class OtherProject(MyProject):\n    pass\n\n\n@ex.main"))
    runs = tmp_path / "runs"
    result = run_main("with", "model=tiny_cnn", "git_pin=False", "device=cpu", runs=runs, cwd=tmp_path, main=script)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {script} holds several MLProject subclasses (MyProject, OtherProject): name the one it trains with "
        "a module-level line such as `Project = OtherProject`."
    ]
    assert not runs.exists()


def test_main_own_project_with_builtin_get_model_unknown_model_one_line_nothing_written(tmp_path: Path) -> None:
    script = tmp_path / "own.py"
    # The same project without its own get_model: the built-in one refuses the unknown names up front.
    script.write_text("\n".join(line for line in OWN_PROJECT.splitlines() if "# OWN_MODEL" not in line))
    runs = tmp_path / "runs"
    result = run_main("with", "model=tiny_cnn", "git_pin=False", "device=cpu", runs=runs, cwd=tmp_path, main=script)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: config model='tiny_cnn' is invalid: expected one of lenet, mlp, resnet18, or torchvision.<builder> "
        "(`mlproj models` lists them); for a network of your own, override get_model in your MLProject subclass. "
        "Run with model=<value> to fix it."
    ]
    assert not runs.exists()


def test_main_own_project_sweep_trials_keep_own_values(tmp_path: Path, runs_dir: Path, capsys) -> None:
    from mlproj.cli import main as mlproj

    script = tmp_path / "own.py"
    script.write_text(OWN_PROJECT)
    # The sweep checks each trial's config up front as the trial's run will: with the Project's own get_model.
    assert mlproj(["sweep", str(script), "with", "optimizer=[adamw,sgd]", "width=8", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "optimizer=adamw" in lines[0] and "optimizer=sgd" in lines[1], lines
