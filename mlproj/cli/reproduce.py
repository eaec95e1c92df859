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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reproduce", help="re-run a recorded run from its pinned source, config and seed in a new worktree"
    )
    parser.add_argument("run", help="a run folder (runs/3) or a run id in the runs dir")
    parser.add_argument("--dir", help="the new worktree (default: <runs dir>/reproductions/<run key>)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlproj.loading import find_run_dir, read_record
    from mlproj.record.experiment import REPRODUCES_ENV

    run_dir = find_run_dir(args.run)
    info, record = read_record(run_dir, "info.json"), read_record(run_dir, "run.json")
    git, experiment = info.get("git"), record.get("experiment", {})
    if not git or not git.get("snapshot"):
        from mlproj.record.gitpin import missing_pin_reason

        raise MLProjError(
            f"run {run_dir} has no source pin: {missing_pin_reason(info, read_record(run_dir, 'config.json'))}, "
            f"so its exact code is unknown; `mlproj show {run_dir}` prints the command that reruns its config "
            "on the current code."
        )
    repo, prefix = _repository_with(git["snapshot"], experiment.get("base_dir"), experiment.get("mainfile", "main.py"))
    runs_root = os.path.dirname(run_dir)
    worktree = os.path.abspath(args.dir or os.path.join(runs_root, "reproductions", info.get("run_key", "run")))
    if os.path.exists(worktree) and os.listdir(worktree):
        raise MLProjError(f"{worktree} already exists: pass --dir with a new folder, or remove it.")
    _add_worktree(repo, worktree, git["snapshot"])
    main_file = os.path.join(worktree, prefix, experiment.get("mainfile", "main.py"))

    cwd = info.get("cwd") if os.path.isdir(info.get("cwd") or "") else os.getcwd()
    command = [sys.executable, main_file, record.get("command", ""), "with", os.path.join(run_dir, "config.json")]
    reproduces = {"run_id": record.get("_id", os.path.basename(run_dir)), "run_key": info.get("run_key"), "run_dir": run_dir}
    env = {**os.environ, "MLPROJ_RUNS_DIR": runs_root, REPRODUCES_ENV: json.dumps(reproduces)}
    before = set(os.listdir(runs_root))
    print(f"reproducing run {os.path.basename(run_dir)} at {git['snapshot'][:12]} in {worktree}", flush=True)
    status = subprocess.run([part for part in command if part], cwd=cwd, env=env).returncode
    new_dirs = [os.path.join(runs_root, d) for d in sorted(set(os.listdir(runs_root)) - before)]
    new_run = next((d for d in new_dirs if read_record(d, "info.json").get("reproduces", {}).get("run_key") == info.get("run_key")), None)
    if new_run is None:
        raise MLProjError(f"the reproduction ended (exit status {status}) without recording a run; see its output above.")
    same, different = compare_metrics(run_dir, new_run)
    print(f"run {os.path.basename(run_dir)} reproduced as run {os.path.basename(new_run)}: "
          f"{len(same)} metric series identical, {len(different)} different{': ' + ', '.join(different) if different else ''}")
    print(f"remove the worktree with: git -C {repo} worktree remove {worktree}")
    return status


def compare_metrics(run_a: str, run_b: str) -> tuple[list[str], list[str]]:
    """(identical, different) metric names of two run folders, comparing every logged value."""
    from mlproj.loading import read_record

    a, b = read_record(run_a, "metrics.json"), read_record(run_b, "metrics.json")
    same, different = [], []
    for name in sorted(set(a) | set(b)):
        series_a, series_b = a.get(name, {}), b.get(name, {})
        key = (series_a.get("steps"), series_a.get("values")) == (series_b.get("steps"), series_b.get("values"))
        (same if key else different).append(name)
    return same, different


def _repository_with(snapshot: str, base_dir: str | None, mainfile: str) -> tuple[str, str]:
    """(repository root, main file's folder inside it): the run's own repo when it is still there,
    else the repository of the current folder, as long as it holds `snapshot`."""
    from mlproj.record.gitpin import GitError, run_git

    for folder in (base_dir, os.getcwd()):
        if not folder or not os.path.isdir(folder):
            continue
        try:
            root = run_git(["rev-parse", "--show-toplevel"], folder)
            run_git(["cat-file", "-e", f"{snapshot}^{{commit}}"], root)
        except GitError:
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
    from mlproj.record.gitpin import GitError, run_git

    try:
        run_git(["worktree", "add", "--detach", worktree, snapshot], repo)
    except GitError as err:
        raise MLProjError(f"could not check out the snapshot into {worktree}: {err}") from None
