"""`mlproj datasets`: which datasets are registered and whether their files are there."""

from __future__ import annotations

from pathlib import Path

from conftest import make_cifar, make_mnist

from mlproj.cli import main


def test_datasets_lists_ready_missing_and_damaged(tmp_path: Path, capsys) -> None:
    make_mnist(tmp_path)
    make_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not the original")
    assert main(["datasets", "--data-dir", str(tmp_path)]) == 0
    status = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert status["mnist"] == "ready" and status["digits"] == "ready" and status["cluttered_mnist"] == "ready"
    assert status["fashion_mnist"] == "missing" and status["cifar100"] == "missing"
    assert status["cifar10"] == "damaged"  # present, but fails torchvision's md5 check
