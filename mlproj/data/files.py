"""Making sure a dataset's files are on disk before a run starts."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from mlproj.errors import MLProjError


def ensure_files(name: str, folder: str, files: list[str], config: dict[str, Any], download: Callable[[], None],
                 what: str) -> None:
    """Raise `MLProjError` unless every one of `files` is in `folder`, calling `download()` first
    when config `download` allows it. `what` names the files in the message (e.g. "IDX files")."""

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
    try:
        download()
    except Exception as err:  # any network failure: say where the files go instead
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
