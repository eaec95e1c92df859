"""`mlproj tune` end to end: trials are real processes, recorded runs, told to a real Optuna study.

The digits test runs the real main.py; the others run a tiny experiment written here (no data, no
training), so resuming, stale trials and bad input are tested fast.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import ROOT

from mlproj.cli import main as mlproj
from mlproj.errors import MLProjError

TOY = '''"""A tiny experiment for tune tests: the result peaks at lr=0.01, fails where told to."""
import math
import os
import time

from mlproj.record.experiment import create_experiment

ex = create_experiment("toy")


@ex.config
def config():
    lr = 0.1
    batch_size = 64
    fail_lr_above = None  # trials with a larger lr raise
    sleep_s = float(os.environ.get("TOY_SLEEP_S", "0"))  # not on the command line: the spec stays the same


@ex.main
def train(lr, batch_size, fail_lr_above, sleep_s):
    time.sleep(sleep_s)
    if fail_lr_above is not None and lr > fail_lr_above:
        raise RuntimeError(f"diverged at lr={lr}")
    return -(math.log10(lr) + 2) ** 2


if __name__ == "__main__":
    ex.run_commandline()
'''


@pytest.fixture
def toy(tmp_path: Path) -> str:
    path = tmp_path / "toy.py"
    path.write_text(TOY)
    return str(path)


def runs_of(runs: Path) -> dict[int, dict]:
    """Every finished run: id -> {status, result, config, tune}."""
    found = {}
    for folder in runs.iterdir() if runs.exists() else []:
        if folder.name.isdigit() and (folder / "info.json").exists():
            record = json.loads((folder / "run.json").read_text())
            found[int(folder.name)] = {
                "status": record["status"], "result": record.get("result"),
                "config": json.loads((folder / "config.json").read_text()),
                "tune": json.loads((folder / "info.json").read_text()).get("tune"),
            }
    return found


def shown_python() -> str:
    """This interpreter as mlproj prints it to paste here: relative when it lies below this folder."""
    relative = os.path.relpath(sys.executable)
    return sys.executable if relative.startswith("..") else relative


def study_of(runs: Path, name: str = "toy") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{runs / '_tune' / (name + '.db')}")


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


def test_tune_digits_three_trials_two_jobs_recorded_runs_and_best_rerun_line(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = ["tune", "main.py", "with", "dataset=digits", "n_epochs=1", "git_pin=False", "tensorboard_dir=None",
            "lr=loguniform(1e-3,1e-1)", "batch_size=choice(32,64)", "--trials", "3", "--jobs", "2",
            "--plot", str(tmp_path / "plots")]
    result = subprocess.run([sys.executable, "-m", "mlproj.cli", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "MLPROJ_RUNS_DIR": str(runs), "MONGODB_URI": ""})
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"tune main: 3 trial(s) wanted, 0 finished, 3 to run, 2 at a time on the configured device, " \
           f"maximize the result; study in sqlite:///{runs}/_tune/main.db, runs in {runs}" in out
    recorded = runs_of(runs)
    assert sorted(recorded) == [1, 2, 3] and all(r["status"] == "COMPLETED" for r in recorded.values())
    for run in recorded.values():  # each run records its trial, and its config holds the trial's params
        assert run["tune"]["study"] == "main"
        assert {k: run["config"][k] for k in ("lr", "batch_size")} == run["tune"]["params"]
    assert sorted(r["tune"]["trial"] for r in recorded.values()) == [0, 1, 2]
    best_id = max(recorded, key=lambda i: recorded[i]["result"])
    best = recorded[best_id]
    assert f"best trial {best['tune']['trial']}: value {best['result']:.4g} (maximize), run {best_id}: " in out
    lr, batch_size = best["tune"]["params"]["lr"], best["tune"]["params"]["batch_size"]
    (rerun,) = re.findall(r"^rerun it: (.+)$", out, re.MULTILINE)
    assert shlex.split(rerun)[1:] == ["main.py", "with", "dataset=digits", "n_epochs=1", "git_pin=False",
                                      "tensorboard_dir=None", f"lr={lr!r}", f"batch_size={batch_size}",
                                      f"seed={best['config']['seed']}"]
    pasted = subprocess.run(rerun, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=300,  # as it is
                            env={**os.environ, "MLPROJ_RUNS_DIR": str(runs), "MONGODB_URI": "",
                                 # the trials' thread share (2 jobs): other thread counts sum floats in another order
                                 "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // 2)))})
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    again = runs_of(runs)[4]  # the best trial's config, run again
    assert again["status"] == "COMPLETED" and {k: again["config"][k] for k in ("lr", "batch_size")} == best["tune"]["params"]
    assert again["result"] == best["result"]  # the trial's seed: the rerun reproduces the trial
    study = study_of(runs, "main")
    assert states(study) == ["COMPLETE"] * 3
    assert sorted(t.user_attrs["run_id"] for t in study.trials) == [1, 2, 3]
    assert (tmp_path / "plots" / "optimization_history.png").stat().st_size > 0
    assert (tmp_path / "plots" / "param_importances.png").stat().st_size > 0


def test_tune_rerun_with_more_trials_runs_only_the_missing_ones(toy: str, runs_dir: Path, capsys) -> None:
    args = ["tune", toy, "with", "lr=loguniform(1e-4,1)", "--jobs", "2"]
    assert mlproj([*args, "--trials", "2"]) == 0
    assert mlproj([*args, "--trials", "4"]) == 0
    out = capsys.readouterr().out
    assert "4 trial(s) wanted, 2 finished, 2 to run" in out
    assert mlproj([*args, "--trials", "4"]) == 0
    assert "4 trial(s) wanted, 4 finished, 0 to run" in capsys.readouterr().out
    recorded = runs_of(runs_dir)
    assert sorted(r["tune"]["trial"] for r in recorded.values()) == [0, 1, 2, 3]
    assert len({r["config"]["lr"] for r in recorded.values()}) == 4  # a resumed sampler draws new values
    assert states(study_of(runs_dir)) == ["COMPLETE"] * 4


def test_tune_failed_trial_not_replaced_until_rerun(toy: str, runs_dir: Path, capsys) -> None:
    args = ["tune", toy, "with", "lr=choice(0.01,0.5)", "fail_lr_above=0.1", "--trials", "3"]
    assert mlproj(args) == 1
    out = capsys.readouterr().out
    study = study_of(runs_dir)
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed and all(t.params["lr"] == 0.5 for t in failed)
    assert re.search(r"trial \d FAIL in [\d.]+s: run \d: RuntimeError: diverged at lr=0.5", out), out
    assert f"{len(failed)} trial(s) missing ({len(failed)} failed in this run): run the same command again" in out
    assert len(study.trials) == 3  # three started, the failures not replaced in the same run


def test_tune_running_trial_of_a_dead_tuner_marked_failed_and_rerun(toy: str, runs_dir: Path, capsys) -> None:
    args = ["tune", toy, "with", "lr=loguniform(1e-4,1)", "--trials", "2"]
    assert mlproj([*args, "--trials", "1"]) == 0
    db = runs_dir / "_tune" / "toy.db"
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}", heartbeat_interval=10)
    study = optuna.load_study(study_name="toy", storage=storage)
    left = study.ask()  # a tuner took this trial, beat once, and was killed
    storage.record_heartbeat(left._trial_id)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-1 hour')")
    capsys.readouterr()
    assert mlproj(args) == 0
    out = capsys.readouterr().out
    assert "tune toy: trial(s) 1 were left running by a tuner that stopped: marked FAILED, their slots run again" in out
    assert "2 trial(s) wanted, 1 finished, 1 to run" in out
    assert states(study_of(runs_dir)) == ["COMPLETE", "FAIL", "COMPLETE"]


def test_tune_running_trial_of_another_tuner_waited_for_then_run_once_it_stops_beating(toy: str, runs_dir: Path,
                                                                                      capsys) -> None:
    args = ["tune", toy, "with", "lr=loguniform(1e-4,1)", "--trials", "2", "--grace", "3"]
    assert mlproj([*args, "--trials", "1"]) == 0
    storage = optuna.storages.RDBStorage(f"sqlite:///{runs_dir / '_tune' / 'toy.db'}", heartbeat_interval=1)
    study = optuna.load_study(study_name="toy", storage=storage)
    storage.record_heartbeat(study.ask()._trial_id)  # another machine's tuner runs it, beats once, and dies
    capsys.readouterr()
    started = time.monotonic()
    assert mlproj(args) == 0
    out = capsys.readouterr().out
    assert "2 trial(s) wanted, 1 finished, 1 running in another tuner, 0 to run" in out  # left to it while it beats
    assert "tune toy: waiting for 1 trial(s) of other tuners; a trial whose tuner stops beating runs here" in out
    assert "tune toy: trial(s) 1 of a tuner that stopped beating: marked FAILED, their slots run here" in out
    assert time.monotonic() - started >= 3  # not before the grace
    assert states(study_of(runs_dir)) == ["COMPLETE", "FAIL", "COMPLETE"]


def test_tune_minimize_best_is_lowest(toy: str, runs_dir: Path, capsys) -> None:
    assert mlproj(["tune", toy, "with", "lr=choice(0.01,1.0)", "--trials", "4", "--direction", "minimize"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"best trial \d: value -4 \(minimize\), run \d: lr=1.0\n", out), out
    assert re.search(rf"rerun it: {re.escape(shlex.join([shown_python(), toy]))} with lr=1.0 seed=\d+\n", out), out


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (["lrr=uniform(0.1,1)"], "unknown config key lrr: check the spelling"),
        (["lr=uniform(1,0.1)"], "lr=uniform\\(1,0.1\\) needs two numbers low < high"),
        (["lr=0.1"], "nothing to tune: give a distribution"),
        (["lr=uniform(0.1,1)", "--trials", "0"], "--trials 0: ask for at least 1 trial"),
        (["lr=uniform(0.1,1)", "--storage", "postgresql://me:s3cret@127.0.0.1:1/optuna"],
         "--storage postgresql://me:\\*\\*\\*@127.0.0.1:1/optuna: "),
        (["lr=uniform(0.1,1)", "--storage", "sqlite:////nonexistent/dir/x.db"],
         "--storage sqlite:////nonexistent/dir/x.db: cannot open it: .*unable to open database file"),
    ],
)
def test_tune_bad_input_one_line_before_any_trial(spec: list[str], match: str, toy: str, runs_dir: Path,
                                                    capsys) -> None:
    code = mlproj(["tune", toy, "with", *spec, *([] if "--trials" in spec else ["--trials", "2"])])
    captured = capsys.readouterr()
    assert code == 1
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert captured.err.startswith("mlproj tune: error: ")
    assert re.search(match, captured.err), captured.err
    assert "s3cret" not in captured.out + captured.err
    assert not runs_of(runs_dir)


def test_tune_study_name_reused_with_other_space_one_line(toy: str, runs_dir: Path, capsys) -> None:
    assert mlproj(["tune", toy, "with", "lr=loguniform(1e-4,1)", "--trials", "1"]) == 0
    capsys.readouterr()
    assert mlproj(["tune", toy, "with", "lr=loguniform(1e-3,1)", "--trials", "2"]) == 1
    err = capsys.readouterr().err
    assert err == (f"mlproj tune: error: study toy in sqlite:///{runs_dir}/_tune/toy.db tunes `lr=loguniform(0.0001,1)`, "
                   "not `lr=loguniform(0.001,1)`: give the study's own spec to continue it, or a new --name for this one\n")
    assert mlproj(["tune", toy, "with", "lr=loguniform(1e-4,1)", "--trials", "2", "--direction", "minimize"]) == 1
    assert "is set to maximize, not minimize: pass --direction maximize or a new --name" in capsys.readouterr().err
    assert len(runs_of(runs_dir)) == 1


def test_tune_interrupted_running_trials_failed_and_rerun_finishes(toy: str, runs_dir: Path) -> None:
    args = [sys.executable, "-m", "mlproj.cli", "tune", toy, "with", "lr=loguniform(1e-4,1)", "--trials", "2", "--jobs", "2"]
    tune = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TOY_SLEEP_S": "20"})
    deadline = time.monotonic() + 60
    while len([r for r in (runs_dir.iterdir() if runs_dir.exists() else []) if r.name.isdigit()]) < 2:
        assert time.monotonic() < deadline and tune.poll() is None
        time.sleep(0.2)
    time.sleep(2)  # both trials are inside train()
    tune.send_signal(signal.SIGINT)
    out, _ = tune.communicate(timeout=60)
    assert tune.returncode == 130, out
    assert "tune toy interrupted: run the same command again to continue the study" in out
    assert sorted(r["status"] for r in runs_of(runs_dir).values()) == ["INTERRUPTED", "INTERRUPTED"]
    assert states(study_of(runs_dir)) == ["FAIL", "FAIL"]
    rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert states(study_of(runs_dir)) == ["FAIL", "FAIL", "COMPLETE", "COMPLETE"]


def test_tune_prune_hopeless_trial_pruned_recorded_and_shown(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    args = ["tune", "main.py", "with", "dataset=digits", "n_epochs=2", "git_pin=False", "tensorboard_dir=None",
            "lr=choice(0.003,1e-6)", "--trials", "3", "--prune", "--prune-after", "1"]
    env = {**os.environ, "MLPROJ_RUNS_DIR": str(runs), "MONGODB_URI": ""}
    result = subprocess.run([sys.executable, "-m", "mlproj.cli", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    study = study_of(runs, "main")
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned and all(t.params["lr"] == 1e-6 for t in pruned), states(study)  # seed 0: lr 1e-6, 0.003, 1e-6
    run_id = pruned[0].user_attrs["run_id"]
    assert re.search(rf"trial {pruned[0].number} PRUNED in [\d.]+s: run {run_id}\n", result.stdout), result.stdout
    info = json.loads((runs / str(run_id) / "info.json").read_text())
    assert info["tune"]["pruned"] is True
    assert info["stop_reason"].startswith("pruned by optuna at step 21: validation.accuracy=")
    assert runs_of(runs)[run_id]["status"] == "COMPLETED"  # stopped on purpose: not a failure
    steps = json.loads((runs / str(run_id) / "metrics.json").read_text())["validation.accuracy"]["steps"]
    assert steps == [21]  # one evaluation, not n_epochs=2
    shown = subprocess.run([sys.executable, "-m", "mlproj.cli", "runs", "--status", "PRUNED"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    header, *rows = shown.stdout.splitlines()
    status = header.index("status")  # the status column starts where its (left-aligned) header does
    assert [(row.split()[0], row[status:].split()[0]) for row in rows] == [(str(run_id), "PRUNED")], shown.stdout


def test_tuner_records_a_heartbeat_for_the_trials_it_runs(toy: str, tmp_path: Path) -> None:
    # Optuna beats only inside study.optimize: with ask/tell the tuner beats itself, or another
    # tuner of the study would take its running trials for a dead tuner's.
    from mlproj.sweep.spec import parse_spec
    from mlproj.sweep.tune import HEARTBEAT_S, Tuner, open_storage, open_study, search_space

    spec = parse_spec([toy, "with", "lr=loguniform(1e-4,1)"])
    space, db = search_space(spec), tmp_path / "toy.db"
    storage = open_storage(f"sqlite:///{db}")
    study = open_study(storage, "toy", "maximize", spec, space, 0, str(db))
    tuner = Tuner(study, storage, spec, space, 2, str(tmp_path))
    first, _ = tuner.next_trial()
    with sqlite3.connect(db) as con:
        beats = dict(con.execute("SELECT trial_id, heartbeat FROM trial_heartbeats").fetchall())
        con.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-1 hour')")
    assert len(beats) == 1  # beaten as soon as it is asked for
    tuner.heartbeat([first], time.monotonic() + HEARTBEAT_S)
    with sqlite3.connect(db) as con:
        (age,) = con.execute("SELECT (julianday('now') - julianday(heartbeat)) * 86400 FROM trial_heartbeats").fetchone()
    assert age < 60  # the old beat was replaced by a fresh one


LOSS_MODEL = ("return ClassificationModel(net, optimizer, nn.CrossEntropyLoss())  # OWN_MODEL",
              "model = ClassificationModel(net, optimizer, nn.CrossEntropyLoss())\n"
              "        model.benchmark_metric, model.benchmark_lower_is_better = 'loss', True\n"
              "        return model")


def test_tune_default_direction_the_studys_own_else_the_models_benchmark(toy: str, tmp_path: Path) -> None:
    """A new study takes the direction of the model's benchmark (a loss: minimize, so a user's model
    is not tuned the wrong way round); an existing study keeps its own; a project that cannot be
    built is one line, not a study locked into a guessed direction."""
    from test_main import OWN_PROJECT

    from mlproj.sweep.spec import parse_spec
    from mlproj.sweep.tune import check_configs, default_direction, open_storage

    scripts = {"accuracy": OWN_PROJECT, "loss": OWN_PROJECT.replace(*LOSS_MODEL),
               "broken": OWN_PROJECT.replace("net = nets[config", "raise ValueError('width too small')\n        net = nets[config")}
    for script, text in scripts.items():
        (tmp_path / f"{script}.py").write_text(text)
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")

    def default(script: str, name: str) -> str:
        spec = parse_spec([script, "with", "lr=loguniform(1e-4,1e-1)"])
        trials, experiment = check_configs(spec)
        return default_direction(storage, name, experiment, trials[0].config, script)

    assert default(str(tmp_path / "loss.py"), "new") == "minimize"
    assert default(str(tmp_path / "accuracy.py"), "new") == "maximize"
    assert default(toy, "new") == "maximize"  # the built-in get_model: its accuracy, read without building (no dataset here)
    with pytest.raises(MLProjError, match=r"broken.py's project .*\(ValueError: width too small\): fix it, or pass --direction"):
        default(str(tmp_path / "broken.py"), "new")
    optuna.create_study(study_name="old", storage=storage, direction="minimize")
    assert default(str(tmp_path / "accuracy.py"), "old") == "minimize"  # the study's own: continuing it is never refused


def test_tune_a_loss_benchmark_project_minimizes_without_direction(tmp_path: Path, runs_dir: Path, capsys) -> None:
    from test_main import OWN_PROJECT

    script = tmp_path / "loss.py"
    script.write_text(OWN_PROJECT.replace(*LOSS_MODEL))
    assert mlproj(["tune", str(script), "with", "git_pin=False", "lr=loguniform(1e-3,1e-1)", "--trials", "1"]) == 0
    out = capsys.readouterr().out
    assert "minimize the result" in out and "(minimize), run 1" in out
    assert runs_of(runs_dir)[1]["status"] == "COMPLETED"  # its run recorded a loss benchmark: the study agrees


def test_tuner_run_recording_the_other_direction_fails_naming_the_fix(toy: str, tmp_path: Path) -> None:
    from conftest import write_run

    from mlproj.sweep.spec import parse_spec
    from mlproj.sweep.tune import Tuner, open_storage, open_study, search_space

    spec = parse_spec([toy, "with", "lr=loguniform(1e-4,1)"])
    space, runs = search_space(spec), tmp_path / "runs"
    storage = open_storage(f"sqlite:///{tmp_path / 'toy.db'}")
    tuner = Tuner(open_study(storage, "toy", "maximize", spec, space, 0, "toy.db"), storage, spec, space, 2, str(runs))
    (first, _), (second, _) = tuner.next_trial(), tuner.next_trial()
    for run_id, lower in ((1, True), (2, False)):
        folder = write_run(runs, run_id, {"lr": 0.1}, {}, info={"run_key": f"k{run_id}", "tune": {"study": "toy"},
                                                              "benchmark": {"metric": "validation.loss", "lower_is_better": lower}})
        record = json.loads((folder / "run.json").read_text())
        (folder / "run.json").write_text(json.dumps({**record, "result": 0.5}))
    end = tuner.ended(first.index, 0, 1)
    assert (end.state, end.value) == ("FAIL", None)
    assert end.reason == ("its run records that a lower validation.loss is better, but the study is set to maximize: "
                          "pass --direction minimize with a new --name")
    assert (tuner.ended(second.index, 0, 2).state, states(tuner.study)) == ("COMPLETE", ["FAIL", "COMPLETE"])


def test_tune_postgresql_without_driver_one_line_names_the_driver_sqlalchemy_imports(toy: str, runs_dir: Path,
                                                                                     capsys) -> None:
    from sqlalchemy.engine import make_url

    url = "postgresql://me:s3cret@127.0.0.1:1/optuna"
    try:  # the driver SQLAlchemy's postgresql dialect imports here
        make_url(url).get_dialect().import_dbapi()
        pytest.skip("a PostgreSQL driver is installed: nothing is missing")
    except ImportError:
        pass
    assert mlproj(["tune", toy, "with", "lr=loguniform(1e-4,1)", "--trials", "1", "--storage", url]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "s3cret" not in err, err
    # SQLAlchemy 2.1 (requirements.txt) reads postgresql:// as psycopg 3, whose package is psycopg.
    assert make_url(url).get_dialect().driver == "psycopg"
    assert err.strip().endswith('install psycopg, the driver SQLAlchemy uses for postgresql://: pip install "psycopg[binary]"'), err
    assert not runs_dir.exists()


def test_tune_grace_below_three_seconds_one_line(toy: str, runs_dir: Path, capsys) -> None:
    assert mlproj(["tune", toy, "with", "lr=loguniform(1e-4,1)", "--trials", "1", "--grace", "2"]) == 1
    assert "--grace 2: give 3 seconds or more" in capsys.readouterr().err
