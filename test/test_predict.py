"""Predictions: `./main.py predict`, `load_run(...).predict` / `.predict_files`, inputs prepared as in training."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image_folder, make_mnist, run_main
from PIL import Image

import mlproj
from mlproj.train.loop import MLProject
from mlproj.train.predict import load_for_prediction, prepare_image


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data folder, runs folder) of one image_folder run trained a few steps through main.py."""
    root = tmp_path_factory.mktemp("predict")
    data, runs = make_image_folder(root / "data"), root / "runs"
    result = run_main("with", "dataset=image_folder", f"data_dir={data}", "image_size=16", "batch_size=6",
                      "n_global_iterations=3", "model=lenet", "seed=1", runs=runs)
    assert result.returncode == 0, result.stderr
    return data, runs


@pytest.fixture(scope="module")
def mnist_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data folder, best.pt) of an MNIST-format run trained one step in-process."""
    root = tmp_path_factory.mktemp("mnist")
    data = make_mnist(root / "data")
    project = MLProject({"dataset": "mnist", "model": "lenet", "data_dir": str(data), "download": False, "device": "cpu",
                         "n_global_iterations": 1, "tensorboard_dir": None, "model_dir": str(root / "models"), "seed": 0})
    project.train()
    return data, Path(project.checkpoint_dir) / "best.pt"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_main_predict_folder_writes_class_names_beside_the_checkpoint(trained: tuple[Path, Path]) -> None:
    data, runs = trained
    result = run_main("predict", "with", f"checkpoint={runs}/1/best.pt", f"input={data}/val", runs=runs)
    assert result.returncode == 0, result.stderr
    assert f"wrote 18 predictions to {runs}/1/predictions.csv" in result.stdout.splitlines()
    rows = read_csv(runs / "1" / "predictions.csv")
    assert list(rows[0]) == ["path", "label", "probability", "label_2", "probability_2", "label_3", "probability_3"]
    assert [row["path"] for row in rows] == sorted(str(p) for p in (data / "val").rglob("*.*"))
    for row in rows:
        assert {row["label"], row["label_2"], row["label_3"]} == {"cat", "dog", "owl"}
        p = [float(row[k]) for k in ("probability", "probability_2", "probability_3")]
        assert p == sorted(p, reverse=True) and sum(p) == pytest.approx(1, abs=1e-5)
    assert sorted(p.name for p in runs.iterdir() if p.name.isdigit()) == ["1"]  # predicting records no run


def test_main_predict_output_and_top_k_shape_the_csv(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, runs = trained
    out = tmp_path / "out.csv"
    image = next((data / "val" / "dog").iterdir())
    result = run_main("predict", "with", f"checkpoint={runs}/1", f"input={image}", f"output={out}", "top_k=2", runs=runs)
    assert result.returncode == 0, result.stderr
    (row,) = read_csv(out)
    assert list(row) == ["path", "label", "probability", "label_2", "probability_2"] and row["path"] == str(image)


def test_checkpoint_records_class_names_and_training_normalization(trained: tuple[Path, Path]) -> None:
    _, runs = trained
    recorded = torch.load(runs / "1" / "best.pt", weights_only=True)["data"]
    project = mlproj.load_run(runs / "1", device="cpu")
    transform = project.dataset_factory.train_set().transform
    assert recorded == {"input_shape": [3, 16, 16], "num_classes": 3, "class_names": ["cat", "dog", "owl"],
                        "mean": list(transform.mean), "std": list(transform.std)}


def test_prepare_image_equals_the_image_folder_evaluation_sample(trained: tuple[Path, Path]) -> None:
    data, runs = trained
    project = mlproj.load_run(runs / "1", device="cpu")
    _, info = load_for_prediction(runs / "1" / "best.pt")
    validation = project.dataset_factory.validation_set()
    files = sorted((data / "val").rglob("*.*"))
    for i in (0, 1, 2, 3, 4):  # png, jpeg, palette, rgba, grayscale
        assert torch.allclose(prepare_image(str(files[i]), info), validation[i][0], atol=1e-6), files[i].name


def test_load_run_predict_files_equal_the_csv_rows(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, runs = trained
    out = tmp_path / "p.csv"
    assert run_main("predict", "with", f"checkpoint={runs}/1/best.pt", f"input={data}/val", f"output={out}",
                    runs=runs).returncode == 0
    rows = mlproj.load_run(runs / "1", device="cpu").predict_files(data / "val")
    assert [{k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()} for row in rows] == read_csv(out)


def test_load_run_predict_returns_probabilities_of_a_batch(trained: tuple[Path, Path]) -> None:
    _, runs = trained
    probabilities = mlproj.load_run(runs / "1", device="cpu").predict(torch.randn(5, 3, 16, 16))
    assert probabilities.shape == (5, 3) and torch.allclose(probabilities.sum(1), torch.ones(5))


def test_prepare_image_mnist_png_equals_the_training_sample(mnist_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    from mlproj.data import create_dataset_factory

    data, checkpoint = mnist_checkpoint
    factory = create_dataset_factory({"dataset": "mnist", "data_dir": str(data), "val_fraction": 0.0, "device": "cpu"})
    test = factory.test_set()
    Image.fromarray(test.images[0, 0].numpy()).save(tmp_path / "digit.png")
    _, info = load_for_prediction(checkpoint)
    assert torch.allclose(prepare_image(str(tmp_path / "digit.png"), info), test[0][0], atol=1e-6)


def test_main_predict_mnist_checkpoint_labels_a_digit_png(mnist_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    _, checkpoint = mnist_checkpoint
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(tmp_path / "blank.png")
    out = tmp_path / "p.csv"
    result = run_main("predict", "with", f"checkpoint={checkpoint}", f"input={tmp_path / 'blank.png'}", f"output={out}",
                      runs=tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    (row,) = read_csv(out)
    assert row["label"] in [str(d) for d in range(10)]


@pytest.mark.parametrize("case", ["empty folder", "unreadable file", "colour image"])
def test_main_predict_bad_input_is_one_line(case: str, trained: tuple[Path, Path], mnist_checkpoint: tuple[Path, Path],
                                            tmp_path: Path) -> None:
    _, runs = trained
    checkpoint = f"{runs}/1/best.pt"
    if case == "empty folder":
        (tmp_path / "none").mkdir()
        target = tmp_path / "none"
        expected = f"error: input {target} holds no images (extensions .jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp): "
    elif case == "unreadable file":
        target = tmp_path / "notes.png"
        target.write_text("not an image")
        expected = f"error: cannot read image {target} (cannot identify image file '{target}'): replace or delete the file."
    else:
        target = tmp_path / "red.png"
        Image.new("RGB", (28, 28), (255, 0, 0)).save(target)
        checkpoint = str(mnist_checkpoint[1])
        expected = f"error: {target} is a colour image, but this checkpoint was trained on grayscale images of 28x28"
    result = run_main("predict", "with", f"checkpoint={checkpoint}", f"input={target}", runs=runs)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(expected)
