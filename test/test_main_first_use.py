"""main.py and mlproj as a new user types them: at the root of a fresh copy of the project, without
an active venv, the runs in the default `./runs`, printed commands pasted as printed. A mistake is
one line and a non-zero exit, and leaves the runs dir as it was."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, copy_project, make_image_folder, read_json

TRAIN = ".venv/bin/python main.py with dataset=image_folder data_dir=photos model=mlp image_size=16 n_epochs=1"


def user_project(root: Path) -> Path:
    """A copy of the project at `root` with the checkout's `.venv`, as `make install` leaves a fresh clone."""
    project = copy_project(root)
    (project / ".venv").symlink_to(ROOT / ".venv")
    return project


def typed(project: Path, line: str) -> subprocess.CompletedProcess:
    """Run `line` as typed at the root of `project`: no active venv, no MLPROJ_RUNS_DIR."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLPROJ_RUNS_DIR", "MONGODB_URI", "VIRTUAL_ENV")}
    return subprocess.run(shlex.split(line), cwd=project, env={**env, "PYTHONUNBUFFERED": "1"}, capture_output=True,
                          text=True, timeout=300)


def everything_under(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> content), and every folder (-> b"")."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"") for p in folder.rglob("*")}


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """stderr without the run's log lines ("INFO - mlproj - Started run with ID", "WARNING - mlproj - source not pinned")."""
    return [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(("INFO - ", "WARNING - "))]


def pasted(line: str) -> str:
    """The command a hint line quotes in backticks."""
    (command,) = re.findall(r"`([^`]+)`", line)
    return command


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """A project with photos/{train,test}: run 1 trained on them, run 2 tested its best.pt; (project, run 1's and run 2's output)."""
    project = user_project(tmp_path_factory.mktemp("first-use") / "project")
    make_image_folder(project / "photos", splits=("train", "test"))
    training = typed(project, TRAIN)
    assert training.returncode == 0, training.stderr
    testing = typed(project, ".venv/bin/python main.py test with checkpoint=runs/1/best.pt")
    assert testing.returncode == 0, testing.stderr
    return project, training, testing


# ------------------------------------------------------------------ test on data without a test split
def test_main_test_without_test_split_one_line_nothing_recorded_and_its_fixes_work(tmp_path: Path) -> None:
    project = user_project(tmp_path / "project")
    make_image_folder(project / "photos", splits=("train",))
    assert typed(project, TRAIN).returncode == 0
    before = everything_under(project / "runs")

    result = typed(project, ".venv/bin/python main.py test with checkpoint=runs/1/best.pt")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: dataset=image_folder has no test set in photos (no test/ folder), so the test command has nothing to "
        "evaluate: add test images as photos/test/<class>/, or see the validation metrics of the run that trained it "
        "with `.venv/bin/mlproj show runs/1`."
    ]
    assert everything_under(project / "runs") == before  # no FAILED run, no TensorBoard folder

    shown = typed(project, pasted(result.stderr))
    assert shown.returncode == 0, shown.stderr
    best = max(read_json(project / "runs" / "1" / "metrics.json")["validation.accuracy"]["values"])
    assert re.search(rf"validation\.accuracy\s+{best:.4g}", shown.stdout), shown.stdout

    make_image_folder(project / "photos", splits=("test",))  # the other fix, as the line says
    again = typed(project, ".venv/bin/python main.py test with checkpoint=runs/1/best.pt")
    assert again.returncode == 0, again.stderr
    record = read_json(project / "runs" / "2" / "run.json")
    assert record["command"] == "test" and record["status"] == "COMPLETED"
    assert set(record["result"]) == {"test.accuracy", "test.loss"}


# ------------------------------------------------------------------ one line, before the run where it can be
@pytest.mark.parametrize(("command", "line", "fixed"), [
    ("test", "error: the test command needs a checkpoint: .venv/bin/python main.py test with checkpoint=runs/<id>/best.pt",
     {"<id>": "1"}),
    ("predict with checkpoint=runs/1/best.pt",
     "error: the predict command needs a checkpoint and images: .venv/bin/python main.py predict with "
     "checkpoint=runs/<id>/best.pt input=<image file or folder>", {"<id>": "1", "<image file or folder>": "photos/test/cat"}),
])
def test_main_command_without_its_inputs_one_line_nothing_written_and_the_pasted_usage_runs(
    command: str, line: str, fixed: dict[str, str], trained: tuple[Path, subprocess.CompletedProcess, subprocess.CompletedProcess],
) -> None:
    project, _, _ = trained
    before = everything_under(project / "runs")
    result = typed(project, f".venv/bin/python main.py {command}")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [line]  # no "Running command", no "Failed after"
    assert everything_under(project / "runs") == before

    usage = line.split(": ", 2)[2]
    for placeholder, value in fixed.items():
        usage = usage.replace(placeholder, value)
    assert typed(project, usage).returncode == 0


def test_main_predict_missing_input_one_line_before_the_command_starts(
    trained: tuple[Path, subprocess.CompletedProcess, subprocess.CompletedProcess],
) -> None:
    project, _, _ = trained
    before = everything_under(project / "runs")
    result = typed(project, ".venv/bin/python main.py predict with checkpoint=runs/1/best.pt input=new_photos")
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["error: input new_photos does not exist: pass an image file or a folder of images."]
    assert everything_under(project / "runs") == before


def test_main_error_inside_a_command_is_one_line_without_sacreds_failed_line(
    trained: tuple[Path, subprocess.CompletedProcess, subprocess.CompletedProcess], tmp_path: Path,
) -> None:
    project, _, _ = trained
    (tmp_path / "notes.png").write_text("not an image")
    predicted = typed(project, f".venv/bin/python main.py predict with checkpoint=runs/1/best.pt input={tmp_path / 'notes.png'}")
    assert predicted.returncode == 1
    assert error_lines(predicted) == [f"error: cannot read image {tmp_path / 'notes.png'} (cannot identify image file "
                                      f"'{tmp_path / 'notes.png'}'): replace or delete the file."]


def test_main_test_checkpoint_that_does_not_fit_one_line_nothing_recorded(
    trained: tuple[Path, subprocess.CompletedProcess, subprocess.CompletedProcess], tmp_path: Path,
) -> None:
    project, _, _ = trained
    before = everything_under(project / "runs")
    # image_size=32 on the command line: an MLP whose first layer no longer fits the checkpoint's.
    tested = typed(project, f".venv/bin/python main.py test -F {tmp_path / 'runs'} with checkpoint=runs/1/best.pt image_size=32")
    assert tested.returncode == 1
    assert tested.stdout == ""  # no "Started run with ID"
    lines = error_lines(tested)  # Sacred's "ERROR - mlproj - Failed after 0:00:01!" would be a second one
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint runs/1/best.pt does not fit this model"), tested.stderr
    assert lines[0].endswith("resume or test with the config of the run that wrote it.")
    assert everything_under(tmp_path / "runs") == {} and everything_under(project / "runs") == before


# ------------------------------------------------------------------ what the runs look like
def test_main_result_line_is_the_recorded_result_at_float32_precision(
    trained: tuple[Path, subprocess.CompletedProcess, subprocess.CompletedProcess],
) -> None:
    project, training, testing = trained
    for run, output in (("1", training), ("2", testing)):
        (printed,) = re.findall(r"^INFO - mlproj - Result: (.*)$", output.stderr, re.MULTILINE)
        result = read_json(project / "runs" / run / "run.json")["result"]
        assert ast.literal_eval(printed) == result
        for value in result.values() if isinstance(result, dict) else [result]:
            assert repr(value) == str(np.float32(value))  # 0.8888889, not 0.8888888955116272
    accuracy = read_json(project / "runs" / "1" / "metrics.json")["validation.accuracy"]["values"]
    assert read_json(project / "runs" / "1" / "run.json")["result"] == max(accuracy)


def test_mlproj_runs_shows_the_test_runs_test_metric(
    trained: tuple[Path, subprocess.CompletedProcess, subprocess.CompletedProcess],
) -> None:
    project, _, _ = trained
    result = typed(project, ".venv/bin/mlproj runs")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    columns = re.split(r"(?<=best|last)\s+|\s{2,}", header.strip())
    assert columns[:5] == ["id", "validation.accuracy best", "validation.accuracy last", "test.accuracy best", "test.accuracy last"]
    tested = read_json(project / "runs" / "2" / "metrics.json")["test.accuracy"]["values"][0]
    row = next(row.split() for row in rows if row.split()[0] == "2")
    assert row[1:4] == [f"{tested:.4g}", f"{tested:.4g}", "COMPLETED"]


def test_mlproj_compare_plot_legend_leaves_out_unset_keys(
    trained: tuple[Path, subprocess.CompletedProcess, subprocess.CompletedProcess], tmp_path: Path,
) -> None:
    from PIL import Image

    project, _, _ = trained
    png = tmp_path / "curves.png"
    result = typed(project, f".venv/bin/mlproj compare 1 2 --plot {png} --metric validation.accuracy")
    assert result.returncode == 0, result.stderr
    configs = [read_json(project / "runs" / run / "config.json") for run in ("1", "2")]
    assert configs[0]["checkpoint"] is None and configs[1]["checkpoint"] == "runs/1/best.pt"  # a key that differs
    assert Image.open(png).text["Description"].splitlines() == [f"run 1, seed={configs[0]['seed']}"]


# ------------------------------------------------------------------ a download that fails
@pytest.mark.parametrize("datasets_folder", ["absent", "present"])
def test_main_mnist_download_failure_one_line_leaves_no_folder_it_made(datasets_folder: str, tmp_path: Path) -> None:
    project = user_project(tmp_path / "project")
    # No network: torchvision's MNIST mirrors point at a closed port.
    main = (project / "main.py").read_text().replace(
        "\nimport os\n", '\nimport os\n\nimport torchvision.datasets\n\ntorchvision.datasets.MNIST.mirrors = ["http://127.0.0.1:9/"]\n', 1)
    (project / "main.py").write_text(main)
    if datasets_folder == "present":
        (project / "datasets").mkdir()
    result = typed(project, ".venv/bin/python main.py")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: MNIST not found under datasets/MNIST/raw and the download failed (RuntimeError): put the IDX files "
        "(uncompressed) there, or run with dataset=digits."
    ]
    assert everything_under(project / "datasets") == {}
    assert (project / "datasets").exists() == (datasets_folder == "present")
    assert not (project / "runs").exists()
    assert json.dumps(sorted(p.name for p in project.iterdir())) == json.dumps(
        sorted(["main.py", ".gitignore", "mlproj", ".venv", *(["datasets"] if datasets_folder == "present" else [])]))
