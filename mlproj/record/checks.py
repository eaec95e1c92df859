"""The checks a run passes before Sacred starts its observers, so that a mistake writes nothing.

Each raises `MLProjError` with one line naming what was wrong and what to do; the experiment
(`mlproj.record.experiment`) prints it and exits 1.
"""

from __future__ import annotations

import re
from typing import Any

# Sacred's own pattern of its `-m` option, not exported: test_record_sacred_api.py checks what it accepts.
from sacred.observers.mongo import get_pattern

from mlproj.errors import MLProjError
from mlproj.record.context import runs_root
from mlproj.util.files import check_writable
from mlproj.util.uri import redact_uri

TEST_NEEDS_CHECKPOINT = "the test command needs a checkpoint: ./main.py test with checkpoint=runs/<id>/best.pt"


def check_run(run: Any, project_class: type, command: str, *, training: bool,
              read: tuple[str, dict[str, Any]] | None) -> str:
    """Check a created run of `project_class` (an `MLProject` subclass) before its observers start.

    Args:
        run: the Sacred run, its config final (command line, named configs, recorded config).
        command: the command the run runs (`test` needs a checkpoint).
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
    if training:
        project_class.prepare_data(run.config)
    # A missing or bad checkpoint failed in the config hook, before a run is recorded.
    if command == "test" and not run.config.get("checkpoint"):
        raise MLProjError(TEST_NEEDS_CHECKPOINT)
    root = runs_root(run.observers)
    check_storage(run, root)
    return root


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
