"""User mistakes on main.py's command line: one line naming the input and the fix, exit 1,
no traceback, and nothing written (the checks run before a run folder exists)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_mnist, run_main

CASES = [
    # (arguments after main.py, a pattern the one line must contain)
    (["with", "dataset=imagenet"], "dataset='imagenet' is unknown: use one of"),
    (["with", "model=vgg"], "model='vgg' is invalid: expected one of lenet, mlp, resnet18"),
    (["with", "dataset=digits", "n_epochs=0"], "n_epochs=0 is invalid: expected an integer >= 1"),
    (["with", "dataset=digits", "n_epochs=1.5"], "n_epochs=1.5 is invalid"),
    (["with", "dataset=digits", "batch_size=0"], "batch_size=0 is invalid"),
    (["with", "dataset=digits", "lr=0"], "lr=0 is invalid: expected a number > 0"),
    (["with", "dataset=digits", "lr=-0.1"], "lr=-0.1 is invalid"),
    (["with", "dataset=digits", "val_fraction=1.0"], r"val_fraction=1.0 is invalid: expected a number in \[0, 1\)"),
    (["with", "dataset=digits", "optimizer=rmsprop"], "optimizer='rmsprop' is invalid: expected 'adam' or 'sgd'"),
    (["with", "dataset=digits", "num_workers=-1"], "num_workers=-1 is invalid"),
    (["with", "dataset=digits", "save_iterations=0"], "save_iterations=0 is invalid: expected an integer >= 1 or 'epoch'"),
    (["with", "dataset=digits", "log_iteration_scalars=never"], "log_iteration_scalars='never' is invalid"),
    (["with", "dataset=digits", "device=tpu"], "device='tpu' is invalid"),
    (["with", "dataset=digits", "scheduler=cosinus"], "scheduler='cosinus' is invalid: expected one of none, cosine"),
    (["with", "dataset=digits", "accumulate_grad_batches=0"], "accumulate_grad_batches=0 is invalid: expected an integer >= 1"),
    (["with", "dataset=digits", "grad_clip_norm=0"], "grad_clip_norm=0 is invalid: expected a number > 0 or None"),
    (["with", "dataset=digits", "n_global_iterations=5", "warmup_steps=5"], "warmup_steps=5 is invalid: the run has only 5"),
    (["with", "dataset=digits", "n_epoch=3"], "unknown config key n_epoch: check the spelling"),
    (["with", "dataset=digits", "lr"], "`with lr` is neither key=value nor a named config"),
    (["train_fast"], 'Command "train_fast" not found'),
    (["with", "dataset=mnist", "download=False"], r"MNIST not found under .*/MNIST/raw .*and download=False"),
    (["with", "dataset=cifar10", "download=False"], r"CIFAR10 not found under .*cifar-10-batches-py"),
    (["with", "dataset=digits", "resume=77"], r"resume='77' names no checkpoint"),
    (["test", "with", "dataset=digits", "checkpoint=nowhere.pt"], "checkpoint nowhere.pt does not exist"),
    (["test", "with", "dataset=digits"], r"the test command needs a checkpoint: \S+/python \S*main.py test with checkpoint="),
    (["-m", "mongodb://ann:pw@db/x", "with", "dataset=digits"], r"-m 'mongodb://ann:\*\*\*@db/x' is not \[HOST:PORT:\]DB_NAME"),
]
if not torch.cuda.is_available():
    CASES.append((["with", "dataset=digits", "device=cuda:0"], "asks for CUDA, but this machine has no usable GPU: run with device=cpu"))


@pytest.mark.parametrize(("args", "pattern"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_main_bad_input_one_line_exit_1_nothing_written(args: list[str], pattern: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = run_main(*args, f"data_dir={tmp_path / 'data'}" if "with" in args else "", runs=runs) if "with" in args \
        else run_main(*args, runs=runs)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert lines and lines[-1].startswith("error: ")
    assert len(lines) <= 2, result.stderr  # the error, at most after Sacred's own type-change warning
    import re

    assert re.search(pattern, lines[-1]), lines[-1]
    assert not runs.exists()  # no run folder, no TensorBoard directory, nothing


def test_main_corrupt_idx_file_named_before_run(tmp_path: Path) -> None:
    data = make_mnist(tmp_path / "data")
    (data / "MNIST" / "raw" / "train-labels-idx1-ubyte").write_bytes(b"garbage")
    result = run_main("with", "dataset=mnist", f"data_dir={data}", "download=False", runs=tmp_path / "runs")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "train-labels-idx1-ubyte is not an IDX file" in result.stderr
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------
# More cases, run through main.py's own entry point (`ex.run_commandline`) in this process, which
# is the same code path without paying torch's import for each. Placeholders in the arguments
# name files the `bad_files` fixture makes: {data} a data root, {mlp_run} a run folder holding a
# real mlp/digits last.pt, {corrupt_run} one whose last.pt is truncated, {foreign} a .pt that is
# not an mlproj checkpoint, {evil} a .pt that would write {marker} if it were unpickled, {file} a
# plain file, {partial} an MNIST folder missing its test files, {bad_header} an MNIST folder whose
# image file's header promises more images than it holds.
IN_PROCESS_CASES = [
    # config values: wrong types, out of range
    (["with", "dataset=digits", "batch_size=abc"], "batch_size='abc' is invalid: expected an integer >= 1"),
    (["with", "dataset=digits", "weight_decay=-1"], "weight_decay=-1 is invalid: expected a number >= 0"),
    (["with", "dataset=digits", "deterministic=maybe"], "deterministic='maybe' is invalid: expected True or False"),
    (["with", "dataset=digits", "n_global_iterations=-5"], "n_global_iterations=-5 is invalid"),
    (["with", "dataset=digits", "data_dir=3"], "data_dir=3 is invalid: expected a folder path"),
    # command line: malformed `with`
    (["with", "dataset=digits", "lr=[1,"], r"lr='\[1,' is invalid: expected a number > 0"),
    (["with", "cifar11_resnet18"], "`with cifar11_resnet18` is neither key=value nor a named config"),
    # resume targets: a run of another model, a corrupt checkpoint, a foreign file, a malicious pickle
    (["with", "dataset=digits", "model=lenet", "resume={mlp_run}"],
     r"continues a run of model=mlp, but this run is given model=lenet: drop model=lenet to continue that run"),
    (["with", "dataset=digits", "model=mlp", "resume={corrupt_run}"], r"last.pt is truncated or corrupt"),
    (["with", "dataset=digits", "resume={foreign}"], r"is not an mlproj checkpoint"),
    (["with", "dataset=digits", "resume={evil}"], r"refused by the safe loader \(weights_only=True\)"),
    (["with", "dataset=digits", "resume={data}"], r"names no checkpoint: pass a run folder holding last.pt"),
    (["test", "with", "dataset=digits", "checkpoint={evil}"], r"refused by the safe loader"),
    (["test", "with", "dataset=digits", "checkpoint={partial}"], r"checkpoint .*/partial is a folder without best.pt or last.pt"),
    # data dirs: partial, corrupt header, a file instead of a folder
    (["with", "dataset=mnist", "download=False", "data_dir={partial}"],
     r"MNIST not found under .* \(missing t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte\) and download=False"),
    (["with", "dataset=mnist", "download=False", "data_dir={bad_header}"],
     r"train-images-idx3-ubyte is truncated or padded .* its header promises"),
    (["with", "dataset=mnist", "download=False", "data_dir={file}"], r"MNIST not found under .*/a-file/MNIST/raw"),
    # storage
    (["with", "dataset=digits", "model_dir={file}/models"], r"config model_dir .* cannot be created: .* is a file"),
    (["with", "dataset=digits", "tensorboard_dir={file}/tb"], r"config tensorboard_dir .* cannot be created"),
]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from mlproj.train.loop import MLProject

    root = tmp_path_factory.mktemp("bad")
    mlp_run = root / "mlp-run"
    project = MLProject({"dataset": "digits", "model": "mlp", "n_global_iterations": 1, "model_dir": str(root),
                         "tensorboard_dir": None, "device": "cpu"})
    project.train()
    (root / project.run_key).rename(mlp_run)
    corrupt_run = root / "corrupt-run"
    corrupt_run.mkdir()
    (corrupt_run / "last.pt").write_bytes((mlp_run / "last.pt").read_bytes()[:5000])
    torch.save(torch.zeros(3), root / "foreign.pt")
    from test_reliability_security import WritesMarker

    torch.save({"format": "mlproj.checkpoint/1", "x": WritesMarker(root / "marker")}, root / "evil.pt")
    partial = make_mnist(root / "partial")
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (partial / "MNIST" / "raw" / name).unlink()
    bad_header = make_mnist(root / "bad-header")
    images = bad_header / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = bytearray(images.read_bytes())
    data[4:8] = (1000).to_bytes(4, "big")  # claims 1000 images, holds 200
    images.write_bytes(bytes(data))
    (root / "a-file").write_text("not a folder")
    return {"data": str(root / "data"), "mlp_run": str(mlp_run), "corrupt_run": str(corrupt_run),
            "foreign": str(root / "foreign.pt"), "evil": str(root / "evil.pt"), "marker": str(root / "marker"),
            "partial": str(partial), "bad_header": str(bad_header), "file": str(root / "a-file")}


@pytest.mark.parametrize(("args", "pattern"), IN_PROCESS_CASES, ids=[" ".join(a) for a, _ in IN_PROCESS_CASES])
def test_main_in_process_bad_input_one_line_exit_1_nothing_written(
    args: list[str], pattern: str, bad_files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    import re

    from test_reliability_storage import run_main_in_process

    runs = tmp_path / "runs"
    monkeypatch.setenv("MLPROJ_RUNS_DIR", str(runs))
    args = [arg.format(**bad_files) for arg in args]
    if not any(arg.startswith("data_dir=") for arg in args):
        args.append(f"data_dir={bad_files['data']}")
    assert run_main_in_process(*args) == 1
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("WARNING - root")]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert out == ""
    assert not runs.exists()  # no run folder (so none left RUNNING), no TensorBoard directory, nothing
    assert not Path(bad_files["marker"]).exists()  # the malicious checkpoint never ran


def test_mlproj_unknown_command_one_line_exit_2() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "mlproj.cli", "frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "invalid choice: 'frobnicate'" in result.stderr
    assert "see `mlproj --help`" in result.stderr


@pytest.mark.parametrize(("config", "pattern"), [
    ({"model": "vgg"}, "model='vgg' is invalid: expected one of lenet, mlp, resnet18"),
    ({"optimizer": "rmsprop"}, "optimizer='rmsprop' is invalid: expected 'adam' or 'sgd'"),
    ({"lr": 0}, "lr=0 is invalid: expected a number > 0"),
    ({"weight_decay": -1}, "weight_decay=-1 is invalid: expected a number >= 0"),
    ({"val_fraction": 1.0}, r"val_fraction=1.0 is invalid: expected a number in \[0, 1\)"),
    ({"dataset": "imagenet"}, "dataset='imagenet' is unknown: use one of"),
])
def test_mlproject_builtin_factories_bad_value_raise_when_used(config: dict, pattern: str) -> None:
    from mlproj.errors import MLProjError
    from mlproj.train.loop import MLProject

    with pytest.raises(MLProjError, match=pattern):  # no glue here: the built-in factories check their own keys
        MLProject({"dataset": "digits", "model": "mlp", "tensorboard_dir": None, "device": "cpu", **config})


def test_validate_config_keys_of_the_users_code_not_checked() -> None:
    from mlproj.train.config import validate_config

    # Values only the user's code reads are the user's: no error, whatever they are.
    validate_config({"model": "tiny_cnn", "optimizer": "adamw", "lr": "cosine", "weight_decay": None,
                     "val_fraction": "auto", "download": "if-missing", "width": 8})


def no_venv_env(runs: Path) -> dict[str, str]:
    """The environment of a shell in a fresh clone: no active venv (its bin/ off PATH), runs into `runs`."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MONGODB_URI")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if os.path.dirname(sys.executable) not in p)
    env["MLPROJ_RUNS_DIR"] = str(runs)
    return env


def test_main_unknown_key_hint_pasted_without_venv_runs(tmp_path: Path) -> None:
    # Started as `.venv/bin/python3 main.py` (the spelling of the mlproj script's shebang), the hint
    # still names `python`, and pasted from the project root without an active venv it runs.
    python3 = os.path.join(os.path.dirname(sys.executable), "python3")
    if not os.path.exists(python3):
        pytest.skip("no python3 beside this interpreter")
    env = no_venv_env(tmp_path / "runs")
    result = subprocess.run([os.path.relpath(python3, ROOT), "main.py", "with", "lrr=1"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    (hint,) = re.findall(r"`([^`]+)` lists every key", result.stderr)
    assert shlex.split(hint)[0].endswith("python") and shlex.split(hint)[1:] == ["main.py", "print_config"], hint
    pasted = subprocess.run(hint, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert pasted.returncode == 0 and "lr = " in pasted.stdout, pasted.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", [["sweep", "main.py", "with", "lrr=[1,2]", "--dry-run"],
                                     ["tune", "main.py", "with", "lrr=loguniform(1e-4,1e-1)", "--trials", "1"]])
def test_sweep_and_tune_unknown_key_hint_pasted_without_venv_runs(command: list[str], tmp_path: Path) -> None:
    # The mlproj script as a fresh clone has it (.venv/bin/mlproj), run from the project root with no
    # active venv: its hint names this interpreter and main.py, and pasted as printed it runs.
    mlproj = os.path.join(os.path.dirname(sys.executable), "mlproj")
    if not os.path.exists(mlproj):
        pytest.skip("no mlproj script beside this interpreter")
    env = no_venv_env(tmp_path / "runs")
    result = subprocess.run([os.path.relpath(mlproj, ROOT), *command], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    (hint,) = re.findall(r"`([^`]+)` lists every key", result.stderr)
    assert shlex.split(hint)[1:] == ["main.py", "print_config"], hint
    pasted = subprocess.run(hint, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert pasted.returncode == 0 and "lr = " in pasted.stdout, pasted.stderr
    assert not (tmp_path / "runs").exists()
