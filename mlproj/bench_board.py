"""`python -m mlproj.bench --board`: how fast `mlproj board` answers over a large runs dir.

It writes N finished runs (default 10,000) in the file layout mlproj records (Sacred's
FileStorageObserver files plus `metrics_summary.json`), each with a train series of `--steps`
logged steps (default 10,000), and one run with 10 metrics of 200,000 steps each. The files are
written directly, not through Sacred, so that making 10,000 runs takes seconds: runs with the
same series share one metrics.json through hard links (64 different series), which keeps the
disk use to tens of MB; each run's record is its own.

Then `mlproj board` serves that folder in its own process, and the bench measures:

  (a) the start: the seconds until the board answers (it reads every run once);
  (b) the runs table's first page: in headless Chromium when it is installed (navigation to the
      `load` event, so the page is in the browser), else over HTTP; the first time and the median
      of five more;
  (c) the long run's page, 10 metrics x 200,000 steps: in Chromium, navigation until uPlot has
      drawn every chart (the page notes the time); the first view (the server reads and
      downsamples the series) and a second (downsampled curves cached); over HTTP without Chromium;
  (d) the server's peak memory (VmHWM) after all of them, and its worker processes'.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from mlproj.util.series import SUMMARY_FILE, SUMMARY_VERSION, summarize_series

VARIANTS = 64  # different series among the runs; runs with the same one share its metrics.json
START = datetime.datetime(2026, 1, 1)


def _series_json(metrics: dict[str, tuple[list[int], list[float]]], stamp: str) -> tuple[bytes, dict[str, Any]]:
    """metrics.json's bytes (as mlproj writes it: no indentation) and its summaries."""
    record = {name: {"steps": steps, "timestamps": [stamp] * len(steps), "values": values} for name, (steps, values) in metrics.items()}
    return json.dumps(record).encode(), summarize_series(record)


def write_runs(runs_dir: Path, n_runs: int, n_steps: int, seed: int = 0) -> None:
    """`n_runs` finished runs of a sweep over lr and seed, each with train.loss at `n_steps` steps
    and validation.loss / validation.accuracy every 1,000 steps (see the module docstring)."""
    import numpy as np  # lazy: as the rest of the bench

    rng = np.random.default_rng(seed)
    shared = runs_dir / ".shared-series"
    shared.mkdir(parents=True)
    steps = list(range(1, n_steps + 1))
    evals = steps[999::1000] or [n_steps]
    variants = []
    for v in range(VARIANTS):
        loss = 2.3 * np.exp(-np.arange(n_steps) / n_steps * (2 + v / 16)) + rng.normal(0, 0.05, n_steps)
        accuracy = np.clip(1 - np.exp(-np.arange(1, len(evals) + 1) / (1 + v / 8)) + rng.normal(0, 0.01, len(evals)), 0, 1)
        data, summaries = _series_json({"train.loss": (steps, loss.tolist()), "validation.loss": (evals, (1.2 - accuracy).tolist()),
                                        "validation.accuracy": (evals, accuracy.tolist())}, START.isoformat())
        path = shared / f"metrics-{v}.json"
        path.write_bytes(data)
        st = path.stat()
        summary = json.dumps({"version": SUMMARY_VERSION, "metrics_json": {"size": st.st_size, "mtime_ns": st.st_mtime_ns}, "metrics": summaries})
        variants.append((path, summary))
    base = {"dataset": "mnist", "model": "lenet", "batch_size": 64, "optimizer": "adam", "n_epochs": 10, "device": "cpu"}
    for i in range(1, n_runs + 1):
        folder = runs_dir / str(i)
        folder.mkdir()
        config = {**base, "lr": [1e-4, 3e-4, 1e-3, 3e-3][i % 4], "seed": i // 4}
        start = START + datetime.timedelta(minutes=i)
        entry = {"experiment": {"name": "mlproj", "mainfile": "main.py", "base_dir": str(runs_dir), "sources": [], "dependencies": [], "repositories": []},
                 "command": "train", "host": {"hostname": "bench"}, "start_time": start.isoformat(), "heartbeat": (start + datetime.timedelta(hours=1)).isoformat(),
                 "stop_time": (start + datetime.timedelta(hours=1)).isoformat(), "status": "COMPLETED", "result": None,
                 "meta": {"command": "train", "options": {}, "config_updates": {"lr": config["lr"], "seed": config["seed"]}},
                 "resources": [], "artifacts": ["last.pt"], "captured_out": ""}
        info = {"run_key": f"bench-{i}", "benchmark": {"metric": "validation.accuracy", "lower_is_better": False},
                "sweep": {"name": f"sweep-{i // 100}", "trial": i % 100, "of": 100}}
        (folder / "run.json").write_text(json.dumps(entry))
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "info.json").write_text(json.dumps(info))
        source, summary = variants[i % VARIANTS]
        try:
            os.link(source, folder / "metrics.json")
        except OSError:  # no hard links here: a copy, and the summary then names the copy
            shutil.copy2(source, folder / "metrics.json")
            st = (folder / "metrics.json").stat()
            summary = json.dumps({**json.loads(summary), "metrics_json": {"size": st.st_size, "mtime_ns": st.st_mtime_ns}})
        (folder / SUMMARY_FILE).write_text(summary)


def write_long_run(runs_dir: Path, run_id: int, n_metrics: int = 10, n_steps: int = 200_000, seed: int = 1) -> int:
    """One run with `n_metrics` series of `n_steps` steps (a spike in each); the bytes of its metrics.json."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder = runs_dir / str(run_id)
    folder.mkdir()
    steps = list(range(n_steps))
    metrics = {}
    for m in range(n_metrics):
        values = np.exp(-np.arange(n_steps) / n_steps * 3) + rng.normal(0, 0.02, n_steps)
        values[rng.integers(n_steps)] += 2  # one spike: the drawn curve must show it
        metrics[f"train.metric{m}"] = (steps, values.tolist())
    data, summaries = _series_json(metrics, START.isoformat())
    (folder / "metrics.json").write_bytes(data)
    st = (folder / "metrics.json").stat()
    (folder / SUMMARY_FILE).write_text(json.dumps({"version": SUMMARY_VERSION, "metrics_json": {"size": st.st_size, "mtime_ns": st.st_mtime_ns},
                                                   "metrics": summaries}))
    start = START.isoformat()
    (folder / "run.json").write_text(json.dumps({"experiment": {"name": "long"}, "command": "train", "start_time": start, "stop_time": start,
                                                 "status": "COMPLETED", "artifacts": [], "meta": {}, "host": {}}))
    (folder / "config.json").write_text(json.dumps({"lr": 0.1, "seed": 0}))
    (folder / "cout.txt").write_text("".join(f"step {s}\n" for s in range(0, n_steps, 1000)))
    return len(data)


def _serve(runs_dir: Path) -> tuple[subprocess.Popen, str, float]:
    """`mlproj board runs_dir` in its own process: (the process, its address, seconds until it answered)."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "mlproj.cli", "board", str(runs_dir), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:
        found = re.search(r"open (http://\S+/)", line)
        if found:
            url = found.group(1)
            urllib.request.urlopen(url + "static/board.css", timeout=60).read()
            return process, url, time.perf_counter() - start
    raise RuntimeError(f"mlproj board {runs_dir} exited with {process.wait()} before serving")


def _peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024


def _children(pid: int) -> list[int]:
    """The server's worker processes (those that read long series)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in found if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]  # not multiprocessing's resource tracker


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of the server and its worker processes so far."""
    total = 0
    for p in [pid, *_children(pid)]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _http_seconds(url: str) -> float:
    start = time.perf_counter()
    urllib.request.urlopen(url, timeout=120).read()
    return time.perf_counter() - start


def _browser() -> Any:
    """Headless Chromium through Selenium, or None when either is missing."""
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        return None
    try:
        from selenium import webdriver
    except ImportError:
        return None
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def _table_in_browser(browser: Any, url: str) -> float:
    browser.get(url)  # returns once the page has loaded
    return browser.execute_script("const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime;") / 1000


def _run_page_in_browser(browser: Any, url: str, charts: int) -> float:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get("about:blank")
    browser.get(url)
    WebDriverWait(browser, 120, poll_frequency=0.05).until(lambda b: b.find_element(By.ID, "charts").get_attribute("data-drawn-ms"))
    drawn = len(browser.find_elements(By.CSS_SELECTOR, ".chart[data-drawn='1'] canvas"))
    if drawn != charts:
        raise RuntimeError(f"{url}: {drawn} charts drawn, {charts} expected")
    return int(browser.find_element(By.ID, "charts").get_attribute("data-drawn-ms")) / 1000


def measure_board(n_runs: int, n_steps: int) -> int:
    """Print the figures of the module docstring; 0."""
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = Path(tmp) / "runs"
        start = time.perf_counter()
        write_runs(runs_dir, n_runs, n_steps)
        long_id = n_runs + 1
        size = write_long_run(runs_dir, long_id)
        print(f"board: {n_runs:,} runs with a train series of {n_steps:,} steps, and run {long_id} with 10 metrics x 200,000 steps "
              f"({size / 1e6:.0f} MB of metrics.json); written in {time.perf_counter() - start:.1f} s; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        process, url, started = _serve(runs_dir)
        browser = None
        try:
            print(f"(a) start: answering after {started:.1f} s (reads every run once)")
            browser = _browser()
            where = "in Chromium (navigation to load)" if browser else "over HTTP (no Chromium here)"
            if browser:
                table = [_table_in_browser(browser, url) for _ in range(6)]
            else:
                table = [_http_seconds(url) for _ in range(6)]
            print(f"(b) runs table, first page of 50, {where}: first {table[0]:.2f} s, then median {statistics.median(table[1:]):.2f} s")
            page = f"{url}runs/{long_id}"
            views, cpu = [], []
            for _ in range(3):
                before = _cpu_seconds(process.pid)
                if browser:
                    views.append(_run_page_in_browser(browser, page, 10))
                else:
                    views.append(_http_seconds(page) + _http_seconds(f"{url}api/runs/{long_id}/curves"))
                cpu.append(_cpu_seconds(process.pid) - before)
            where = "in Chromium (navigation until uPlot drew all 10 charts)" if browser else "over HTTP (page and curves)"
            print(f"(c) run page, 10 metrics x 200,000 steps, {where}: first view {views[0]:.2f} s "
                  f"(reads and downsamples 2,000,000 points; server CPU {cpu[0]:.2f} s in {len(_children(process.pid)) + 1} processes), "
                  f"then {statistics.median(views[1:]):.2f} s (curves cached)")
            workers = [_peak_mb(child) for child in _children(process.pid)]
            shown = f"; worker processes: {len(workers)}, {max(workers):.0f} MB at most each" if workers else ""
            print(f"(d) server peak memory (VmHWM): {_peak_mb(process.pid):.0f} MB{shown}")
        finally:
            if browser is not None:
                browser.quit()
            process.terminate()
            process.wait(timeout=30)
    return 0
