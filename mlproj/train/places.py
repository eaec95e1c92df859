"""Where a project's files go, from its Sacred run (or none): checkpoints, TensorBoard, run lookup.

A run recorded by a file observer keeps its checkpoints in its run folder; `model_dir` puts them
elsewhere; a Sacred run that records nothing (`-u`) writes none unless `model_dir` is given.
"""

from __future__ import annotations

import os
from typing import Any

from mlproj.train.config import runs_dir, tensorboard_root


def run_info(run: Any, key: str) -> Any:
    return run.info.get(key) if run is not None else None


def run_id(run: Any) -> Any:
    return getattr(run, "_id", None)


def file_observer_dir(run: Any) -> str | None:
    """The run folder of `run`'s file observer, if it has one."""
    for observer in getattr(run, "observers", []):
        if getattr(observer, "dir", None) and hasattr(observer, "basedir"):
            return observer.dir
    return None


def recording_root(run: Any) -> str | None:
    """The runs folder `run` records into: the file observer's (`-F DIR`), None for a Sacred run
    that records nothing (`-u`), else the default one."""
    folder = file_observer_dir(run)
    if folder:
        return os.path.dirname(folder)
    return None if getattr(run, "unobserved", False) else runs_dir()


def runs_root(run: Any) -> str:
    """Where a run id given to `resume` is looked up."""
    return recording_root(run) or runs_dir()


def checkpoint_dir(run: Any, config: dict[str, Any], run_key: str) -> str | None:
    """Where last.pt and best.pt go; None: this run writes no checkpoints (`-u` without `model_dir`)."""
    if config["model_dir"]:
        return os.path.join(config["model_dir"], run_key)
    if file_observer_dir(run):
        return file_observer_dir(run)
    root = recording_root(run)
    return os.path.join(root, "checkpoints", run_key) if root else None


def tensorboard_run_dir(run: Any, config: dict[str, Any], run_key: str) -> str | None:
    """This run's own TensorBoard folder, or None (config `tensorboard_dir=None`)."""
    root = tensorboard_root(config["tensorboard_dir"], recording_root(run))
    if not root:
        return None
    if run_id(run) is None:
        return os.path.join(root, run_key)
    return os.path.join(root, f"{run_id(run)}_{run.experiment_info['name']}_{run_key[-8:]}")


def resume_target(run: Any, checkpoint_folder: str) -> str:
    """What `resume=` takes to continue this run: its run folder, else its last.pt."""
    return file_observer_dir(run) or os.path.join(checkpoint_folder, "last.pt")


def continue_with(run: Any, checkpoint_folder: str) -> str:
    """How to continue this run: config `resume=<its folder or last.pt>`, in the command-line form
    the experiment glue gives its runs (`run.resume_command`), if any."""
    target = resume_target(run, checkpoint_folder)
    command = getattr(run, "resume_command", None)
    return command.format(target) if isinstance(command, str) else f"config resume={target}"
