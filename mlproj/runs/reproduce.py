"""Re-running a recorded run from its pinned source: where its snapshot is, a worktree of it, the
run that reproduces it, and how the two runs' metrics compare (`mlproj reproduce` prints these).

The run's snapshot commit (`info.json` `git.snapshot`, kept alive by `refs/mlproj/runs/<key>`) is
checked out into a new Git worktree; the command runs its main file there.
"""

from __future__ import annotations

import os

from mlproj.errors import MLProjError
from mlproj.runs.reader import read_run
from mlproj.runs.record import Run
from mlproj.util.git import GitError, has_commit, repository_root, run_git


def pinned_snapshot(run: Run) -> str:
    """The commit `run` pinned its source at.

    Raises:
        MLProjError: the run has no pin (its exact code is unknown), saying how to rerun its config instead.
    """
    git = run.info.get("git")
    if not git or not git.get("snapshot"):
        raise MLProjError(
            f"run {run.path} has no source pin: {run.missing_pin}, so its exact code is unknown; "
            f"`mlproj show {run.path}` prints the command that reruns its config on the current code."
        )
    return git["snapshot"]


def check_out(run: Run, snapshot: str, worktree: str) -> tuple[str, str]:
    """Check `snapshot` out into the new Git worktree `worktree`; returns (the repository, the run's
    main file in the worktree).

    Raises:
        MLProjError: `worktree` exists and is not empty, no repository here holds the snapshot, or
            Git could not add the worktree.
    """
    if os.path.exists(worktree) and os.listdir(worktree):
        raise MLProjError(f"{worktree} already exists: pass --dir with a new folder, or remove it.")
    mainfile = run.experiment.get("mainfile", "main.py")
    repo, prefix = _repository_with(snapshot, run.experiment.get("base_dir"), mainfile)
    try:
        run_git(["worktree", "add", "--detach", worktree, snapshot], repo)
    except GitError as err:
        raise MLProjError(f"could not check out the snapshot into {worktree}: {err}") from None
    return repo, os.path.join(worktree, prefix, mainfile)


def find_reproduction(runs_root: str, before: set[str], run_key: str | None) -> Run | None:
    """The run that appeared in `runs_root` since `before` (its folder names) and records that it reproduces `run_key`."""
    new_dirs = sorted(set(os.listdir(runs_root)) - before)
    new_runs = [read_run(os.path.join(runs_root, d)) for d in new_dirs if os.path.isfile(os.path.join(runs_root, d, "run.json"))]
    return next((r for r in new_runs if (r.info.get("reproduces") or {}).get("run_key") == run_key), None)


def compare_metrics(run_a: Run, run_b: Run) -> tuple[list[str], list[str]]:
    """(identical, different) metric names of two runs, comparing every logged step and value."""
    a, b = run_a.metrics, run_b.metrics
    same, different = [], []
    for name in sorted(set(a) | set(b)):
        series_a, series_b = a.get(name), b.get(name)
        key_a = (series_a.steps, series_a.values) if series_a else None
        key_b = (series_b.steps, series_b.values) if series_b else None
        (same if key_a == key_b else different).append(name)
    return same, different


def _repository_with(snapshot: str, base_dir: str | None, mainfile: str) -> tuple[str, str]:
    """(repository root, main file's folder inside it): the run's own repo when it is still there,
    else the repository of the current folder, as long as it holds `snapshot`."""
    for folder in (base_dir, os.getcwd()):
        if not folder or not os.path.isdir(folder):
            continue
        root = repository_root(folder)
        if root is None or not has_commit(root, snapshot):
            continue  # not a repository, or not the one holding the snapshot
        if folder == base_dir:
            return root, run_git(["rev-parse", "--show-prefix"], folder)
        files = run_git(["ls-tree", "-r", "--name-only", snapshot], root).splitlines()
        matches = sorted((f for f in files if f == mainfile or f.endswith("/" + mainfile)), key=len)
        if matches:
            return root, os.path.dirname(matches[0])
    raise MLProjError(
        f"no Git repository here holds the run's snapshot {snapshot[:12]}: run `mlproj reproduce` inside "
        "the repository the run was started from (or a clone that fetched refs/mlproj/runs/*)."
    )
