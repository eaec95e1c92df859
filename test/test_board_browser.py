"""mlproj board in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`),
driven by Selenium, against the board served by waitress as `mlproj board` serves it.

Each test looks at what a person sees: the text, a drawn chart canvas, a config value `<script>`
shown as text. A screenshot of each page type is saved into the test's folder, and into
$MLPROJ_BOARD_SCREENSHOTS when set (the README's pictures are made that way). `make test-browser`
installs Chromium when it is missing and runs these tests.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import write_run

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("needs Debian's chromium and chromium-driver: `make test-browser` installs them", allow_module_level=True)

from selenium import webdriver  # noqa: E402  (after the skip: selenium is a dev dependency)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

BENCHMARK = {"metric": "validation.accuracy", "lower_is_better": False}
NOW = datetime.now(timezone.utc).replace(tzinfo=None)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def pinned_sources(tmp_path: Path) -> tuple[Path, str, str]:
    """A repository with two commits of a small train.py: the snapshots two runs pinned."""
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text("def train(lr):\n    loss = 1.0\n    return loss * lr\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    first = git(repo, "rev-parse", "HEAD")
    (repo / "train.py").write_text("def train(lr, warmup=100):\n    loss = 1.0 - 1 / warmup\n    return loss * lr\n")
    git(repo, "commit", "-qam", "warm-up")
    return repo, first, git(repo, "rev-parse", "HEAD")


def record(folder: Path, **changes) -> None:
    path = folder / "run.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight runs: a sweep over lr with 2 seeds (two pinned to different snapshots), a study's
    trials, one with a config value `<script>`, one RUNNING, and long series."""
    tmp = tmp_path_factory.mktemp("board")
    repo, first, second = pinned_sources(tmp)
    runs = tmp / "runs"
    for i in range(1, 9):
        lr, seed = [0.1, 0.01, 0.001][i % 3], i % 2
        steps = 3000
        loss = [2.0 * math.exp(-k / (400 / lr ** 0.3)) + 0.05 * math.sin(k / 7 + seed) + 0.02 * i for k in range(steps)]
        if i == 1:
            loss[1700] = 3.5  # a spike the downsampled curve must keep
        accuracy = [min(0.99, 0.5 + 0.45 * (1 - math.exp(-k / 3)) - 0.01 * seed + 0.002 * i) for k in range(10)]
        info = {"run_key": f"2026-key-{i}", "benchmark": BENCHMARK, "sweep": {"name": "lr-sweep", "trial": i, "of": 8}, "cwd": str(repo)}
        if i in (1, 2):
            info["git"] = {"snapshot": [first, second][i - 1], "head": [first, second][i - 1], "branch": "main", "dirty": False,
                           "ref": f"refs/mlproj/runs/2026-key-{i}"}
        if i >= 6:
            info.pop("sweep")
            info["tune"] = {"study": "tune-digits", "trial": i - 6, "params": {"lr": lr}, "pruned": i == 8}
        folder = write_run(runs, i, {"lr": lr, "seed": seed, "model": "<script>alert(1)</script>" if i == 5 else "lenet",
                                     "batch_size": 64, "optimizer": {"name": "adam", "betas": [0.9, 0.999]}},
                           {"train.loss": loss, "lr": [lr] * steps}, info=info)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["validation.accuracy"] = {"steps": list(range(300, 3001, 300)), "values": accuracy, "timestamps": [""] * 10}
        (folder / "metrics.json").write_text(json.dumps(metrics))
        record(folder, result=max(accuracy), experiment={"name": "mlproj", "mainfile": "main.py", "base_dir": str(repo)})
        (folder / "cout.txt").write_text("".join(f"epoch {e}: train.loss {loss[e * 300]:.4f} validation.accuracy {accuracy[e]:.4f}\n" for e in range(10)))
        (folder / "last.pt").write_bytes(b"\0" * 2048)
    record(runs / "4", status="RUNNING", stop_time=None, heartbeat=NOW.isoformat(), start_time=(NOW - timedelta(minutes=12)).isoformat())
    return runs


@pytest.fixture(scope="module")
def board(runs: Path) -> Iterator[str]:
    """The board over `runs`, served by waitress on a free loopback port, as `mlproj board` does."""
    import waitress

    from mlproj.board import create_app

    server = waitress.create_server(create_app(runs), host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000",
                     "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def screenshot(browser: webdriver.Chrome, tmp_path: Path, name: str) -> None:
    """Save the whole page (its full height) as `name`.png, into the test's folder and the README's when asked."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(max(height + 20, 600), 2400))
    for folder in [tmp_path, *([Path(os.environ["MLPROJ_BOARD_SCREENSHOTS"])] if os.environ.get("MLPROJ_BOARD_SCREENSHOTS") else [])]:
        folder.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(folder / f"{name}.png"))
    browser.set_window_size(1400, 1000)


def drawn_charts(browser: webdriver.Chrome, count: int) -> list:
    """The chart boxes once `count` of them hold a drawn canvas (uPlot draws into one per chart)."""
    WebDriverWait(browser, 20).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".chart[data-drawn='1'] canvas")) >= count)
    return browser.find_elements(By.CSS_SELECTOR, ".chart[data-drawn='1']")


def canvas_has_ink(browser: webdriver.Chrome, chart) -> bool:
    """Whether the chart's canvas holds drawn pixels (not only a blank area)."""
    return browser.execute_script(
        "const c = arguments[0].querySelector('canvas'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n > 500;", chart)


def test_board_browser_table_to_run_to_compare(browser, board: str, tmp_path: Path) -> None:
    browser.get(board + "/")
    assert "8 of 8 runs" in browser.find_element(By.ID, "count").text
    headers = [th.text.rstrip(" ▼▲") for th in browser.find_elements(By.CSS_SELECTOR, "table.runs thead th")][1:]
    assert headers[:3] == ["id", "validation.accuracy best", "validation.accuracy last"] and "lr" in headers
    assert "<script>alert(1)</script>" in browser.find_element(By.TAG_NAME, "tbody").text  # shown as text, not run
    screenshot(browser, tmp_path, "runs")

    browser.find_element(By.LINK_TEXT, "validation.accuracy best").click()  # best first
    first = browser.find_element(By.CSS_SELECTOR, "tbody tr .run-link").text
    best = browser.find_element(By.CSS_SELECTOR, "td.best")
    assert best.find_element(By.XPATH, "..").find_element(By.CSS_SELECTOR, ".run-link").text == first

    browser.find_element(By.CSS_SELECTOR, ".run-link[href='/runs/1']").click()
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("run 1")
    charts = drawn_charts(browser, 3)
    assert {c.get_attribute("data-metric") for c in charts} == {"train.loss", "lr", "validation.accuracy"}
    assert all(canvas_has_ink(browser, c) for c in charts)
    loss = next(c for c in charts if c.get_attribute("data-metric") == "train.loss")
    assert "3,000 points logged" in loss.text
    assert "epoch 9: train.loss" in browser.find_element(By.ID, "output").text
    assert "main.py train with lr=0.01 seed=1" in browser.find_element(By.ID, "rerun").text
    assert browser.find_element(By.LINK_TEXT, "last.pt").get_attribute("href").endswith("/runs/1/artifacts/last.pt")
    screenshot(browser, tmp_path, "run")

    browser.back()
    browser.back()
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    for run_id in ("1", "2"):
        browser.find_element(By.CSS_SELECTOR, f"input.pick[value='{run_id}']").click()
    assert "runs 1, 2" in browser.find_element(By.ID, "selection").text
    browser.find_element(By.ID, "compare").click()
    assert browser.find_element(By.TAG_NAME, "h1").text == "Compare runs 1, 2"
    assert [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#config-diff tbody th")] == ["lr", "seed"]
    diff = browser.find_element(By.ID, "diff").text
    assert "+def train(lr, warmup=100):" in diff and "-def train(lr):" in diff
    charts = drawn_charts(browser, 3)
    assert all(canvas_has_ink(browser, c) for c in charts)
    screenshot(browser, tmp_path, "compare")


def test_board_browser_compare_groups_by_seed_with_bands(browser, board: str, tmp_path: Path) -> None:
    browser.get(board + "/compare?" + "&".join(f"run={i}" for i in range(1, 6)) + "&group=seed")
    groups = browser.find_element(By.ID, "groups").text
    assert "±" in groups
    charts = drawn_charts(browser, 3)
    assert all(canvas_has_ink(browser, c) for c in charts) and "mean ± std over seed" in charts[0].text
    screenshot(browser, tmp_path, "compare-grouped")


def test_board_browser_running_run_updates_by_itself(browser, board: str, runs: Path) -> None:
    browser.get(board + "/runs/4")
    assert browser.find_element(By.ID, "status").text == "RUNNING"
    drawn_charts(browser, 3)
    with open(runs / "4" / "cout.txt", "a") as f:
        f.write("epoch 10: a line written while the page is open\n")
    record(runs / "4", status="COMPLETED", stop_time=(NOW + timedelta(minutes=5)).isoformat())
    WebDriverWait(browser, 15).until(lambda b: b.find_element(By.ID, "status").text == "COMPLETED")
    assert "a line written while the page is open" in browser.find_element(By.ID, "output").text


def test_board_browser_sweep_and_study_pages(browser, board: str, tmp_path: Path) -> None:
    browser.get(board + "/sweeps")
    assert "lr-sweep" in browser.find_element(By.ID, "sweeps").text and "tune-digits" in browser.find_element(By.ID, "studies").text
    screenshot(browser, tmp_path, "sweeps")
    browser.find_element(By.LINK_TEXT, "lr-sweep").click()
    assert "5 recorded trials of 8 planned" in browser.find_element(By.TAG_NAME, "main").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#trials tbody tr")) == 5
    screenshot(browser, tmp_path, "sweep")
    browser.get(board + "/studies/tune-digits")
    table = browser.find_element(By.ID, "trials").text
    assert "PRUNED" in table and "trial" in table
    screenshot(browser, tmp_path, "study")


def test_board_browser_bad_run_id_shows_a_short_error_page(browser, board: str) -> None:
    browser.get(board + "/runs/..%2F..%2Fetc%2Fpasswd")
    assert browser.find_element(By.TAG_NAME, "h1").text == "404 Not Found"
    assert "Traceback" not in browser.page_source and "root:" not in browser.page_source


# ------------------------------------------------------------------------------ following a running run
@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A board over one RUNNING run whose output ends in an unfinished progress line: its URL and the run's folder."""
    import waitress

    from mlproj.board import create_app

    now = datetime.now(timezone.utc).replace(tzinfo=None)
    folder = write_run(tmp_path / "runs", 1, {"lr": 0.1}, {"train.loss": [1.0 / (k + 1) for k in range(200)]})
    record(folder, status="RUNNING", stop_time=None, heartbeat=now.isoformat(), start_time=(now - timedelta(minutes=1)).isoformat())
    (folder / "cout.txt").write_text("epoch 1\ntrain  10%")
    server = waitress.create_server(create_app(tmp_path / "runs"), host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    yield f"http://127.0.0.1:{server.effective_port}", folder
    server.close()


def shown_output(browser: webdriver.Chrome) -> str:
    return browser.execute_script("return document.getElementById('output').textContent")


def finish(folder: Path) -> None:
    record(folder, status="COMPLETED", stop_time=datetime.now(timezone.utc).replace(tzinfo=None).isoformat())


def test_board_browser_live_output_redrawn_line_replaces_and_rewritten_file_starts_over(browser, live) -> None:
    url, folder = live
    browser.get(url + "/runs/1")
    assert shown_output(browser) == "epoch 1\ntrain  10%"
    (folder / "cout.txt").write_text("epoch 1\ntrain 100%\nepoch 2\n")  # as RunFolderObserver.save_cout rewrites a redrawn line
    WebDriverWait(browser, 15).until(lambda b: "epoch 2" in shown_output(b))
    assert shown_output(browser) == "epoch 1\ntrain 100%\nepoch 2\n"
    (folder / "cout.txt").write_text("written anew\n")  # shorter than what the page showed
    WebDriverWait(browser, 15).until(lambda b: "written anew" in shown_output(b))
    assert shown_output(browser) == "written anew\n"
    finish(folder)


def test_board_browser_live_failed_curves_request_keeps_following(browser, live) -> None:
    url, folder = live
    browser.get(url + "/runs/1")
    drawn_charts(browser, 1)
    # The next curves request answers 400, as one that caught a metrics.json half-written would.
    browser.execute_script("""
        const fetch = window.fetch; window.failedCurves = 0;
        window.fetch = (url, ...rest) => String(url).includes('/curves')
            ? (window.failedCurves++, Promise.resolve(new Response('{"error": "half-written"}', {status: 400})))
            : fetch(url, ...rest);""")
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["train.loss"]["steps"].append(200)
    metrics["train.loss"]["values"].append(0.001)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    WebDriverWait(browser, 15).until(lambda b: b.execute_script("return window.failedCurves") >= 1)
    finish(folder)
    WebDriverWait(browser, 15).until(lambda b: b.find_element(By.ID, "status").text == "COMPLETED")


def test_board_browser_live_new_points_keep_the_chart_and_its_zoom(browser, live) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    url, folder = live
    browser.get(url + "/runs/1")
    chart, = drawn_charts(browser, 1)
    canvas = chart.find_element(By.TAG_NAME, "canvas")
    ActionChains(browser).move_to_element_with_offset(chart.find_element(By.CLASS_NAME, "u-over"), -150, 0).click_and_hold() \
        .move_by_offset(120, 0).release().perform()  # drag: zoom into part of the steps
    zoomed = chart.get_attribute("data-range")
    assert zoomed and [float(v) for v in zoomed.split()] != [0, 199]
    draws = chart.get_attribute("data-draws")
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["train.loss"]["steps"] += [200, 201]
    metrics["train.loss"]["values"] += [0.004, 0.003]
    (folder / "metrics.json").write_text(json.dumps(metrics))
    WebDriverWait(browser, 15).until(lambda b: chart.get_attribute("data-draws") != draws)
    assert browser.execute_script("return document.contains(arguments[0])", canvas)  # the same chart, given new points
    assert chart.get_attribute("data-range") == zoomed
    finish(folder)


def test_board_browser_live_output_keeps_only_its_end(browser, live) -> None:
    url, folder = live
    browser.get(url + "/runs/1")
    lines = "".join(f"line {i:06d} of a run that prints a lot, more than a page keeps\n" for i in range(4000))  # 260 KB
    with open(folder / "cout.txt", "a") as f:
        f.write("\n" + lines + "train  50%")
    WebDriverWait(browser, 30).until(lambda b: shown_output(b).endswith("line 003999 of a run that prints a lot, more than a page keeps\ntrain  50%"))
    shown = shown_output(browser)
    assert 150 * 1024 < len(shown) <= 200 * 1024 and shown.startswith("line ") and lines.endswith(shown[: -len("train  50%")])
    finish(folder)
