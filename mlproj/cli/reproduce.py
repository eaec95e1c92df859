"""`mlproj reproduce RUN`: re-run a recorded run from its pinned source, config and seed.

The run's snapshot is checked out into a new Git worktree (`mlproj.runs.reproduce`); its main file
runs there with the recorded command and `config.json` (seed included), from the folder the run was
started in, recording into the same runs dir. The new run records `reproduces` in its info; the
metrics of both runs are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from mlproj.errors import MLProjError
from mlproj.runs.reader import read_run
from mlproj.runs.reproduce import check_out, compare_metrics, find_reproduction, pinned_snapshot
from mlproj.train.config import runs_dir
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
    run_dir = original.path
    snapshot = pinned_snapshot(original)
    runs_root = os.path.dirname(run_dir)
    worktree = os.path.abspath(args.dir or os.path.join(runs_root, "reproductions", original.run_key or "run"))
    repo, main_file = check_out(original, snapshot, worktree)

    cwd = original.info.get("cwd") if os.path.isdir(original.info.get("cwd") or "") else os.getcwd()
    command = [sys.executable, main_file, original.command, "with", os.path.join(run_dir, "config.json")]
    reproduces = {"run_id": os.path.basename(run_dir), "run_key": original.run_key, "run_dir": run_dir}
    env = {**os.environ, "MLPROJ_RUNS_DIR": runs_root, REPRODUCES_ENV: json.dumps(reproduces)}
    before = set(os.listdir(runs_root))
    print(f"reproducing run {os.path.basename(run_dir)} at {snapshot[:12]} in {worktree}", flush=True)
    status = subprocess.run([part for part in command if part], cwd=cwd, env=env).returncode
    new_run = find_reproduction(runs_root, before, original.run_key)
    if new_run is None:
        raise MLProjError(f"the reproduction ended (exit status {status}) without recording a run; see its output above.")
    same, different = compare_metrics(original, new_run)
    print(f"run {os.path.basename(run_dir)} reproduced as run {new_run.id}: "
          f"{len(same)} metric series identical, {len(different)} different{': ' + ', '.join(different) if different else ''}")
    print(f"remove the worktree with: git -C {repo} worktree remove {worktree}")
    return status
