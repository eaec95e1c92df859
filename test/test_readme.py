"""README.md stays true: every Python block runs as written, and the config table lists every key."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_main

README = (ROOT / "README.md").read_text()


def python_blocks() -> list[tuple[str, str]]:
    """(the heading above it, the code) of every ```python block."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", README, re.S | re.M):
        (heading,) = re.findall(r"^#+ (.+)$", README[: match.start()], re.M)[-1:]
        blocks.append((heading, match.group(1)))
    return blocks


def run_block(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python example.py` in `cwd` as a user runs a pasted block: the default runs dir, ./runs, no MongoDB."""
    script = cwd / "example.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k not in ("MLPROJ_RUNS_DIR", "MONGODB_URI", "PYTHONWARNINGS")}
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("heading", "code"), python_blocks(), ids=[h.split(" (")[0] for h, _ in python_blocks()])
def test_readme_python_block_runs_as_written(heading: str, code: str, tmp_path: Path) -> None:
    if "runs/1/" in code:  # the block reads a recorded run: record one where it looks
        made = run_main("with", "dataset=digits", "n_global_iterations=3", "tensorboard_dir=None", runs=tmp_path / "runs")
        assert made.returncode == 0, made.stderr
    result = run_block(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "pkg_resources" not in result.stderr, result.stderr
    out = result.stdout.splitlines()
    if heading == "What a run records":
        # The keys printed are those of the output the block shows.
        (shown,) = re.findall(r"^# (\{.*\})$", code, re.M)
        assert ast.literal_eval(out[0]).keys() == ast.literal_eval(shown).keys()
        assert out[1].split()[0] == "lenet"
    elif heading == "Your own project":
        assert ast.literal_eval(out[-1]).keys() == {"test.accuracy", "test.loss"}
        assert {p.name for p in (tmp_path / "runs" / "checkpoints").rglob("*.pt")} == {"best.pt", "last.pt"}
    elif heading.startswith("Coming from the original template"):
        assert any(line.startswith("[test] ") for line in out), result.stdout
        assert {p.name for p in (tmp_path / "models").rglob("*.pt")} == {"best.pt", "last.pt"}


def test_readme_callbacks_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Callbacks and early stopping", 1)[1].split("\n### ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    (tmp_path / "example.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "MLPROJ_RUNS_DIR"}  # the example's default: ./runs
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(("validation.accuracy above 0.9 at step ", "early stopping: validation.accuracy")), last


def test_readme_config_table_lists_every_config_key() -> None:
    table = README.split("### Config", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    result = subprocess.run([sys.executable, "main.py", "print_config"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    keys = set(re.findall(r"^  (\w+) = ", re.sub(r"\x1b\[[0-9;]*m", "", result.stdout), re.M))
    assert keys and keys == documented, f"undocumented: {keys - documented}, gone: {documented - keys}"


def test_readme_development_tree_lists_every_package_and_module() -> None:
    tree = README.split("## Development", 1)[1].split("\nmlproj/\n", 1)[1].split("\ntest/", 1)[0]
    listed = set(re.findall(r"^  (\S+)", tree, re.M))
    package = ROOT / "mlproj"
    present = {p.name for p in package.glob("*.py")} | {p.name + "/" for p in package.iterdir() if (p / "__init__.py").exists()}
    assert listed == present
