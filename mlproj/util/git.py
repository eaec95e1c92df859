"""Running git: the one way mlproj calls it, and what every caller asks of a repository.

Pinning a run's source (`mlproj.record.gitpin`), checking a pin out (`mlproj reproduce`) and
diffing two pins (`mlproj.runs.diff`) all go through `run_git`, so a missing git or a failing
command reads the same everywhere.

A repository that a run record names (its info.json's `cwd`, its experiment's `base_dir`) is not
the user's to trust: a runs dir may come from anywhere, and a repository's own config can name
programs for git to run (`core.fsmonitor`, `diff.external`, a diff driver's `textconv`, a pager).
`untrusted=True` reads such a repository with those settings turned off; the source diff also
passes `--no-ext-diff --no-textconv`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading

# What `run_git` says when there is no git to run.
NO_GIT = "git is not installed (no `git` on PATH)"

TIMEOUT_S = 120  # a git command that takes longer is stopped

# Config that turns off every program a repository's own config (or the system's) can make the
# reading commands (`rev-parse`, `cat-file`, `diff` between commits) run.
UNTRUSTED_CONFIG = ("-c", "core.fsmonitor=", "-c", "diff.external=", "-c", "core.pager=cat", "-c", "core.hooksPath=/dev/null")
UNTRUSTED_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_PAGER": "cat", "GIT_TERMINAL_PROMPT": "0"}


class GitError(Exception):
    """A git command failed (or git is missing); the message says which and why."""


def run_git(args: list[str], cwd: str, env: dict[str, str] | None = None, check: bool = True, strip: bool = True,
            *, untrusted: bool = False, limit: int | None = None) -> str:
    """`git ARGS` in `cwd`: its stdout ("" on failure when not `check`); GitError otherwise.

    Args:
        args: git's arguments, without `git`.
        cwd: the folder git runs in.
        env: git's environment (default: this process's).
        check: raise GitError when git fails (else return "").
        strip: strip the output (a diff's leading spaces and last newline belong to it: pass False).
        untrusted: the repository is one a run record named, not the user's own: run git with
            `UNTRUSTED_CONFIG` and `UNTRUSTED_ENV`, so its config cannot make git run a program.
        limit: read at most this many characters of the output, then stop git (the output is
            streamed, never held whole); an output of `limit` characters counts as a success.
    """
    command = ["git", *(UNTRUSTED_CONFIG if untrusted else ()), *args]
    if untrusted:
        env = {**(os.environ if env is None else env), **UNTRUSTED_ENV}
    shown = f"`git {' '.join(args)}`"
    try:
        with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: git never waits on an unread stderr
            process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=stderr, encoding="utf-8", errors="replace")
            out, cut, timed_out = _read_output(process, limit)
            stderr.seek(0)
            error = stderr.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise GitError(NO_GIT) from None
    except OSError as err:
        raise GitError(f"{shown} failed: {err}") from None
    if timed_out:
        raise GitError(f"{shown} failed: it took more than {TIMEOUT_S} s")
    if not cut and process.returncode != 0:
        if check:
            raise GitError(f"{shown} failed: {_one_line(error) or process.returncode}")
        return ""
    return out.strip() if strip else out


def _read_output(process: subprocess.Popen, limit: int | None) -> tuple[str, bool, bool]:
    """(`process`'s stdout, up to `limit` characters; whether it reached `limit`; whether it ran
    past TIMEOUT_S), once `process` has ended (it is stopped at `limit`, or when late)."""
    late = threading.Event()

    def stop() -> None:
        late.set()
        process.kill()

    timer = threading.Timer(TIMEOUT_S, stop)
    timer.start()
    try:
        with process:
            out = process.stdout.read() if limit is None else process.stdout.read(limit)  # type: ignore[union-attr]
            cut = limit is not None and len(out) >= limit
            if cut:
                process.kill()
    finally:
        timer.cancel()
    return out, cut, late.is_set()


def repository_root(path: str) -> str | None:
    """The top folder of the Git work tree holding `path`, or None when there is none.

    The repository is read as `untrusted` (see `run_git`): `path` may come from a run record.
    """
    try:
        return run_git(["rev-parse", "--show-toplevel"], cwd=path, untrusted=True)
    except GitError:
        return None


def has_commit(root: str, commit: str) -> bool:
    """Whether the repository at `root` holds the commit `commit` (a sha or a ref), read as
    `untrusted` (see `run_git`)."""
    return bool(run_git(["rev-parse", "-q", "--verify", "--end-of-options", f"{commit}^{{commit}}"], cwd=root, check=False, untrusted=True))


def _one_line(stderr: str) -> str:
    """git's error output as one line, without its `hint:` advice."""
    lines = (line.strip() for line in stderr.splitlines())
    return " ".join(line for line in lines if line and not line.startswith("hint:"))
