"""`mlproj tune` on a study in a real PostgreSQL server (the one `make test-cluster` starts on
127.0.0.1), from two tuners at once as from two machines; skipped where there is none.

The driver is installed the way a user would: the missing-driver line is pasted into pip."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, cluster_service

from mlproj.util.uri import uri_password

pytestmark = pytest.mark.cluster

SPEC = ["main.py", "digits_mlp", "with", "n_epochs=1", "lr=loguniform(1e-3,1e-1)"]


def tune(*args: str, runs: Path, site: Path | None) -> subprocess.Popen:
    env = {**os.environ, "MLPROJ_RUNS_DIR": str(runs), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("MONGODB_URI", None)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.Popen([sys.executable, "-m", "mlproj.cli", "tune", *SPEC, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 150) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


@pytest.fixture(scope="module")
def uri() -> str:
    return cluster_service("MLPROJ_TEST_POSTGRES_URI", "PostgreSQL server")


@pytest.fixture(scope="module")
def driver(uri: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path | None]:
    """Without a driver, the missing-driver line; then the package it names, installed with the
    pip line pasted from it into a folder of its own (None: a driver was installed already)."""
    if importlib.util.find_spec("psycopg") is not None:
        return "", None
    folder = tmp_path_factory.mktemp("driver")
    code, output = finish(tune("--trials", "1", "--storage", uri, "--name", "nodriver", runs=folder / "runs", site=None))
    assert code == 1, output
    line = output.strip()
    pip_words = shlex.split(line.split(": pip install ", 1)[1]) if ": pip install " in line else []
    assert pip_words, line
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(folder / "site"),
                                *pip_words], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    return line, folder / "site"


def test_tune_postgres_missing_driver_one_line_whose_pip_line_works(driver: tuple[str, Path | None], uri: str,
                                                                     tmp_path: Path) -> None:
    line, site = driver
    if site is None:
        pytest.skip("psycopg is installed in this interpreter: there is no missing driver to report")
    assert "\n" not in line and line.startswith("mlproj tune: error: --storage postgresql://mlproj:***@127.0.0.1:")
    assert 'psycopg, the driver SQLAlchemy uses for postgresql://: pip install "psycopg[binary]"' in line
    assert uri_password(uri) not in line
    code, output = finish(tune("--trials", "1", "--storage", uri, "--name", "pasted", runs=tmp_path / "runs", site=site))
    assert code == 0, output  # with what the pasted line installed, the same command works


def test_tune_postgres_two_tuners_finish_exactly_n_distinct_runs_password_kept_out(driver, uri: str,
                                                                                  tmp_path: Path) -> None:
    _, site = driver
    machines = [tmp_path / "a" / "runs", tmp_path / "b" / "runs"]  # two machines, each its own runs dir
    args = ("--trials", "4", "--storage", uri, "--name", "shared", "--grace", "6")
    tuners = [tune(*args, runs=runs, site=site) for runs in machines]
    outputs = [finish(process) for process in tuners]
    assert [code for code, _ in outputs] == [0, 0], outputs
    study = load_study(uri, "shared", site)
    assert [t["state"] for t in study] == ["COMPLETE"] * 4
    ran = {(runs, str(t["run_id"])) for t in study for runs in machines if (runs / str(t["run_id"])).is_dir()
           and f'"trial": {t["number"]}' in (runs / str(t["run_id"]) / "info.json").read_text()}
    assert len(ran) == 4  # each trial is a run of its own, on one machine or the other
    assert sum(len([p for p in runs.iterdir() if p.name.isdigit()]) for runs in machines) == 4
    password = uri_password(uri)
    assert all(password not in output for _, output in outputs)
    for runs in machines:
        for path in runs.rglob("*"):
            assert not path.is_file() or password.encode() not in path.read_bytes(), path


def test_tune_postgres_tuner_killed_its_trial_run_again_by_the_other(driver, uri: str, tmp_path: Path) -> None:
    _, site = driver
    args = ("--trials", "3", "--storage", uri, "--name", "killed", "--grace", "6")
    doomed = tune(*args, runs=tmp_path / "a" / "runs", site=site)
    deadline = time.monotonic() + 90
    while not list((tmp_path / "a" / "runs").glob("[0-9]*")):  # its first trial's run has started
        assert time.monotonic() < deadline and doomed.poll() is None, "the first tuner's trial never started"
        time.sleep(0.2)
    survivor = tune(*args, runs=tmp_path / "b" / "runs", site=site)
    time.sleep(2)
    # The machine dies: the tuner and the trial it runs (in a session of its own), at once.
    trial_pids = subprocess.run(["pgrep", "-P", str(doomed.pid)], capture_output=True, text=True).stdout.split()
    for pid in [doomed.pid, *map(int, trial_pids)]:
        os.kill(pid, signal.SIGKILL)
    doomed.communicate()
    code, output = finish(survivor)
    assert code == 0, output
    assert "of a tuner that stopped beating: marked FAILED, their slots run here" in output
    study = load_study(uri, "killed", site)
    assert sorted(t["state"] for t in study) == ["COMPLETE"] * 3 + ["FAIL"]
    assert len({t["run_id"] for t in study if t["state"] == "COMPLETE"}) == 3


def load_study(uri: str, name: str, site: Path | None) -> list[dict]:
    """The trials of study `name`, read in a process that can import the driver."""
    code = ("import json, sys, optuna\n"
            f"study = optuna.load_study(study_name={name!r}, storage=sys.argv[1])\n"
            "print(json.dumps([{'number': t.number, 'state': t.state.name, 'run_id': t.user_attrs.get('run_id')}"
            " for t in study.trials]))")
    env = {**os.environ, **({"PYTHONPATH": str(site)} if site else {})}
    result = subprocess.run([sys.executable, "-c", code, uri], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
