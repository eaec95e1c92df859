"""Writing files so a crash never leaves half of one, storage checks run before training, and
turning a failed write into one line that says what to do.

A run that cannot write its record or its checkpoints should fail before it trains, not after the
first epoch. `check_writable` probes a folder without creating it (it may not exist yet: the run
makes it), so a failed check leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import IO, Any

from mlproj.errors import MLProjError

# mkstemp makes 0600 files; records and checkpoints get the mode any other file would (e.g. 0644),
# so a shared runs dir stays readable by the group, Omniboard's user or a sync job.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], None], mode: str = "wb") -> None:
    """`write(file)` into a temporary file beside `path`, fsync, then rename it over `path`.

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_copy(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Copy `source` to `path` atomically (see `atomic_write`)."""

    def copy(f: IO[Any]) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, f)

    atomic_write(path, copy)


def atomic_link(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make `path` a hard link to `source`, atomically (a link under a temporary name, renamed over
    `path`): the same bytes without writing them again. Safe because files are only ever replaced,
    never rewritten in place (`atomic_write`). Falls back to `atomic_copy` where links are refused.
    """
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".tmp-link-{os.getpid()}-{os.path.basename(path)}")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.link(source, tmp)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        atomic_copy(source, path)


def shown_path(path: str) -> str:
    """`path` as a command line shown to paste here reads it: relative when it lies below the
    current folder (`.venv/bin/python`), else as given."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def plain_python(executable: str | None = None) -> str:
    """The interpreter running mlproj (`sys.executable`) named `python` rather than
    `python3`/`python3.11` when that sibling is the same interpreter (a venv's `.venv/bin/python`)."""
    path = executable or sys.executable
    sibling = os.path.join(os.path.dirname(path), "python")
    if os.path.basename(path) != "python" and os.path.exists(sibling) and os.path.realpath(sibling) == os.path.realpath(path):
        return sibling
    return path


def shown_python(executable: str | None = None) -> str:
    """The interpreter running mlproj as printed commands name it: `plain_python`, relative to here
    when it lies below (see `shown_path`)."""
    return shown_path(plain_python(executable))


def shown_mlproj() -> str:
    """The `mlproj` command as printed commands name it: the script installed beside the interpreter
    running mlproj (`.venv/bin/mlproj`), else that interpreter running the package (`python -m mlproj.cli`)."""
    script = os.path.join(os.path.dirname(sys.executable), "mlproj")
    if os.path.isfile(script):
        return shlex.quote(shown_path(script))
    return shlex.join([shown_python(), "-m", "mlproj.cli"])


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
