"""`mlproj reproduce RUN`: re-run a recorded run from its pinned source, config and seed.

The run's snapshot commit (`info.json` `git.snapshot`, kept alive by `refs/mlproj/runs/<key>`) is
checked out into a new Git worktree; its main file runs there with the recorded command and
`config.json` (seed included), from the folder the run was started in, recording into the same
runs dir. The new run records `reproduces` in its info; the metrics of both runs are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from mlproj.errors import MLProjError
from mlproj.runs.reader import read_run
from mlproj.runs.record import Run
from mlproj.train.config import runs_dir
from mlproj.util.git import GitError, has_commit, repository_root, run_git
from mlproj.util.refs import find_run_dir


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reproduce", help="re-run a recorded run from its pinned source, config and seed in a new worktree"
    )
    parser.add_argument("run", help="a run folder (runs/3) or a run id in the runs dir")
    parser.add_argument("--dir", help="the new worktree (default: <runs dir>/reproductions/<run key>)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlproj.record.experiment import REPRODUCES_ENV  # lazy: imports Sacred, which other mlproj commands must not

    original = read_run(find_run_dir(args.run, runs_dir()))
    run_dir, git, experiment = original.path, original.info.get("git"), original.experiment
    if not git or not git.get("snapshot"):
        raise MLProjError(
            f"run {run_dir} has no source pin: {original.missing_pin}, so its exact code is unknown; "
            f"`mlproj show {run_dir}` prints the command that reruns its config on the current code."
        )
    repo, prefix = _repository_with(git["snapshot"], experiment.get("base_dir"), experiment.get("mainfile", "main.py"))
    runs_root = os.path.dirname(run_dir)
    worktree = os.path.abspath(args.dir or os.path.join(runs_root, "reproductions", original.run_key or "run"))
    if os.path.exists(worktree) and os.listdir(worktree):
        raise MLProjError(f"{worktree} already exists: pass --dir with a new folder, or remove it.")
    _add_worktree(repo, worktree, git["snapshot"])
    main_file = os.path.join(worktree, prefix, experiment.get("mainfile", "main.py"))

    cwd = original.info.get("cwd") if os.path.isdir(original.info.get("cwd") or "") else os.getcwd()
    command = [sys.executable, main_file, original.command, "with", os.path.join(run_dir, "config.json")]
    reproduces = {"run_id": os.path.basename(run_dir), "run_key": original.run_key, "run_dir": run_dir}
    env = {**os.environ, "MLPROJ_RUNS_DIR": runs_root, REPRODUCES_ENV: json.dumps(reproduces)}
    before = set(os.listdir(runs_root))
    print(f"reproducing run {os.path.basename(run_dir)} at {git['snapshot'][:12]} in {worktree}", flush=True)
    status = subprocess.run([part for part in command if part], cwd=cwd, env=env).returncode
    new_run = _reproduction(runs_root, before, original.run_key)
    if new_run is None:
        raise MLProjError(f"the reproduction ended (exit status {status}) without recording a run; see its output above.")
    same, different = compare_metrics(original, new_run)
    print(f"run {os.path.basename(run_dir)} reproduced as run {new_run.id}: "
          f"{len(same)} metric series identical, {len(different)} different{': ' + ', '.join(different) if different else ''}")
    print(f"remove the worktree with: git -C {repo} worktree remove {worktree}")
    return status


def _reproduction(runs_root: str, before: set[str], run_key: str | None) -> Run | None:
    """The run that appeared in `runs_root` since `before` and records that it reproduces `run_key`."""
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


def _add_worktree(repo: str, worktree: str, snapshot: str) -> None:
    try:
        run_git(["worktree", "add", "--detach", worktree, snapshot], repo)
    except GitError as err:
        raise MLProjError(f"could not check out the snapshot into {worktree}: {err}") from None
