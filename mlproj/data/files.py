"""Making sure a dataset's files are on disk before a run starts."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

from mlproj.errors import MLProjError


def ensure_files(name: str, folder: str, files: list[str], config: dict[str, Any], download: Callable[[], None],
                 what: str) -> None:
    """Raise `MLProjError` unless every one of `files` is in `folder`, calling `download()` first
    when config `download` allows it. `what` names the files in the message (e.g. "IDX files").
    A download that fails leaves no folder it made: `folder` and the parents it had to create go."""

    def missing() -> list[str]:
        return [f for f in files if not os.path.exists(os.path.join(folder, f))]

    absent = missing()
    if not absent:
        return
    if not config.get("download", True):
        raise MLProjError(
            f"{name} not found under {folder} (missing {', '.join(absent)}) and download=False: put the {what} "
            "there, run with download=True, or run with dataset=digits."
        )
    created = _first_missing(folder)
    try:
        download()
    except BaseException as err:  # any network failure (or Ctrl-C): say where the files go instead
        if created is not None:  # the folders the failed attempt made (an empty MNIST/raw/), and what it left in them
            shutil.rmtree(created, ignore_errors=True)
        if not isinstance(err, Exception):
            raise
        raise MLProjError(
            f"{name} not found under {folder} and the download failed ({type(err).__name__}): put the {what} "
            "there, or run with dataset=digits."
        ) from None
    absent = missing()
    if absent:
        raise MLProjError(
            f"{name} is still missing {', '.join(absent)} under {folder} after the download: put the {what} "
            "there, or run with dataset=digits."
        )


def _first_missing(folder: str) -> str | None:
    """The outermost of `folder` and its parents that does not exist yet (None when `folder` exists)."""
    folder, missing = os.path.abspath(folder), None
    while not os.path.exists(folder):
        missing, parent = folder, os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return missing
