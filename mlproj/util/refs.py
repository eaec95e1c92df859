"""Run references: the one resolver from what a user passes (a run id, a run folder, a checkpoint
path) to a run folder and a checkpoint file.

Which checkpoint of a run each command takes is decided here, once (`CHECKPOINT_OF`):

- `resume=RUN` continues the latest state, the run's `last.pt`;
- `test`, `predict` (`checkpoint=RUN`) and `mlproj.load_run(RUN)` use the best, the run's `best.pt`,
  else its `last.pt` when the run kept none (a run without a validation or test set judges nothing).

A run folder is a folder holding `run.json`; a run id names `<runs root>/<id>`.
"""

from __future__ import annotations

import os

from mlproj.errors import MLProjError

BEST, LAST = "best", "last"
# Which checkpoint of a run each command takes when given the run (its id or folder).
CHECKPOINT_OF = {"resume": LAST, "test": BEST, "predict": BEST, "load_run": BEST}
# The files `BEST` and `LAST` name, in the order a folder is searched for them.
FILES = {BEST: ("best.pt", "last.pt"), LAST: ("last.pt",)}


def run_folder(ref: str | int | os.PathLike, runs_root: str | None) -> str | None:
    """The run folder `ref` names, absolute: `ref` itself when it holds run.json, else the folder
    `<runs_root>/<ref>` when it does; None when neither is a run folder."""
    target = str(ref) if isinstance(ref, int) else os.fspath(ref)
    for candidate in (target, *([os.path.join(runs_root, target)] if runs_root is not None else [])):
        if os.path.isfile(os.path.join(candidate, "run.json")):
            return os.path.abspath(candidate)
    return None


def find_run_dir(ref: str | int | os.PathLike, runs_root: str) -> str:
    """`run_folder`, or `MLProjError` saying what may be passed.

    Raises:
        MLProjError: when `ref` names no run folder.
    """
    found = run_folder(ref, runs_root)
    if found is None:
        target = str(ref) if isinstance(ref, int) else os.fspath(ref)
        raise MLProjError(
            f"run {target!r} not found: pass a run folder holding run.json (e.g. runs/3) or a run id "
            f"in {os.path.abspath(runs_root)}."
        )
    return found


def checkpoint_in(folder: str, which: str) -> str | None:
    """The checkpoint file `which` (`BEST` or `LAST`) of the folder `folder`; None when it holds none."""
    return next((os.path.join(folder, name) for name in FILES[which] if os.path.isfile(os.path.join(folder, name))), None)


def resolve_checkpoint(ref: str | int | os.PathLike, which: str, runs_root: str | None = None) -> str | None:
    """The checkpoint file `ref` names: `ref` itself when it is no folder (a .pt path, existing or
    not: reading it says what is wrong), else the file `which` of the folder `ref`, or of the run
    `<runs_root>/<ref>` for a run id. None when `ref` is a folder or run id without that file.
    """
    target = str(ref) if isinstance(ref, int) else os.fspath(ref)
    if os.path.isdir(target):
        return checkpoint_in(target, which)
    if runs_root is not None and target.isdigit() and os.path.isdir(os.path.join(runs_root, target)):
        return checkpoint_in(os.path.join(runs_root, target), which)
    if runs_root is not None and target.isdigit():
        return None  # a run id without its folder
    return target
