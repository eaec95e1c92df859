"""Shared fixtures and helpers: small datasets written in the real on-disk formats, run folders,
running main.py, a copy of the project in a Git repository, and the guards that keep the checkout clean."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def two_class_batch() -> tuple[Any, Any]:
    """32 random 1x8x8 inputs (seed 0) labelled by the sign of their mean: a batch a model can learn."""
    import torch  # here: conftest is imported by tests that need no torch

    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return x, (x.mean(dim=(1, 2, 3)) > 0).long()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` (uint8) as an IDX file: magic 0x08 type byte, dimension count, big-endian sizes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist(root: Path, folder: str = "MNIST", n_train: int = 200, n_test: int = 50, seed: int = 0) -> Path:
    """Tiny MNIST-format data under `root/folder/raw`: each class is a bright block at its own place,
    so a network can learn it in a few steps."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 5)
            images[i, 4 + 10 * row : 12 + 10 * row, 2 + 5 * col : 6 + 5 * col] = 255
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", images)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def make_cifar(root: Path, kind: str = "cifar10", n_per_batch: int = 20, seed: int = 0) -> Path:
    """Tiny CIFAR python pickle batches under `root/cifar-10-batches-py` or `root/cifar-100-python`."""
    rng = np.random.default_rng(seed)

    def batch(n: int, label_key: str, n_classes: int) -> dict:
        return {
            "data": rng.integers(0, 256, (n, 3 * 32 * 32)).astype(np.uint8),
            label_key: rng.integers(0, n_classes, n).tolist(),
        }

    def dump(path: Path, obj: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump(obj, f)

    if kind == "cifar10":
        folder = root / "cifar-10-batches-py"
        for i in range(1, 6):
            dump(folder / f"data_batch_{i}", batch(n_per_batch, "labels", 10))
        dump(folder / "test_batch", batch(n_per_batch, "labels", 10))
        dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    else:
        folder = root / "cifar-100-python"
        dump(folder / "train", batch(5 * n_per_batch, "fine_labels", 100))
        dump(folder / "test", batch(n_per_batch, "fine_labels", 100))
        dump(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)]})
    return root


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    return make_mnist(tmp_path / "data")


@pytest.fixture(autouse=True)
def runs_outside_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test records into its own temporary runs dir unless it sets one: a test that runs a
    project without saying where (`MLProject(config).train()`, `ex.run()`) must not write `runs/`
    into the developer's checkout."""
    monkeypatch.setenv("MLPROJ_RUNS_DIR", str(tmp_path / "runs"))


@pytest.fixture(autouse=True)
def no_sigterm_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a process no SIGTERM has reached: one sent by an earlier test in this
    process must not make the next one's a copy of it (mlproj/train/signals.py)."""
    from mlproj.train import signals

    monkeypatch.setattr(signals, "_sigterm_stop", [])


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "runs"
    monkeypatch.setenv("MLPROJ_RUNS_DIR", str(path))
    return path


def run_main(*args: str, runs: Path, cwd: Path = ROOT, env: dict | None = None, main: Path | None = None,
             timeout: int = 300) -> subprocess.CompletedProcess:
    """Run main.py as a user would, recording into `runs`."""
    if main is None and "with" in args and not any(arg.startswith("git_pin=") for arg in args):
        # The project's own main.py must not leave refs/mlproj/runs/* in the developer's repository.
        at = args.index("with") + 1
        args = (*args[:at], "git_pin=False", *args[at:])
    full_env = {**os.environ, "MLPROJ_RUNS_DIR": str(runs), "PYTHONUNBUFFERED": "1", **(env or {})}
    if "MONGODB_URI" not in (env or {}):
        full_env.pop("MONGODB_URI", None)  # a developer's own database stays out of the tests
    return subprocess.run(
        [sys.executable, str(main or ROOT / "main.py"), *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def main_experiment() -> Any:
    """A fresh `ex` from main.py, as `./main.py` builds it (for running it in this process)."""
    spec = importlib.util.spec_from_file_location("main_under_test", ROOT / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ex


def write_run(runs: Path, run_id: int, config: dict, metrics: dict[str, list[float]], status: str = "COMPLETED",
              info: dict | None = None, dirty: bool = False) -> Path:
    """A run folder as RunFolderObserver writes it (run.json, config.json, info.json, metrics.json)."""
    folder = runs / str(run_id)
    folder.mkdir(parents=True)
    record = {
        "artifacts": ["last.pt"], "command": "train", "status": status,
        "experiment": {"name": "mlproj", "mainfile": "main.py", "repositories": [{"commit": "abcdef1234567", "dirty": dirty, "url": "x"}]},
        "start_time": f"2026-01-0{run_id}T10:00:00.000000", "stop_time": f"2026-01-0{run_id}T10:01:30.500000",
        "heartbeat": f"2026-01-0{run_id}T10:01:30.000000", "meta": {"config_updates": {"lr": config.get("lr")}}, "result": None,
    }
    (folder / "run.json").write_text(json.dumps(record))
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "info.json").write_text(json.dumps(info or {"run_key": f"key-{run_id}"}))
    series = {name: {"steps": list(range(len(v))), "timestamps": ["2026-01-01T10:00:00"] * len(v), "values": v} for name, v in metrics.items()}
    (folder / "metrics.json").write_text(json.dumps(series))
    return folder


# --------------------------------------------------------------------------- the project in a Git repo
EDIT = "# an uncommitted edit\n"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def copy_project(target: Path) -> Path:
    """A copy of the project (main.py, mlproj/, .gitignore) in `target`."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "main.py", target / "main.py")
    shutil.copy2(ROOT / ".gitignore", target / ".gitignore")
    shutil.copytree(ROOT / "mlproj", target / "mlproj", ignore=shutil.ignore_patterns("__pycache__"))
    return target


def make_project_repo(target: Path) -> Path:
    """The project committed in a new repo on branch main, then an uncommitted edit to main.py,
    an untracked file and an ignored one."""
    repo = copy_project(target)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", "the project")
    with open(repo / "main.py", "a") as f:
        f.write(EDIT)
    (repo / "untracked.txt").write_text("not yet added\n")
    (repo / "build").mkdir()
    (repo / "build" / "ignored.txt").write_text("ignored by .gitignore\n")
    return repo


# --------------------------------------------------------------------------- keeping the checkout clean
def _run_refs() -> set[str]:
    result = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/mlproj/runs"], cwd=ROOT,
                            capture_output=True, text=True)
    return set(result.stdout.split()) if result.returncode == 0 else set()


@pytest.fixture(autouse=True, scope="session")
def leave_no_run_refs():
    """Runs started by the tests pin the project's working tree under refs/mlproj/runs/ like any
    run; remove the refs this session made so the developer's repo keeps only their own."""
    before = _run_refs()
    yield
    for ref in sorted(_run_refs() - before):
        subprocess.run(["git", "update-ref", "-d", ref], cwd=ROOT, check=False)


# Made by running the tools themselves, not by a test.
_TOOL_DIRS = ("__pycache__", ".pytest_cache", ".ruff_cache", ".venv", ".egg-info")


def _checkout_files() -> set[str]:
    """Untracked and ignored entries of the checkout (as `git status` lists them), and every file under
    its `runs/`, where a developer's own runs may already lie."""
    status = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=normal"], cwd=ROOT,
                            capture_output=True, text=True)
    entries = {line[3:] for line in status.stdout.splitlines() if line[:2] in ("??", "!!")} if status.returncode == 0 else set()
    runs = ROOT / "runs"
    entries |= {str(p.relative_to(ROOT)) for p in runs.rglob("*")} if runs.is_dir() else set()
    return {entry for entry in entries if not any(part in entry for part in _TOOL_DIRS)}


@pytest.fixture(autouse=True, scope="session")
def leave_nothing_in_the_checkout():
    """Fail the session when a test wrote into the checkout (run folders, checkpoints, TensorBoard
    files, plots, models/): every test must write under its tmp_path."""
    before = _checkout_files()
    yield
    written = sorted(_checkout_files() - before)
    if written:
        pytest.fail(f"tests wrote into the checkout: {', '.join(written[:5])}", pytrace=False)


def make_image_folder(root: Path, splits: tuple[str, ...] = ("train", "val"), n_per_class: int = 6, size: tuple[int, int] = (16, 20),
                      seed: int = 0) -> Path:
    """`root/<split>/<class>/*` of real image files (PNG, JPEG, grayscale, palette, RGBA), three classes
    told apart by their dominant colour; an empty split name puts the class folders in `root` itself."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = {"cat": (220, 40, 40), "dog": (40, 220, 40), "owl": (40, 40, 220)}
    for split in splits:
        for name, colour in colours.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                pixels = (rng.integers(0, 40, (size[1], size[0], 3)) + np.array(colour)).clip(0, 255).astype(np.uint8)
                image = Image.fromarray(pixels)
                kind = i % 5
                if kind == 0:
                    image.save(folder / f"{i}.png")
                elif kind == 1:
                    image.save(folder / f"{i}.jpg", quality=95)
                elif kind == 2:
                    image.convert("P").save(folder / f"{i}.png")
                elif kind == 3:
                    image.convert("RGBA").save(folder / f"{i}.png")
                else:
                    image.convert("L").save(folder / f"{i}.jpeg")
    return root


# --------------------------------------------------------------------------- cluster tests
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cluster` (SLURM, PostgreSQL, two torchrun nodes: minutes each) run only when
    selected with `-m cluster`, as `make test-cluster` does after starting the services."""
    if "cluster" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="a cluster test (SLURM, PostgreSQL or two torchrun nodes): run by `make test-cluster`")
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)


def cluster_service(variable: str, what: str) -> str:
    """The value of `variable`, which test/cluster/up.sh exports for service `what`; skip without it."""
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"no {what} here ({variable} unset): `make test-cluster` starts one and runs this test")
    return value
