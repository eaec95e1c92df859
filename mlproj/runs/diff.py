"""What differs between two runs: the config keys whose values differ, and the source between their Git pins.

A run started by mlproj pins its working tree as a commit under `refs/mlproj/runs/<run_key>` and
records it in info.json (`git.snapshot`, `git.ref`; see `mlproj.record.gitpin`), but not which
repository holds it. The repository diffed in is the first, among the folders the runs name (their
main file's folder, the folder they were started in) and then the current folder, that holds both
snapshots: so a runs dir read in the project it was recorded from, or in a clone that fetched
`refs/mlproj/runs/*`, diffs as it did on the day.

A runs dir may come from anywhere, so what it names is not trusted: a repository inside a run folder
is never one of them, a pin must be a commit id, and git reads the repositories with their own
programs turned off (`mlproj.util.git.run_git`'s `untrusted`, plus `--no-ext-diff --no-textconv`).

`mlproj diff` prints it; any other front end (the board) shows the same `RunDiff`.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from mlproj.runs.query import differing_keys
from mlproj.runs.record import Run
from mlproj.util.git import NO_GIT, GitError, has_commit, repository_root, run_git


class _Missing:
    """The value of a config key a run does not have; reads as `(absent)`."""

    def __repr__(self) -> str:
        return "(absent)"

    __str__ = __repr__

    def __reduce__(self) -> str:
        return "MISSING"  # a copy or a pickle is the one sentinel, so `is MISSING` holds


MISSING = _Missing()

# A pin as `mlproj.record.gitpin` records it: a commit id (SHA-1 or SHA-256), never a ref or an option.
_COMMIT_ID = re.compile(r"[0-9a-f]{40,64}")


@dataclass
class RunDiff:
    """What differs between two runs A and B.

    Attributes:
        config: `(key, value in A, value in B)` for each flattened (dotted) config key whose values
            differ, sorted by key; `MISSING` stands for a key the run does not have.
        source: the `git diff` of A's pinned source against B's ("" when identical, or when there is
            no source diff: see `note`); with `stat=True`, `git diff --stat`.
        note: why the source diff is absent, in one line (a run not pinned, no repository here holds
            a pin, git missing); None when `source` is the diff.
        cut: whether `source` is the diff's first `limit` characters only (see `diff_runs`).
    """

    config: list[tuple[str, Any, Any]]
    source: str
    note: str | None
    cut: bool = False


def diff_runs(a: Run, b: Run, *, stat: bool = False, limit: int | None = None) -> RunDiff:
    """The config keys that differ between runs `a` and `b`, and the diff between their pinned sources.

    A run without a pin, a pin no repository here holds, or a missing git gives the config diff and
    a `note` saying why there is no source diff; this never raises for them.

    With `limit` (a server's page), the source diff is its first `limit` characters (`cut` says
    whether there was more; git is stopped there), and it is kept in this process for the next
    call with the same runs' folders and pins (a pin is a commit: its diff never changes). Without,
    it is the whole diff, read now.

    Example:
        >>> d = diff_runs(read_run("runs/1"), read_run("runs/2"))  # doctest: +SKIP
        >>> d.config, d.note
        ([('lr', 0.001, 0.003)], None)
    """
    flat_a, flat_b = a.flat_config(), b.flat_config()
    config = [(key, flat_a.get(key, MISSING), flat_b.get(key, MISSING)) for key in differing_keys([a, b])]
    source, note, cut = _source_diff(a, b, stat, limit)
    return RunDiff(config=config, source=source, note=note, cut=cut)


DIFFS_KEPT = 16  # bounded source diffs kept (see `diff_runs`): at most DIFFS_KEPT * limit characters
_diffs: OrderedDict[tuple[Any, ...], tuple[str, bool]] = OrderedDict()
_diffs_lock = threading.Lock()


def _source_diff(a: Run, b: Run, stat: bool, limit: int | None) -> tuple[str, str | None, bool]:
    """(diff, None, whether it was cut at `limit`), or ("", why there is none, False)."""
    note = _no_pins(a, b)
    if note is not None:
        return "", note, False
    pins = (a.info["git"]["snapshot"], b.info["git"]["snapshot"])
    key = (_folders(a, b), tuple(os.path.realpath(run.path) for run in (a, b) if run.path), pins, stat, limit)
    with _diffs_lock:
        if key in _diffs:
            _diffs.move_to_end(key)
            source, cut = _diffs[key]
            return source, None, cut
    source, note, cut = _read_source_diff(a, b, stat, limit)
    if note is None and limit is not None:
        with _diffs_lock:
            _diffs[key] = (source, cut)
            while len(_diffs) > DIFFS_KEPT:
                _diffs.popitem(last=False)
    return source, note, cut


def _no_pins(a: Run, b: Run) -> str | None:
    """Why the runs' records give no two pins to diff, in one line; None when they do."""
    unpinned = [f"run {run.id} is not pinned: {run.missing_pin}" for run in (a, b) if run.missing_pin]
    if unpinned:
        return "; ".join(unpinned)
    damaged = [f"run {run.id}'s pin {str(pin)[:80]!r} is not a commit id (its info.json is damaged)"
               for run in (a, b) if not isinstance(pin := run.info["git"]["snapshot"], str) or not _COMMIT_ID.fullmatch(pin)]
    return "; ".join(damaged) or None


def _read_source_diff(a: Run, b: Run, stat: bool, limit: int | None) -> tuple[str, str | None, bool]:
    """`_source_diff`'s answer, from git now."""
    snapshot_a, snapshot_b = a.info["git"]["snapshot"], b.info["git"]["snapshot"]
    if shutil.which("git") is None:
        return "", NO_GIT, False
    roots = _repositories(a, b)
    root = next((r for r in roots if has_commit(r, snapshot_a) and has_commit(r, snapshot_b)), None)
    if root is None:
        return "", _not_found(a, b, roots), False
    args = ["diff", "--no-color", "--no-ext-diff", "--no-textconv", *(["--stat"] if stat else []), "--end-of-options", snapshot_a, snapshot_b]
    try:
        # One character past `limit` tells a diff cut there from one exactly that long.
        source = run_git(args, cwd=root, strip=False, untrusted=True, limit=None if limit is None else limit + 1)
    except GitError as err:
        return "", str(err), False
    if limit is not None and len(source) > limit:
        return source[:limit], None, True
    return source, None, False


def _folders(a: Run, b: Run) -> tuple[str, ...]:
    """The folders whose repositories may hold the runs' pins, most likely first: the folders the
    runs name (their main file's, the one they started in), then the current folder."""
    named = (folder for run in (a, b) for folder in (run.experiment.get("base_dir"), run.info.get("cwd")))
    return (*(folder for folder in named if isinstance(folder, str) and folder), os.getcwd())


def _repositories(a: Run, b: Run) -> list[str]:
    """The roots of the Git work trees of `_folders`, each once; never one inside a run folder
    (its files came with the record)."""
    run_folders = [os.path.realpath(run.path) for run in (a, b) if run.path]
    roots: list[str] = []
    for folder in _folders(a, b):
        root = repository_root(folder) if os.path.isdir(folder) else None
        if root is not None and root not in roots and not any(_inside(root, run_folder) for run_folder in run_folders):
            roots.append(root)
    return roots


def _inside(path: str, folder: str) -> bool:
    """Whether `path` is the folder `folder` or lies below it (symbolic links resolved)."""
    path = os.path.realpath(path)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _not_found(a: Run, b: Run, roots: list[str]) -> str:
    """The note when no repository in `roots` holds both pins: which pin is missing where, and what to do."""
    looked = f"looked in {', '.join(roots)}" if roots else "the runs' folders and the current folder are in no Git repository"
    missing = [run for run in (a, b) if not any(has_commit(root, run.info["git"]["snapshot"]) for root in roots)]
    if missing:
        pins = " and ".join(f"run {run.id}'s pin {run.info['git'].get('ref') or run.info['git']['snapshot'][:12]}" for run in missing)
        what = f"no Git repository here holds {pins}"
    else:
        what = f"the pins of run {a.id} and run {b.id} lie in different repositories"
    return (f"{what} ({looked}): run `mlproj diff` inside the repository the runs were started from, or a clone "
            "that fetched refs/mlproj/runs/*.")
