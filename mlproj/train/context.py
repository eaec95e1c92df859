"""`RunContext`: what recording a run gives the engine, in one object passed to `MLProject`.

The recording side (`mlproj.record`, over Sacred's run) builds it once, when a run is recorded;
the engine reads these fields and writes its record through `sink`, and never sees the recorder
behind them. `MLProject(config)` without a context builds `RunContext.unrecorded(config)`: its
files go under the default runs folder and its record nowhere.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from mlproj.train.config import runs_dir, tensorboard_root


class RunSink:
    """Where a run's record goes: scalars, files and info entries. This one records nothing;
    `mlproj.record` implements it over Sacred's run."""

    def log_scalar(self, name: str, value: float, step: int) -> None:
        """Record `value` of metric `name` at optimizer step `step`."""

    def add_artifact(self, path: str, name: str) -> None:
        """Record the file at `path` under `name`."""

    def set_info(self, key: str, value: Any) -> None:
        """Record `value` under `key` in the run's info."""


@dataclass
class RunContext:
    """A recorded run, as the engine sees it.

    Attributes:
        run_key: the run's unique key (kept in each checkpoint, names its git pin).
        run_id: the recorder's id of the run (a run folder's number), None when it has none.
        checkpoint_dir: where last.pt and best.pt go; None: the run writes no checkpoints.
        tensorboard_dir: this run's own TensorBoard folder; None: no TensorBoard.
        runs_dir: the runs folder a `resume=<id>` is looked up in.
        resume_target: what `resume=` takes to continue this run (its folder or last.pt), if any.
        resume_command: how to continue it where it was started, `{}` standing for the target
            (e.g. "`python main.py with resume={}`"); None: say `config resume=<target>`.
        stdout_is_terminal: whether stdout is a terminal, when known before anything captured it.
        callbacks: the recorder's own callbacks, called before the caller's.
        config_updates: the config keys the run was given (TensorBoard's hyperparameters).
        git: the run's git pin, kept in each checkpoint.
        sink: where scalars, artifacts and info entries go.
    """

    run_key: str
    run_id: int | str | None = None
    checkpoint_dir: str | None = None
    tensorboard_dir: str | None = None
    runs_dir: str = field(default_factory=runs_dir)
    resume_target: str | None = None
    resume_command: str | None = None
    stdout_is_terminal: bool | None = None
    callbacks: list[Any] = field(default_factory=list)
    config_updates: dict[str, Any] = field(default_factory=dict)
    git: Any = None
    sink: RunSink = field(default_factory=RunSink)

    @classmethod
    def create(cls, config: dict[str, Any], *, run_key: str, run_dir: str | None, recording_root: str | None,
               tensorboard_name: str | None = None, **fields: Any) -> RunContext:
        """The context of a run whose files go where `config` (`model_dir`, `tensorboard_dir`) and
        the recorder say: `run_dir` is the run's own folder (None without one), `recording_root` the
        runs folder it records into (None: it records nothing, so no files unless config names a
        folder), `tensorboard_name` the name of its TensorBoard folder (default: `run_key`)."""
        if config.get("model_dir"):
            checkpoints = os.path.join(config["model_dir"], run_key)
        elif run_dir:
            checkpoints = run_dir
        else:
            checkpoints = os.path.join(recording_root, "checkpoints", run_key) if recording_root else None
        board = tensorboard_root(config.get("tensorboard_dir", "auto"), recording_root)
        fields.setdefault("resume_target", run_dir or (os.path.join(checkpoints, "last.pt") if checkpoints else None))
        return cls(run_key=run_key, checkpoint_dir=checkpoints,
                   tensorboard_dir=os.path.join(board, tensorboard_name or run_key) if board else None, **fields)

    @classmethod
    def unrecorded(cls, config: dict[str, Any]) -> RunContext:
        """A run nothing records: files under the default runs folder, as `config` says."""
        return cls.create(config, run_key=f"unobserved-{uuid.uuid4().hex[:8]}", run_dir=None, recording_root=runs_dir())

    def continue_with(self) -> str:
        """How to continue this run: config `resume=<its folder or last.pt>`, as `resume_command` says."""
        if self.resume_command:
            return self.resume_command.format(self.resume_target)
        return f"config resume={self.resume_target}"
