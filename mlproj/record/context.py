"""Sacred's run as the engine's `RunContext`: the one place that reads a Sacred run for training.

The experiment glue (`mlproj.record.experiment`) notes what it knows of each run it creates
(`note_run`: how to continue it, whether stdout is a terminal, its own callbacks); `context_of`
builds the run's `RunContext` from that and from the run once it started (its id, run folder,
key and git pin), with a sink that records into the run. A run of a plain Sacred `Experiment`
(the original template's) gets a context too, from the run alone.
"""

from __future__ import annotations

import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from sacred.observers import FileStorageObserver

from mlproj.train.config import runs_dir, with_defaults
from mlproj.train.context import RunContext, RunSink


def runs_root(observers: list[Any], file_storage: str | None = None) -> str:
    """The runs folder a run records into: `-F DIR` (`file_storage`, before Sacred added its
    observer), a file observer's folder, else the default (`$MLPROJ_RUNS_DIR` or `runs`)."""
    if file_storage:
        return file_storage
    return next((o.basedir for o in observers if isinstance(o, FileStorageObserver)), runs_dir())


class SacredSink(RunSink):
    """Records into a Sacred run: its metrics, artifacts and info."""

    def __init__(self, run: Any):
        self.run = run

    def log_scalar(self, name: str, value: float, step: int) -> None:
        self.run.log_scalar(name, value, step)

    def add_artifact(self, path: str, name: str) -> None:
        self.run.add_artifact(path, name=name)

    def set_info(self, key: str, value: Any) -> None:
        self.run.info[key] = value


@dataclass
class RunNotes:
    """What the experiment glue knows of a run it created, before the run starts."""

    stdout_is_terminal: bool | None = None
    resume_command: str | None = None
    callbacks: list[Any] = field(default_factory=list)
    checkpoint: tuple[str, dict[str, Any]] | None = None  # (path, content) the config hook read for `test`
    tested: tuple[type, Any, Any] | None = None  # (project class, data, model) a `test` run evaluates, built by its checks


# Keyed by the Sacred run, so a run's notes go with it; only this module reads them.
_NOTES: weakref.WeakKeyDictionary[Any, RunNotes] = weakref.WeakKeyDictionary()


def note_run(run: Any, notes: RunNotes) -> None:
    """Keep `notes` for `run` until its context is built (`context_of`)."""
    _NOTES[run] = notes


def notes_of(run: Any) -> RunNotes:
    """The notes kept for `run` (empty ones for a run the glue did not create)."""
    return _NOTES.get(run) or RunNotes()


def context_of(run: Any) -> tuple[dict[str, Any], RunContext]:
    """The config of a started Sacred `run` and its `RunContext`.

    The run's folder is its file observer's; a run that records nothing (`-u`) has no runs folder,
    so it writes checkpoints and TensorBoard files only where its config names a folder.
    """
    config = dict(run.config)
    notes = notes_of(run)
    run_dir = next((o.dir for o in run.observers if isinstance(o, FileStorageObserver) and o.dir), None)
    root = runs_root(run.observers)
    run_key = run.info.get("run_key") or f"unobserved-{uuid.uuid4().hex[:8]}"
    # `_id` is the run's id as Sacred documents it (`_run._id`), None when no observer gave one.
    label = None if run._id is None else f"{run._id}_{run.experiment_info['name']}_{run_key[-8:]}"
    context = RunContext.create(
        with_defaults(config), run_key=run_key, run_dir=run_dir, recording_root=None if run.unobserved else root,
        tensorboard_name=label, run_id=run._id, runs_dir=root, resume_command=notes.resume_command,
        stdout_is_terminal=notes.stdout_is_terminal, callbacks=list(notes.callbacks),
        config_updates=dict(run.meta_info.get("config_updates") or {}), git=run.info.get("git"),
        sink=SacredSink(run),
    )
    return config, context
