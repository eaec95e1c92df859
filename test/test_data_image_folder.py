"""dataset=image_folder: any image file in, RGB image_size x image_size tensors out, decoded once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_image_folder, run_main
from PIL import Image

from mlproj.data import create_dataset_factory, prepare_dataset
from mlproj.data.image_folder import load_image
from mlproj.errors import MLProjError


def config(data_dir: Path, **overrides) -> dict:
    return {"dataset": "image_folder", "data_dir": str(data_dir), "image_size": 16, "batch_size": 4, "device": "cpu",
            **overrides}


def test_image_folder_mixed_modes_and_formats_become_rgb_image_size_tensors(tmp_path: Path) -> None:
    factory = create_dataset_factory(config(make_image_folder(tmp_path / "data")))
    images, labels = next(iter(factory.validation_loader()))
    assert factory.class_names == ["cat", "dog", "owl"]
    assert factory.input_shape == (3, 16, 16) and factory.num_classes == 3
    assert len(factory.train_set()) == 18 and len(factory.validation_set()) == 18  # val/, nothing carved
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
    assert not factory.has_test_set()


def test_load_image_equals_torchvision_resize_and_center_crop(tmp_path: Path) -> None:
    from torchvision import transforms

    path = tmp_path / "wide.png"
    Image.fromarray(torch.randint(0, 256, (30, 50, 3), dtype=torch.uint8).numpy()).save(path)
    expected = transforms.Compose([transforms.Resize(16), transforms.CenterCrop(16), transforms.PILToTensor()])(
        Image.open(path).convert("RGB"))
    assert torch.equal(load_image(str(path), 16), expected)


def test_image_folder_without_val_carves_val_fraction_from_class_folders_in_data_dir(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", splits=("",), n_per_class=10)
    factory = create_dataset_factory(config(data, val_fraction=0.2))
    assert factory.class_names == ["cat", "dog", "owl"]  # the cache folder is no class
    assert len(factory.train_set()) == 24 and len(factory.validation_set()) == 6


def test_image_folder_training_images_are_normalized_by_their_own_statistics(tmp_path: Path) -> None:
    factory = create_dataset_factory(config(make_image_folder(tmp_path / "data"), augment=False))
    train = factory.train_set()
    normalized = train.transform(train.images)
    assert torch.allclose(normalized.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(normalized.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)


def test_image_folder_second_build_reads_no_image_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_image_folder(tmp_path / "data")
    first = create_dataset_factory(config(data)).train_set().images

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image file was decoded again")

    monkeypatch.setattr(Image, "open", no_decoding)
    assert torch.equal(create_dataset_factory(config(data)).train_set().images, first)


def test_image_folder_changed_file_or_image_size_decodes_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_image_folder(tmp_path / "data")
    create_dataset_factory(config(data))
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    Image.new("RGB", (20, 20), (255, 255, 255)).save(data / "train" / "cat" / "0.png")
    create_dataset_factory(config(data))
    assert len(opened) == 18  # the changed training split, not val/
    opened.clear()
    create_dataset_factory(config(data, image_size=8))
    assert len(opened) == 36  # both splits, at the new size


def test_image_folder_augment_false_gives_the_same_training_batch_every_epoch(tmp_path: Path) -> None:
    factory = create_dataset_factory(config(make_image_folder(tmp_path / "data"), augment=False, val_fraction=0.0))
    train = factory.train_set()
    loader = factory.train_loader()
    factory.set_epoch(0)
    images, labels = next(iter(loader))
    index = factory._sampler.indices()[:4]
    assert torch.equal(images, train.transform(train.images[index]))


def test_image_folder_corrupt_image_names_the_file(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data")
    (data / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(MLProjError, match=r"cannot read image .*train/dog/broken\.jpg"):
        prepare_dataset(config(data))


def test_image_folder_val_class_unknown_to_train_raises(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data")
    (data / "val" / "emu").mkdir()
    with pytest.raises(MLProjError, match="val/emu is a class the training set does not have"):
        prepare_dataset(config(data))


def test_main_image_folder_corrupt_image_is_one_line_and_records_no_run(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data")
    (data / "train" / "owl" / "3.png").write_bytes(b"\x89PNG truncated")
    runs = tmp_path / "runs"
    result = run_main("with", "dataset=image_folder", f"data_dir={data}", "image_size=16", runs=runs)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot read image {data}/train/owl/3.png (cannot identify image file '{data}/train/owl/3.png'): "
        "replace or delete the file.")
    assert not runs.exists() or not any(p.name.isdigit() for p in runs.iterdir())
