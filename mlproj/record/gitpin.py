"""Pinning a run's exact source: a commit of the working tree as it is, under a hidden ref.

Sacred records the HEAD commit and a dirty flag, which cannot bring back uncommitted edits or
untracked files. `pin_working_tree` makes a commit object whose tree is the working tree exactly
(tracked changes and untracked, non-ignored files), with HEAD as parent, and stores it under
`refs/mlproj/runs/<run_key>`. It works on a temporary copy of the index, so HEAD, the index, the
working tree, branches and the stash are never touched; only new objects and the ref are written.

    git show --stat refs/mlproj/runs/<run_key>     # what the run ran
    git diff HEAD refs/mlproj/runs/<run_key>        # what it ran that was not committed
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from typing import Any

from mlproj.util.git import GitError, run_git

REF_PREFIX = "refs/mlproj/runs/"
# The start of `info.json`'s `git_error` when the run's folder is in no Git work tree.
NOT_IN_REPOSITORY = "not inside a Git repository"
logger = logging.getLogger("mlproj")
# The snapshot is a commit made by a machine; its identity is used when the user set none.
_FALLBACK_IDENTITY = {"name": "mlproj", "email": "mlproj@localhost"}


def pin_working_tree(path: str, run_key: str, exclude: list[str] = ()) -> dict[str, Any]:
    """Commit the working tree holding `path` under `refs/mlproj/runs/<run_key>`.

    Args:
        path: a folder inside the work tree (the main file's folder).
        run_key: a name unique to the run (Sacred's run id repeats across run folders).
        exclude: folders of results rather than source (runs, checkpoints, TensorBoard, data): left
            out when they lie in the work tree and are not ignored, so no checkpoint is committed.

    Returns:
        `{head, branch, snapshot, ref, dirty}`: the HEAD commit (None in a repo without commits),
        the branch name (None when detached), the snapshot commit, its ref, and whether the
        snapshot differs from HEAD.

    Raises:
        GitError: when `path` is not in a Git work tree, git is missing, or a git command fails.
    """
    try:
        root = run_git(["rev-parse", "--show-toplevel"], cwd=path)
    except GitError as err:
        if "not a git repository" in str(err).lower():
            raise GitError(f"{NOT_IN_REPOSITORY}: {os.path.abspath(path)}") from None
        raise
    git_dir, real_index = run_git(["rev-parse", "--absolute-git-dir", "--git-path", "index"], cwd=root).splitlines()
    head = run_git(["rev-parse", "-q", "--verify", "HEAD^{commit}"], cwd=root, check=False) or None
    branch = run_git(["symbolic-ref", "-q", "--short", "HEAD"], cwd=root, check=False) or None
    real_index = os.path.join(root, real_index)

    # A copy of the real index, so `git add` re-hashes only files whose stat changed (fast), and
    # the real index stays as it was. It lives in the git dir, beside the index it copies.
    fd, tmp_index = tempfile.mkstemp(prefix="mlproj-index-", dir=git_dir)
    os.close(fd)
    try:
        if os.path.exists(real_index):
            shutil.copyfile(real_index, tmp_index)
        else:
            os.unlink(tmp_index)  # git makes a fresh index where none exists
        env = {**os.environ, "GIT_INDEX_FILE": tmp_index, **_identity_env(root)}
        run_git(["add", "--all", "--", ":/", *_exclude_pathspecs(root, exclude)], cwd=root, env=env)
        tree = run_git(["write-tree"], cwd=root, env=env)
        message = f"mlproj run {run_key}\n\nThe working tree as it was when the run started."
        parents = ["-p", head] if head else []
        snapshot = run_git(["commit-tree", tree, *parents, "-m", message], cwd=root, env=env)
    finally:
        for leftover in (tmp_index, tmp_index + ".lock"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    ref = REF_PREFIX + run_key
    run_git(["update-ref", ref, snapshot], cwd=root)
    dirty = head is None or run_git(["rev-parse", f"{head}^{{tree}}"], cwd=root) != tree
    return {"head": head, "branch": branch, "snapshot": snapshot, "ref": ref, "dirty": dirty}


def _exclude_pathspecs(root: str, folders: list[str]) -> list[str]:
    """`git add` pathspecs leaving out those of `folders` that lie in the work tree and are not ignored.

    An ignored folder must not be named: `git add` fails on any pathspec naming an ignored path,
    exclusions included (git 2.39), and ignored files are left out anyway.
    """
    specs = []
    for folder in folders:
        relative = os.path.relpath(os.path.realpath(folder), os.path.realpath(root))
        if relative != "." and not relative.startswith("..") and not _ignored_or_unknown(root, relative):
            specs.append(f":(top,exclude,literal){relative}")
    return specs


def _ignored_or_unknown(root: str, folder: str) -> bool:
    """Whether git ignores `folder` (relative to `root`, existing or not), or cannot tell (e.g. a
    path beyond a symbolic link, which `git add` does not follow either)."""
    try:
        result = subprocess.run(["git", "check-ignore", "-q", "--", folder.rstrip("/") + "/"], cwd=root,
                                capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise GitError(f"`git check-ignore {folder}/` failed: {err}") from None
    return result.returncode != 1  # 0: ignored, 1: not ignored, 128: cannot tell


def _identity_env(root: str) -> dict[str, str]:
    """Author/committer variables for `commit-tree` where the user configured no identity."""
    configured = run_git(["config", "--get-regexp", r"^user\.(name|email)$"], cwd=root, check=False)
    have = {line.split(" ", 1)[0].split(".", 1)[1] for line in configured.splitlines() if " " in line}
    env = {}
    for field, value in _FALLBACK_IDENTITY.items():
        if field in have:
            continue
        for role in ("AUTHOR", "COMMITTER"):
            env.setdefault(f"GIT_{role}_{field.upper()}", os.environ.get(f"GIT_{role}_{field.upper()}", value))
    return env


def pin_or_warn(path: str, run_key: str, exclude: list[str] = ()) -> tuple[dict[str, Any] | None, str | None]:
    """`(pin_working_tree(...), None)`, or `(None, reason)` and one warning line when `path` is in no
    repo or git fails.

    A run must never fail because its source could not be pinned; it only loses the pin.
    """
    try:
        return pin_working_tree(path, run_key, exclude), None
    except GitError as err:
        reason = str(err)
        what = "run inside a Git repository to pin it" if reason.startswith(NOT_IN_REPOSITORY) else "the run goes on"
        logger.warning(f"source not pinned ({reason}): info.json records git = null and git_error; {what}.")
        return None, reason
