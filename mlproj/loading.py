"""`load_run`: a recorded run back as a ready project, from its run folder alone.

    project = mlproj.load_run("runs/3")          # best.pt, in eval mode
    logits = project.model(images)                # inference
    project.evaluate("validation")                # the recorded validation metric again

The project is built from what the run recorded: its config (`config.json`) and its main file
(`run.json`'s `experiment.base_dir` + `mainfile`). The main file names its project class with a
module-level `Project` (an `MLProject` subclass); without one, `MLProject` is used. The caller
imports no model code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import warnings
from typing import Any

from mlproj.errors import MLProjError
from mlproj.runs.reader import read_run
from mlproj.train.config import runs_dir
from mlproj.train.loop import MLProject
from mlproj.train.main_file import project_class
from mlproj.util.refs import BEST, CHECKPOINT_OF, LAST, checkpoint_in, find_run_dir


def load_run(
    run: str | int | os.PathLike,
    checkpoint: str = CHECKPOINT_OF["load_run"],
    device: str = "auto",
    **overrides: Any,
) -> Any:
    """The project of a recorded run, its model loaded from `checkpoint` and in eval mode.

    Args:
        run: a run folder (e.g. `"runs/3"`, from any directory) or a run id in the runs dir.
        checkpoint: `"best"` (best.pt, else last.pt when the run kept none: see `mlproj.util.refs`),
            `"last"`, or the path of a checkpoint file.
        device: where the model goes (`auto`, `cpu`, `cuda:N`).
        **overrides: config keys to change, e.g. `data_dir="/data"` when the data moved.

    Returns:
        The `MLProject` (or the main file's `Project`): `.model(x)` is inference, `.dataset_factory`
        holds the data, `.evaluate(split)` evaluates.

    Raises:
        MLProjError: when the run, its checkpoint or its data cannot be found.

    Example:
        >>> project = load_run("runs/3")
        >>> project.model(torch.zeros(1, 1, 8, 8)).argmax(1)
    """
    record = read_run(find_run_dir(run, runs_dir()))
    run_dir, info = record.path, record.info
    config = {**record.config, "resume": None, "tensorboard_dir": None, "device": device}
    # Relative paths in the config meant the folder the run was started in.
    if info.get("cwd") and isinstance(config.get("data_dir"), str) and not os.path.isabs(config["data_dir"]):
        config["data_dir"] = os.path.join(info["cwd"], config["data_dir"])
    config.update(overrides)
    evaluated = config.get("checkpoint")  # what a `test` run evaluated, relative to where it ran
    if info.get("cwd") and isinstance(evaluated, str) and not os.path.isabs(evaluated):
        evaluated = os.path.join(info["cwd"], evaluated)
    path = _checkpoint_path(run_dir, checkpoint, record.command, evaluated)
    project = _project_class(record.experiment)(config)
    project.load_checkpoint(path)
    project.model.eval()
    return project


def _checkpoint_path(run_dir: str, checkpoint: str, command: str | None, evaluated: Any) -> str:
    if checkpoint in (BEST, LAST):
        path = checkpoint_in(run_dir, checkpoint)
        if path is not None:
            return path
        if command == "test":
            raise MLProjError(_test_run_hint(run_dir, evaluated))
        if checkpoint == LAST and checkpoint_in(run_dir, BEST) is not None:
            raise MLProjError(f"run {run_dir} has no last.pt: pass checkpoint='best' or a .pt path.")
        raise MLProjError(f"run {run_dir} holds no checkpoint (no best.pt or last.pt): pass checkpoint= the path of a .pt file.")
    if not os.path.isfile(checkpoint):
        raise MLProjError(f"checkpoint {checkpoint!r} does not exist: pass 'best', 'last' or the path of a .pt file.")
    return checkpoint


def _test_run_hint(run_dir: str, evaluated: Any) -> str:
    """What to load instead of a `test` run, which evaluated a checkpoint and saved none."""
    what = f"it evaluated {evaluated} and saved no checkpoint" if evaluated else "it saved no checkpoint"
    if isinstance(evaluated, str):
        trained = evaluated if os.path.isdir(evaluated) else os.path.dirname(evaluated)  # checkpoint=runs/4 or runs/4/best.pt
        if os.path.isfile(os.path.join(trained, "config.json")):
            return f"run {run_dir} is a `test` run: {what}; load the run that trained it: load_run({os.path.normpath(trained)!r})."
    return f"run {run_dir} is a `test` run: {what}; load the training run instead, or pass checkpoint= the path of a .pt file."


def _project_class(experiment: dict[str, Any]) -> type:
    base_dir, mainfile = experiment.get("base_dir"), experiment.get("mainfile")
    main_path = os.path.join(base_dir, mainfile) if base_dir and mainfile else None
    if main_path is None or not os.path.isfile(main_path):
        warnings.warn(f"main file {main_path} of the run is gone: building an MLProject.", stacklevel=3)
        return MLProject
    _check_main_file(experiment, main_path)
    return project_class(vars(_import_main_file(main_path)), main_path)


def _check_main_file(experiment: dict[str, Any], main_path: str) -> None:
    """`MLProjError` unless the main file to import is one the run recorded as its source: inside its
    `base_dir`, and among its `sources` when it recorded any. A run.json edited to point elsewhere
    (`mainfile: ../../elsewhere.py`) so cannot make `load_run` execute a file the run never ran."""
    base = os.path.realpath(experiment["base_dir"])
    real = os.path.realpath(main_path)
    sources = {os.path.normpath(s[0] if isinstance(s, (list, tuple)) else str(s)) for s in experiment.get("sources") or []}
    inside = os.path.commonpath([base, real]) == base
    if not inside or (sources and os.path.normpath(os.path.relpath(real, base)) not in sources):
        raise MLProjError(
            f"main file {main_path} is not a source the run recorded (experiment.base_dir and sources in its run.json): "
            "load_run imports only the run's own main file; restore its run.json, or build the project yourself."
        )


def _import_main_file(path: str) -> Any:
    """Import a main file as its own module (once per path); its folder joins sys.path so its
    own imports resolve, at the end so it shadows nothing already importable."""
    name = "mlproj_main_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
