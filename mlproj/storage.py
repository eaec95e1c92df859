"""Storage checks run before training, and turning a failed write into one line that says what to do.

A run that cannot write its record or its checkpoints should fail before it trains, not after the
first epoch. `check_writable` probes a folder without creating it (it may not exist yet: the run
makes it), so a failed check leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import tempfile

from mlproj.errors import MLProjError


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_writable(path: str, what: str, fix: str) -> None:
    """Raise `MLProjError` unless files can be created in `path` (made later if it does not exist).

    Args:
        path: the folder the run will write into.
        what: how the message names it, e.g. "runs dir" or "config model_dir".
        fix: what the user should do, e.g. "set MLPROJ_RUNS_DIR to a folder you can write".
    """
    existing = _nearest_existing(path)
    if not os.path.isdir(existing):
        raise MLProjError(f"{what} {path} cannot be created: {existing} is a file, not a folder. {fix}.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".mlproj-write-probe-", dir=existing)
    except OSError as err:
        raise MLProjError(f"{what} {path} is not writable ({describe_os_error(err)}). {fix}.") from None
    os.close(fd)
    os.unlink(probe)


def describe_os_error(err: OSError) -> str:
    """`ENOSPC: No space left on device`, or the exception's own text when it has no errno."""
    if err.errno is not None and err.errno in errno.errorcode:
        return f"{errno.errorcode[err.errno]}: {err.strerror or os.strerror(err.errno)}"
    return f"{type(err).__name__}: {err}"
