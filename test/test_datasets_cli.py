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


def test_datasets_imports_no_torch_so_it_answers_fast(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import ROOT

    make_mnist(tmp_path)
    code = ("import sys; from mlproj.cli import main; main(['datasets', '--data-dir', sys.argv[1]]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'numpy', 'sklearn')))")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    *table, imported = result.stdout.strip().splitlines()
    assert imported == "[]"  # torch alone takes seconds to import
    assert "mnist            1x28x28       10  ready" in table


def test_data_package_registers_datasets_and_exports_factory_lazily() -> None:
    import mlproj.data
    from mlproj.data import DatasetFactory, EpochSampler
    from mlproj.data.factory import DatasetFactory as Factory

    assert DatasetFactory is Factory and EpochSampler.__module__ == "mlproj.data.factory"
    built_in = ["cifar10", "cifar100", "cluttered_mnist", "digits", "fashion_mnist", "mnist"]
    names = mlproj.data.dataset_names()
    # Other tests in the session register their own datasets: the built-ins are there, in order.
    assert names == sorted(names) and [n for n in names if n in built_in] == built_in
