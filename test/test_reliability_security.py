"""Security: checkpoints are only loaded with weights_only=True, so a pickle that would run code is
refused before it runs; nothing in mlproj executes what it reads back from a run record."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest
import torch

from mlproj.errors import MLProjError
from mlproj.train.checkpoint import load_checkpoint

PACKAGE = Path(__file__).resolve().parents[1] / "mlproj"
# CIFAR's python batches are themselves pickles (torchvision unpickles them too): a dataset the user
# downloads, never a run record. Listed here so any other unpickling shows up.
DATASET_FORMATS = {"cifar.py:pickle.load"}
# Where mlproj imports (runs) a Python file, and why that file is trusted: the sweep imports the
# script the user names on its command line; load_run imports a run's main file only after checking
# it is a source the run recorded (loading._check_main_file, tested in test_loading.py).
IMPORTERS = {"loader.exec_module", "runpy.run_path", "runpy.run_module", "importlib.import_module", "__import__"}
IMPORTS_CODE = {"spec.py:runpy.run_path", "loading.py:loader.exec_module"}


class WritesMarker:
    """Unpickling this runs `open(marker, "w")`: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def test_load_checkpoint_code_running_torch_file_refused_before_running(tmp_path: Path) -> None:
    marker, path = tmp_path / "marker", tmp_path / "last.pt"
    torch.save({"format": "mlproj.checkpoint/1", "payload": WritesMarker(marker)}, path)
    with pytest.raises(MLProjError, match=r"refused by the safe loader \(weights_only=True\)"):
        load_checkpoint(path)
    assert not marker.exists()


def test_load_checkpoint_code_running_plain_pickle_refused_before_running(tmp_path: Path) -> None:
    marker, path = tmp_path / "marker", tmp_path / "best.pt"
    path.write_bytes(pickle.dumps(WritesMarker(marker)))
    with pytest.raises(MLProjError, match=r"(refused by the safe loader|truncated or corrupt)"):
        load_checkpoint(path)
    assert not marker.exists()


def test_load_checkpoint_unsafe_load_would_have_run_the_code_mlproj_refuses_it(tmp_path: Path) -> None:
    """A run folder whose best.pt runs code when unpickled (the control shows it does): every mlproj
    reader of a run's checkpoint (load_checkpoint, predict's loader) refuses it before it runs."""
    from mlproj.train.predict import load_for_prediction

    marker, run = tmp_path / "marker", tmp_path / "4"
    run.mkdir()
    torch.save({"format": "mlproj.checkpoint/1", "payload": WritesMarker(marker)}, run / "best.pt")
    torch.load(run / "best.pt", weights_only=False)  # noqa: S614 - the control: this file runs code
    assert marker.exists()
    marker.unlink()
    for load in (load_checkpoint, load_for_prediction):
        with pytest.raises(MLProjError, match=r"refused by the safe loader \(weights_only=True\)"):
            load(run)
        assert not marker.exists()


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):  # eval(...), exec(...)
                found.append((func.id, node))
            elif isinstance(func, ast.Attribute):  # pickle.load(...); self.model.eval() is "model.eval"
                owner = func.value.id if isinstance(func.value, ast.Name) else getattr(func.value, "attr", "?")
                found.append((f"{owner}.{func.attr}", node))
    return found


def test_package_never_executes_or_unpickles_what_it_reads() -> None:
    """No eval/exec, no pickle/yaml/marshal loads, every torch.load with weights_only=True, no shell=True:
    a run record (config.json, run.json, checkpoints) is data, never code."""
    forbidden = {"eval", "exec", "compile", "pickle.load", "pickle.loads", "marshal.loads", "yaml.load", "yaml.unsafe_load",
                 "dill.load", "jsonpickle.decode", "os.system", "os.popen"}
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for name, call in _calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(PACKAGE.parent)}:{call.lineno}"
            if name in forbidden and f"{path.name}:{name}" not in DATASET_FORMATS:
                problems.append(f"{where} calls {name}")
            if name in IMPORTERS and f"{path.name}:{name}" not in IMPORTS_CODE:
                problems.append(f"{where} runs a Python file ({name})")
            if name == "torch.load" and not any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in call.keywords
            ):
                problems.append(f"{where} calls torch.load without weights_only=True")
            if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                   for k in call.keywords):
                problems.append(f"{where} runs a shell")
    assert problems == []
