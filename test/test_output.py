"""What a run prints and writes: whole lines in cout.txt, a progress bar only on a terminal, nothing
on disk with `-u`, everything under DIR with `-F DIR`, and main.py's own help and config output."""

from __future__ import annotations

import datetime
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from conftest import ROOT, run_main

from mlproj.record.observers import RunFolderObserver, collapse_redraws
from mlproj.train.context import RunContext

DIGITS = ("dataset=digits", "model=mlp", "batch_size=256", "tensorboard_dir=None")  # 6 steps an epoch
EPOCH_LINE = re.compile(r"epoch (\d+) step (\d+): validation\.accuracy \d\.\d{4}  validation\.loss \d+\.\d{4}(  \(best\))?")


def epoch_numbers(cout: str) -> list[int]:
    """The epochs whose result line is in `cout` whole, exactly as the loop printed it."""
    return [int(match.group(1)) for match in map(EPOCH_LINE.fullmatch, cout.splitlines()) if match]


def read_text(path: Path) -> str:
    return path.read_bytes().decode()  # Path.read_text would turn a "\r" into "\n"


def run_on_terminal(*args: str, runs: Path, timeout: float = 300) -> tuple[int, str]:
    """main.py with stdout and stderr on a 100-column pseudo-terminal; its exit code and what the terminal got."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {**os.environ, "MLPROJ_RUNS_DIR": str(runs)}
    env.pop("MONGODB_URI", None)
    process = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, env=env,
                               stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    output = b""
    try:
        while select.select([master], [], [], timeout)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not data:
                break
            output += data
        else:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"main.py {' '.join(args)} did not finish within {timeout} s")
        return process.wait(timeout=60), output.decode(errors="replace")
    finally:
        os.close(master)


# ---------------------------------------------------------------------------------- cout.txt and the bar
def test_collapse_redraws_line_cut_by_heartbeat_collapses_once_finished() -> None:
    # A heartbeat takes the text while the bar's first frame is the last, unfinished line...
    first = collapse_redraws("Training\n\repoch 2/8:   0%|          | 0/6")
    assert first == "Training\n\repoch 2/8:   0%|          | 0/6"
    # ...and the next one gets the bar cleared and the epoch's result printed over it.
    second = collapse_redraws(first + "\r" + " " * 60 + "\repoch 2 step 12: validation.loss 0.1000\nnext")
    assert second == "Training\nepoch 2 step 12: validation.loss 0.1000\nnext"


def test_run_folder_observer_cout_rewrites_redrawn_last_line(tmp_path: Path) -> None:
    observer = RunFolderObserver(str(tmp_path))
    ex_info = {"name": "t", "base_dir": str(tmp_path), "sources": [], "dependencies": [], "repositories": [],
               "mainfile": None}
    observer.started_event(ex_info, "train", {}, datetime.datetime.now(), {}, {}, None)
    for captured in ("Training\n\repoch 1/2: 0/6", "Training\n\repoch 1/2: 3/6", "Training\nepoch 1 step 6: ok\n"):
        observer.heartbeat_event({}, captured, datetime.datetime.now(), None)
    assert read_text(Path(observer.dir) / "cout.txt") == "Training\nepoch 1 step 6: ok\n"


def test_main_redirected_output_cout_keeps_every_epoch_line_and_no_redraws(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    env = {**os.environ, "MLPROJ_RUNS_DIR": str(runs)}
    env.pop("MONGODB_URI", None)
    # Bytes, not text=True: universal newlines would turn a "\r" into "\n". -b: a heartbeat every 20 ms.
    result = subprocess.run([sys.executable, "main.py", "with", "git_pin=False", *DIGITS, "n_epochs=8", "-b", "0.02"],
                            cwd=ROOT, env=env, capture_output=True, timeout=300)
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "\r" not in stdout + stderr  # output that is not a terminal gets no bar
    cout = read_text(runs / "1" / "cout.txt")
    assert "\r" not in cout
    assert epoch_numbers(cout) == list(range(1, 9)), cout
    assert epoch_numbers(stdout) == list(range(1, 9))


def test_main_on_terminal_draws_bar_there_and_cout_keeps_every_epoch_line(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    code, terminal = run_on_terminal("with", "git_pin=False", *DIGITS, "n_epochs=8", "-b", "0.02", runs=runs)
    assert code == 0, terminal
    assert "epoch 1/8:   0%|" in terminal and "it/s]" in terminal  # the bar is drawn on the terminal
    cout = read_text(runs / "1" / "cout.txt")
    assert "\r" not in cout
    assert epoch_numbers(cout) == list(range(1, 9)), cout


# ---------------------------------------------------------------------------------- -u and -F
def test_main_unobserved_run_writes_no_file(tmp_path: Path) -> None:
    result = run_main("-u", "with", *DIGITS[:3], "n_epochs=2", runs=Path("runs"), cwd=tmp_path)  # the default ./runs
    assert result.returncode == 0, result.stderr
    assert "Training mlp on digits (cpu) for 2 epochs; no checkpoints (pass model_dir=DIR to keep them)" in result.stdout
    assert list(tmp_path.iterdir()) == []  # no runs/, no runs/checkpoints/, no runs/tensorboard/


def test_main_unobserved_run_writes_only_given_model_and_tensorboard_dirs(tmp_path: Path) -> None:
    cwd, models, tensorboard = tmp_path / "cwd", tmp_path / "models", tmp_path / "tb"
    cwd.mkdir()
    result = run_main("-u", "with", *DIGITS[:3], "n_epochs=1", f"model_dir={models}", f"tensorboard_dir={tensorboard}",
                      runs=Path("runs"), cwd=cwd)
    assert result.returncode == 0, result.stderr
    (checkpoints,) = models.iterdir()
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.pt", "last.pt"]
    assert f"checkpoints in {checkpoints}" in result.stdout
    assert list(tensorboard.glob("*/events.out.tfevents.*"))
    assert list(cwd.iterdir()) == []


def test_main_file_storage_option_keeps_record_checkpoints_and_tensorboard_under_dir(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = run_main("-F", str(tmp_path / "record"), "with", *DIGITS[:3], "n_epochs=1", runs=Path("runs"), cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert {"best.pt", "last.pt", "cout.txt"} <= {p.name for p in (tmp_path / "record" / "1").iterdir()}
    (events,) = (tmp_path / "record" / "tensorboard").iterdir()
    assert events.name.startswith("1_mlproj_") and list(events.glob("events.out.tfevents.*"))
    assert list(cwd.iterdir()) == []  # nothing under the default ./runs


def unobserved_run(config: dict) -> RunContext:
    """What MLProject sees of a `-u` run: no runs folder, no record."""
    return RunContext.create(config, run_key="unobserved-abcdef12", run_dir=None, recording_root=None)


def test_project_interrupted_without_checkpoints_says_none_was_saved(capsys: pytest.CaptureFixture) -> None:
    from mlproj import MLProject

    config = {"dataset": "digits", "model": "mlp", "n_epochs": 1, "device": "cpu"}
    project = MLProject(config, context=unobserved_run(config))
    train_batch = project.model.train_batch
    project.model.train_batch = lambda batch: (train_batch(batch), os.kill(os.getpid(), signal.SIGINT))[0]
    with pytest.raises(KeyboardInterrupt):
        project.train()
    assert project.checkpoint_dir is None
    assert capsys.readouterr().out.splitlines()[-1] == (
        "SIGINT: stopped at step 1; no checkpoint saved (the run records nothing; pass model_dir=DIR to keep checkpoints)"
    )


def test_project_unobserved_resume_continues_and_writes_nothing(tmp_path: Path) -> None:
    from mlproj import MLProject

    config = {"dataset": "digits", "model": "mlp", "device": "cpu", "tensorboard_dir": "auto"}
    first = MLProject({**config, "n_global_iterations": 2, "model_dir": str(tmp_path), "tensorboard_dir": str(tmp_path)})
    first.train()
    written = sorted(tmp_path.rglob("*"))
    config = {**config, "n_global_iterations": 4, "resume": first.checkpoint_dir}
    resumed = MLProject(config, context=unobserved_run(config))
    resumed.train()
    assert resumed.global_step == 4
    assert sorted(tmp_path.rglob("*")) == written


# ---------------------------------------------------------------------------------- help and print_config
def test_main_help_shows_main_py_docstring() -> None:
    result = subprocess.run([sys.executable, "main.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "The example experiment: train a classifier and record the run with Sacred." in result.stdout
    assert "Sacred glue" not in result.stdout


def test_main_print_config_piped_has_no_colour_codes() -> None:
    result = subprocess.run([sys.executable, "main.py", "print_config", "with", "lr=0.01"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout
    assert "  lr = 0.01" in result.stdout


def test_main_print_config_on_terminal_keeps_colours(tmp_path: Path) -> None:
    code, terminal = run_on_terminal("print_config", "with", "lr=0.01", runs=tmp_path / "runs")
    assert code == 0, terminal
    assert "\x1b[" in terminal and "lr = 0.01" in terminal


CUT_SHORT = '''
import sys

from mlproj.record.experiment import create_experiment

ex = create_experiment("cut_short")


@ex.main
def main():
    print("the last line before the end")
    if sys.argv[-1] == "interrupt":
        raise KeyboardInterrupt
    raise RuntimeError("a bug")


if __name__ == "__main__":
    ex.run_commandline(sys.argv[:-1])
'''


@pytest.mark.parametrize("end, status", [("interrupt", "INTERRUPTED"), ("fail", "FAILED")])
def test_run_cut_short_before_its_first_heartbeat_records_what_it_printed(tmp_path: Path, end: str, status: str) -> None:
    # Sacred hands the captured output over at heartbeats and at completion only: a run that
    # failed or was interrupted lost what it printed since its last heartbeat.
    script = tmp_path / "cut_short.py"
    script.write_text(CUT_SHORT)
    env = {**os.environ, "MLPROJ_RUNS_DIR": str(tmp_path / "runs"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(script), end], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    run = tmp_path / "runs" / "1"
    assert f'"status": "{status}"' in (run / "run.json").read_text()
    assert "the last line before the end\n" in (run / "cout.txt").read_text()
