"""A pre-warmed main.py for tests that start many runs (kill -9 trials, concurrent runs).

A cold `main.py` spends seconds importing torch, torch._dynamo and scikit-learn before its first
step; twenty or forty of them would make the tests slow on a small machine. This process imports
main.py once, then forks one child per run: each child is a real, separate process that runs
`ex.run_commandline(["main.py", ...])` exactly as `./main.py ...` would, with its own stdout/stderr
file, and can be killed with SIGKILL like any other. The parent never trains, so no torch thread
pool exists when it forks.

Protocol (one JSON object per line on stdin, one answer per line on stdout):
    {"run": [args...], "log": path, "env": {...}, "progress": path-or-null} -> {"pid": N}
    {"wait": N}                                                             -> {"pid": N, "status": S}
S is the exit code, or minus the signal number that ended the child. With "progress", the child
appends one byte to that file after every optimizer step (a plain write: it survives SIGKILL), so
a test knows how far training got when it killed the run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _warm_up() -> object:
    spec = importlib.util.spec_from_file_location("main", ROOT / "main.py")
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    import sklearn.datasets  # noqa: F401 - what the digits dataset imports
    import torch

    import mlproj.train.loop  # noqa: F401

    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # imports torch._dynamo; computes nothing
    return main.ex


def _child(ex: object, request: dict) -> None:
    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.update(request.get("env") or {})
    if request.get("progress"):
        from mlproj.train.model import ClassificationModel

        progress = os.open(request["progress"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        train_batch = ClassificationModel.train_batch

        def counted(self, batch):  # noqa: ANN001, ANN202
            metrics = train_batch(self, batch)
            os.write(progress, b".")
            return metrics

        ClassificationModel.train_batch = counted
    code = 0
    try:
        ex.run_commandline(["main.py", *request["run"]])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - report as a failed process, like python would
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    ex = _warm_up()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if "wait" in request:
            _, status = os.waitpid(request["wait"], 0)
            code = os.waitstatus_to_exitcode(status)
            print(json.dumps({"pid": request["wait"], "status": code}), flush=True)
            continue
        pid = os.fork()
        if pid == 0:
            _child(ex, request)
        print(json.dumps({"pid": pid}), flush=True)


if __name__ == "__main__":
    main()


class WarmMain:
    """The test side: start the warm process once, then `start` runs, `kill` and `wait` for them."""

    def __init__(self, runs: Path, env: dict | None = None):
        import subprocess

        # One torch thread per run: many runs share few cores, and the parent then forks no thread pool.
        full_env = {**os.environ, "MLPROJ_RUNS_DIR": str(runs), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
                    **(env or {})}
        full_env.pop("MONGODB_URI", None) if "MONGODB_URI" not in (env or {}) else None
        self.process = subprocess.Popen(
            [sys.executable, __file__], cwd=ROOT, env=full_env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        assert json.loads(self.process.stdout.readline()) == {"ready": True}

    def _ask(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def start(self, *args: str, log: Path, progress: Path | None = None, env: dict | None = None) -> int:
        """Start `./main.py *args` in a new process; its pid."""
        return self._ask({"run": list(args), "log": str(log), "progress": str(progress) if progress else None,
                          "env": env or {}})["pid"]

    def wait(self, pid: int) -> int:
        """The exit code of run `pid` (minus the signal number if a signal ended it)."""
        return self._ask({"wait": pid})["status"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
