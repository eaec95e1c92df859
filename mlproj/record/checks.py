"""The checks a run passes before Sacred starts its observers, so that a mistake writes nothing.

Each raises `MLProjError` with one line naming what was wrong and what to do; the experiment
(`mlproj.record.experiment`) prints it and exits 1.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from typing import Any

# Sacred's own pattern of its `-m` option, not exported: test_record_sacred_api.py checks what it accepts.
from sacred.observers.mongo import get_pattern

from mlproj.errors import MLProjError
from mlproj.record.context import runs_root
from mlproj.util.files import check_writable, shown_mlproj, shown_python
from mlproj.util.uri import redact_uri


def main_command() -> str:
    """How printed hints start a command of this experiment: the interpreter running it and its
    script (`.venv/bin/python main.py` in a fresh clone), which works without an active venv."""
    script = sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else "main.py"
    return shlex.join([shown_python(), script])


def test_needs_checkpoint() -> str:
    """The one line of a `test` command without a checkpoint."""
    return f"the test command needs a checkpoint: {main_command()} test with checkpoint=runs/<id>/best.pt"


def check_run(run: Any, project_class: type, command: str, *, training: bool,
              read: tuple[str, dict[str, Any]] | None) -> str:
    """Check a created run of `project_class` (an `MLProject` subclass) before its observers start.

    Args:
        run: the Sacred run, its config final (command line, named configs, recorded config).
        command: the command the run runs (`test` needs a checkpoint and data, `predict` a checkpoint and images).
        training: whether `command` is the experiment's main function (it needs the data).
        read: (path, content) of the checkpoint the config hook read (`resume` or `checkpoint`).

    Returns:
        The runs dir the run records into.

    Raises:
        MLProjError: a config value the project refuses, a run that cannot be resumed with this
            config, missing data, no checkpoint to test, or a folder the run could not write.
    """
    if read is not None and training:
        from mlproj.train.checkpoint import check_resumable  # lazy: imports torch, which print_config must not

        check_resumable(read[1], run.config, run.config["resume"])
    project_class.check_config(run.config)
    # A missing or bad checkpoint failed in the config hook, before a run is recorded.
    if command == "test" and not run.config.get("checkpoint"):
        raise MLProjError(test_needs_checkpoint())
    if command == "predict":
        check_predict_inputs(run.config)
    if training or command == "test":
        project_class.prepare_data(run.config)
    root = runs_root(run.observers)
    check_storage(run, root)
    return root


def check_predict_inputs(config: dict[str, Any]) -> None:
    """`MLProjError` unless the `predict` command was given a checkpoint and an image or a folder of images."""
    if not config.get("checkpoint") or not config.get("input"):
        raise MLProjError("the predict command needs a checkpoint and images: "
                          f"{main_command()} predict with checkpoint=runs/<id>/best.pt input=<image file or folder>")
    from mlproj.train.predict import image_files  # lazy: imports torch, which print_config must not

    image_files(config["input"])


def test_inputs(project_class: type, config: dict[str, Any], read: tuple[str, dict[str, Any]] | None) -> tuple[Any, Any]:
    """The data and the model a `test` run of `project_class` evaluates, built before the run is
    recorded, with the checkpoint's weights loaded: a dataset without a test set, or a checkpoint
    that does not fit the model, is an `MLProjError` saying what to do, and no run is recorded.

    Args:
        config: the run's config (the checkpoint's recorded config under the command line's keys).
        read: (path, content) of the checkpoint the config hook read.

    Returns:
        (`DatasetFactory`, `Model`): what `test_checkpoint` builds the run's project from.
    """
    # lazy: imports torch, which print_config must not
    from mlproj.train.config import with_defaults
    from mlproj.train.state import seeded

    config = with_defaults({**config, "resume": None})
    with seeded(config.get("seed") or 0):  # as MLProject builds its data: a factory drawing from the global RNG draws the same
        factory = project_class.get_dataset_factory(config)
    if not factory.has_test_set():
        raise MLProjError(no_test_set(config, read))
    project = project_class(config, dataset_factory=factory)  # unrecorded: it writes nothing
    project.load_checkpoint(config["checkpoint"], read[1] if read and read[0] == str(config["checkpoint"]) else None)
    return factory, project.model


def no_test_set(config: dict[str, Any], read: tuple[str, dict[str, Any]] | None) -> str:
    """The one line of a `test` command on data without a test set: how to add one (image_folder),
    and where the training run's validation metrics are."""
    dataset, data_dir = config.get("dataset"), str(config.get("data_dir"))
    line = f"dataset={dataset} has no test set, so the test command has nothing to evaluate"
    fixes = []
    if dataset == "image_folder":
        # lazy: mlproj.data imports every dataset module, which print_config must not
        from mlproj.data.image_folder import SPLIT_FOLDERS

        line = f"dataset=image_folder has no test set in {data_dir} (no {SPLIT_FOLDERS['test']}/ folder), so the test command has nothing to evaluate"
        fixes.append(f"add test images as {os.path.join(data_dir, SPLIT_FOLDERS['test'], '<class>', '')}")
    run = _training_run(read)
    if run:
        fixes.append(f"see the validation metrics of the run that trained it with `{shown_mlproj()} show {shlex.quote(run)}`")
    return line + (": " + ", or ".join(fixes) if fixes else "") + "."


def _training_run(read: tuple[str, dict[str, Any]] | None) -> str | None:
    """How `mlproj show` names the run that wrote the checkpoint `read`: its run folder, else its run key."""
    if read is None:
        return None
    folder = os.path.dirname(read[0]) if os.path.isfile(read[0]) else read[0]
    if os.path.isfile(os.path.join(folder, "run.json")):
        return folder or "."
    return (read[1].get("run") or {}).get("key")


def check_storage(run: Any, runs_root: str) -> None:
    """`MLProjError` before anything is written when the run could not write its record,
    checkpoints or TensorBoard files."""
    if not run.unobserved:
        check_writable(runs_root, "runs dir", "Set MLPROJ_RUNS_DIR (or -F) to a folder you can write")
    for key in ("model_dir", "tensorboard_dir"):
        if run.config.get(key) and run.config[key] != "auto":  # `auto` lies in the runs dir, checked above
            check_writable(str(run.config[key]), f"config {key}", f"Pass {key}=<a folder you can write>")


def check_mongo_option(value: str | None) -> None:
    """`MLProjError` for a `-m` value Sacred cannot parse (it would fail with a traceback)."""
    if value and not re.match(get_pattern(), value):
        raise MLProjError(
            f"-m {redact_uri(value)!r} is not [HOST:PORT:]DB_NAME (e.g. -m localhost:27017:sacred); for a full URI with "
            "credentials set MONGODB_URI instead."
        )
