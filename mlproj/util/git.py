"""Running git: the one way mlproj calls it, and what every caller asks of a repository.

Pinning a run's source (`mlproj.record.gitpin`), checking a pin out (`mlproj reproduce`) and
diffing two pins (`mlproj.runs.diff`) all go through `run_git`, so a missing git or a failing
command reads the same everywhere.
"""

from __future__ import annotations

import subprocess

# What `run_git` says when there is no git to run.
NO_GIT = "git is not installed (no `git` on PATH)"


class GitError(Exception):
    """A git command failed (or git is missing); the message says which and why."""


def run_git(args: list[str], cwd: str, env: dict[str, str] | None = None, check: bool = True, strip: bool = True) -> str:
    """`git ARGS` in `cwd`: its stdout ("" on failure when not `check`); GitError otherwise.

    The output is stripped unless `strip` is False (a diff's leading spaces and last newline belong to it).
    """
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
        )
    except FileNotFoundError:
        raise GitError(NO_GIT) from None
    except (OSError, subprocess.TimeoutExpired) as err:
        raise GitError(f"`git {' '.join(args)}` failed: {err}") from None
    if check and result.returncode != 0:
        raise GitError(f"`git {' '.join(args)}` failed: {_one_line(result.stderr) or result.returncode}")
    if result.returncode != 0:
        return ""
    return result.stdout.strip() if strip else result.stdout


def repository_root(path: str) -> str | None:
    """The top folder of the Git work tree holding `path`, or None when there is none."""
    try:
        return run_git(["rev-parse", "--show-toplevel"], cwd=path)
    except GitError:
        return None


def has_commit(root: str, commit: str) -> bool:
    """Whether the repository at `root` holds the commit `commit` (a sha or a ref)."""
    return bool(run_git(["rev-parse", "-q", "--verify", f"{commit}^{{commit}}"], cwd=root, check=False))


def _one_line(stderr: str) -> str:
    """git's error output as one line, without its `hint:` advice."""
    lines = (line.strip() for line in stderr.splitlines())
    return " ".join(line for line in lines if line and not line.startswith("hint:"))
