"""The one reader of a run folder (Sacred's FileStorageObserver layout, as mlproj writes it).

Every command that looks at recorded runs (`mlproj runs`, `show`, `compare`, `sync`, `reproduce`,
the sweep's skip rule) and `mlproj.load_run` read a folder through `read_run`, and get one `Run`.
A run folder is a folder holding `run.json`; `config.json`, `info.json`, `metrics.json` and
`cout.txt` beside it are read when present (metrics and output on first use).

Listing needs only each metric's summary (`mlproj.util.series`). A run recorded by mlproj keeps one
beside metrics.json (`metrics_summary.json`, naming the size and mtime of the metrics.json it
describes); for any other run, or when metrics.json changed since, `read_runs` reads metrics.json
once, keeps only its summary, and caches it under `<runs_dir>/.mlproj-cache/summaries.json`, keyed
by the size and mtime of metrics.json, so a file that changes (a live run, a file replaced by
rename) is read again. Many files to read are shared among worker processes, one per CPU (up to 8).
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

from mlproj.errors import MLProjError
from mlproj.runs.entry import parse_time, run_from_entry
from mlproj.runs.record import Run, Series
from mlproj.util.files import atomic_write
from mlproj.util.series import SUMMARY_FILE, SUMMARY_VERSION, summarize_series

CACHE_FILE = os.path.join(".mlproj-cache", "summaries.json")


# The most of a record file read whole (a metrics.json of a long run is ~100 MB); a larger one is
# refused rather than filling the memory.
RECORD_BYTES = 1 << 30


def open_record(path: str) -> BinaryIO | None:
    """The record file `path` (run.json, info.json, config.json, metrics.json, metrics_summary.json,
    cout.txt...) opened to read bytes; None when it does not exist.

    A run folder may come from anywhere, so this is the one way its files are opened: never through
    a symbolic link (which could show any file of this machine) and only a regular file (a FIFO or
    a device would block the reader, or never end).

    Raises:
        MLProjError: when `path` is a symbolic link or not a regular file, or cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise MLProjError(f"{path} is a symbolic link, which mlproj does not follow in a run folder: replace it with the file.") from None
        raise MLProjError(f"{path} cannot be read ({err.strerror}): check its permissions.") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise MLProjError(f"{path} is not a regular file (a FIFO, a device or a folder): the run record is damaged; move that run folder away.")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_record(path: str, limit: int = RECORD_BYTES) -> bytes | None:
    """The whole record file `path`, opened by `open_record`; None when it does not exist.

    Raises:
        MLProjError: as `open_record`, or when the file holds more than `limit` bytes.
    """
    f = open_record(path)
    if f is None:
        return None
    try:
        with f:
            data = f.read(limit + 1) if os.fstat(f.fileno()).st_size <= limit else None
    except OSError as err:
        raise MLProjError(f"{path} cannot be read ({err.strerror}): check its permissions.") from None
    if data is None or len(data) > limit:
        raise MLProjError(f"{path} holds more than {limit} bytes, more than mlproj reads whole: the run record is damaged; move that run folder away.")
    return data


def read_json(path: str, default: Any) -> Any:
    """The JSON record file `path` (read by `read_record`); `default` when it does not exist.

    Raises:
        MLProjError: when the file is not valid JSON or cannot be read.
    """
    data = read_record(path)
    if data is None:
        return default
    try:
        return json.loads(data)
    except ValueError as err:
        raise MLProjError(f"{path} is not valid JSON ({err}): the run record is damaged; move that run folder away.") from None


def series_from(record: dict[str, Any]) -> Series:
    """A metric's `Series` from its record ({steps, values, timestamps}, as both stores keep it)."""
    return Series(list(record.get("steps", [])), list(record.get("values", [])), [parse_time(t) for t in record.get("timestamps", [])])


def read_metrics(path: str) -> dict[str, Series]:
    """Every metric series of the run folder `path` (its metrics.json); {} when it logged none.

    Raises:
        MLProjError: when metrics.json is damaged (not JSON, a timestamp that is no time) or cannot be read.
    """
    file = os.path.join(path, "metrics.json")
    metrics = read_json(file, {})
    try:
        return {name: series_from(m) for name, m in metrics.items()}
    except MLProjError as err:
        raise MLProjError(f"{file}: a timestamp {err}: the run record is damaged; move that run folder away.") from None


def metrics_key(path: str) -> dict[str, int] | None:
    """The size and mtime (ns) of the run folder's metrics.json, which a summary of it names; None without one."""
    try:
        st = os.stat(os.path.join(path, "metrics.json"))
    except FileNotFoundError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_summaries(path: str, cached: dict[str, Any] | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """The metric summaries of the run folder `path`, and the cache entry to keep for it.

    They come from the folder's own summary file when it describes the metrics.json there now,
    else from `cached` (a cache entry: {size, mtime_ns, metrics}) when it does, else from reading
    metrics.json (the returned entry is then new; None when the folder's own summary was used).
    """
    key = metrics_key(path)
    if key is None:
        return {}, None
    known = _known_summaries(path, key, cached)
    if known is not None:
        return known
    summaries = summarize_metrics_json(path)
    return summaries, {**key, "metrics": summaries}


def _known_summaries(path: str, key: dict[str, int], cached: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None] | None:
    """`read_summaries`' answer when the folder's own summary or `cached` describes the metrics.json
    that `key` names (its size and mtime); None when metrics.json must be read."""
    own = _read_optional_json(os.path.join(path, SUMMARY_FILE))
    if isinstance(own, dict) and own.get("version") == SUMMARY_VERSION and own.get("metrics_json") == key:
        return own["metrics"], None
    if isinstance(cached, dict) and cached.get("size") == key["size"] and cached.get("mtime_ns") == key["mtime_ns"]:
        return cached["metrics"], cached
    return None


def summarize_metrics_json(path: str) -> dict[str, dict[str, Any]]:
    """The summary of every metric in the run folder `path`'s metrics.json, read now.

    Raises:
        MLProjError: when metrics.json is damaged or cannot be read.
    """
    return summarize_series(read_metric_values(path))


def read_metric_values(path: str) -> dict[str, dict[str, Any]]:
    """Each metric's steps and values ({name: {steps, values}}) of the run folder `path`, without
    their timestamps (half the cost of reading metrics.json); {} when it logged none.

    Raises:
        MLProjError: when metrics.json is damaged or cannot be read.
    """
    return _read_steps_and_values(os.path.join(path, "metrics.json"))


# A series' timestamps, which a summary does not need: half of what parsing metrics.json costs.
_TIMESTAMPS = re.compile(r'"timestamps":\s*\[[^\]]*\]')


def _read_steps_and_values(path: str) -> dict[str, Any]:
    """metrics.json without its timestamps (read whole, as `read_json` reads it, if that fails)."""
    try:
        data = read_record(path)
        return {} if data is None else json.loads(_TIMESTAMPS.sub('"timestamps": []', data.decode()))
    except ValueError:
        return read_json(path, {})  # a damaged file: read_json says so in one line


def _read_optional_json(path: str) -> Any:
    """A JSON file that only saves time (a summary, the cache): None when missing or unreadable."""
    try:
        data = read_record(path)
        return None if data is None else json.loads(data)
    except (MLProjError, ValueError):
        return None


def read_output_tail(path: str, start: int | None = None, limit: int = 65536) -> tuple[str, int]:
    """What the run folder `path` printed (cout.txt), for a page that follows a live run: the text
    from byte `start` on, at most `limit` bytes (the last `limit` bytes when `start` is None or lies
    past the end of a file that shrank), and the byte offset to ask from next time.

    A live run redraws its last, unfinished line (a progress bar: `RunFolderObserver.save_cout`
    rewrites that line in place), so the offset returned is where the text's last line begins when
    that line has no newline yet: the next answer starts with the line again, whole. A client keeps
    what it showed up to its last newline and replaces the rest with each answer. An offset below
    `start` means the file shrank (it was written anew): the text is its tail, to replace all that
    was shown. The text begins and ends on UTF-8 character boundaries; a line longer than `limit`
    comes in pieces, each ended by a newline. ("", 0) without cout.txt.

    Raises:
        MLProjError: when cout.txt is a symbolic link or not a regular file (`open_record`).
    """
    f = open_record(os.path.join(path, "cout.txt"))
    if f is None:
        return "", 0
    with f:
        size = f.seek(0, os.SEEK_END)
        begin = max(size - limit, 0) if start is None or start > size else start
        f.seek(begin)
        data = f.read(limit)
    return _output_text(data, begin, whole=begin + len(data) >= size)


def _output_text(data: bytes, begin: int, whole: bool) -> tuple[str, int]:
    """`read_output_tail`'s answer from the bytes `data` read at offset `begin` (`whole`: up to
    the file's end), cut to whole UTF-8 characters."""
    first = 0
    while first < min(len(data), 3) and data[first] & 0xC0 == 0x80:  # a tail that begins inside a character
        first += 1
    end = len(data)
    for back in range(1, min(len(data) - first, 4) + 1):  # a character cut by the read's end is read next time
        byte = data[-back]
        if byte & 0xC0 != 0x80:
            if byte >= 0xC0 and back < (2 if byte < 0xE0 else 3 if byte < 0xF0 else 4):
                end -= back
            break
    text = data[first:end].decode("utf-8", errors="replace")
    newline = data.rfind(b"\n", first, end)
    if newline >= 0:
        return text, begin + newline + 1
    if whole:
        return text, begin + first  # one unfinished line: sent again whole
    return text + "\n", begin + end  # a piece of a line longer than `limit`: shown as a line of its own


def _read_captured_out(path: str) -> str:
    data = read_record(os.path.join(path, "cout.txt"))
    return "" if data is None else data.decode("utf-8", errors="replace")


def read_run(path: str | os.PathLike) -> Run:
    """The run recorded in the folder `path`; its metrics, their summaries and output are read on first use.

    Raises:
        MLProjError: when `path` holds no run.json, or a file of the record is damaged.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(os.path.join(path, "run.json")):
        raise MLProjError(f"{path} is not a run folder (no run.json in it): pass a folder such as runs/1.")
    folder = os.path.basename(path)
    return run_from_entry(
        read_json(os.path.join(path, "run.json"), {}),
        id=int(folder) if is_run_id(folder) else folder,
        config=read_json(os.path.join(path, "config.json"), {}),
        info=read_json(os.path.join(path, "info.json"), {}),
        path=path,
        load_metrics=lambda: read_metrics(path),
        load_captured_out=lambda: _read_captured_out(path),
        load_summaries=lambda: read_summaries(path)[0],
    )


def is_run_id(name: str) -> bool:
    """Whether the folder name `name` is a run id: a whole number written as Sacred names run folders
    (ASCII digits, no leading zero). Not `str.isdigit`: it also takes '²', which `int` refuses, and
    '٢', which `int` reads as 2, another run's id; nor `01`, which `int` reads as run 1's."""
    return name.isascii() and name.isdigit() and (name == "0" or not name.startswith("0"))


def run_ids(runs_dir: str) -> list[int]:
    """The ids of the run folders in `runs_dir`, ascending: the folders named by a run id (`is_run_id`)
    that hold run.json (a folder without it is a run starting, or not a run). The one rule for
    listing run folders; [] when `runs_dir` cannot be listed."""
    try:
        names = os.listdir(runs_dir)
    except OSError:
        return []
    return sorted(int(name) for name in names if is_run_id(name) and os.path.isfile(os.path.join(runs_dir, name, "run.json")))


def read_runs(runs_dir: str, *, summaries: bool = True, on_damaged: Callable[[MLProjError], None] | None = None) -> list[Run]:
    """Every run folder (`<runs_dir>/<integer id>/run.json`) under `runs_dir`, by id.

    With `summaries` (for listing), each run's metric summaries are read now, through the cache
    (see the module docstring), which is updated once at the end; without, on first use.

    Args:
        on_damaged: when given, a run whose record is damaged (`read_run` raises) is left out and
            its error handed to `on_damaged` (a listing shows the others); by default it is raised.

    Raises:
        MLProjError: when `runs_dir` is not a folder, or (without `on_damaged`) a record is damaged.
    """
    if not os.path.isdir(runs_dir):
        raise MLProjError(f"runs dir {runs_dir} does not exist: pass the folder your runs were recorded in (default $MLPROJ_RUNS_DIR or ./runs).")
    runs = []
    for i in run_ids(runs_dir):
        try:
            runs.append(read_run(os.path.join(runs_dir, str(i))))
        except MLProjError as err:
            if on_damaged is None:
                raise
            on_damaged(err)
    if summaries:
        _load_summaries(runs, runs_dir)
    return runs


def _load_summaries(runs: list[Run], runs_dir: str) -> None:
    cache_path = os.path.join(runs_dir, CACHE_FILE)
    cache = _read_optional_json(cache_path)
    old = cache.get("runs", {}) if isinstance(cache, dict) and cache.get("version") == SUMMARY_VERSION else {}
    new, unread = {}, []
    for run in runs:
        key = metrics_key(run.path)
        known = ({}, None) if key is None else _known_summaries(run.path, key, old.get(str(run.id)))
        if known is None:
            unread.append((run, key))
            continue
        run._summaries, entry = known
        if entry is not None:
            new[str(run.id)] = entry
    for (run, key), summaries in zip(unread, _summarize_all([run.path for run, _ in unread]), strict=True):
        run._summaries = summaries
        new[str(run.id)] = {**key, "metrics": summaries}
    if unread or new.keys() != old.keys():
        _write_cache(cache_path, {"version": SUMMARY_VERSION, "runs": new})


# Reading a metrics.json is parsing its numbers, CPU-bound: with at least PARALLEL_FROM files to
# read, worker processes share them (fewer would not pay for starting the workers). Each worker
# holds one file at a time (a few MB for a long series) besides its interpreter.
PARALLEL_FROM = 32
MAX_WORKERS = 8


def _summarize_all(paths: list[str]) -> list[dict[str, dict[str, Any]]]:
    """`summarize_metrics_json` of each run folder in `paths`, in order."""
    workers = min(usable_cpus(), MAX_WORKERS)
    if len(paths) >= PARALLEL_FROM and workers > 1:
        from concurrent.futures import ProcessPoolExecutor  # lazy: imports a cached listing does not need

        try:
            pool = ProcessPoolExecutor(workers, mp_context=_worker_context())
        except (OSError, NotImplementedError):
            pass  # no worker processes on this system (no semaphores, say): read them here
        else:
            with pool:
                return list(pool.map(summarize_metrics_json, paths, chunksize=8))
    return [summarize_metrics_json(path) for path in paths]


def _worker_context() -> Any:
    """Fork the workers from a single-threaded process (`mlproj runs`: no start-up cost); spawn them
    from one running threads (a notebook, an app), which a fork could copy mid-lock."""
    import multiprocessing  # lazy: imports that a cached listing does not need

    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _write_cache(path: str, cache: dict[str, Any]) -> None:
    """Keep the cache for next time; a runs dir we may not write to only costs the next listing time."""
    text = json.dumps(cache)  # in one piece: json.dump's chunked encoder is pure Python, several times slower
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, lambda f: f.write(text), mode="w")
    except OSError:
        pass
