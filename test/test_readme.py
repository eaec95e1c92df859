"""The README's Python example runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_readme_own_project_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Your own project", 1)[1].split("\n## ", 1)[0]
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", section, re.S) if "register_dataset" in block]
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "MLPROJ_RUNS_DIR"}  # the example's default: ./runs
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "test.accuracy" in result.stdout
    assert (tmp_path / "runs" / "checkpoints").is_dir()


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
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Config", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    result = subprocess.run([sys.executable, "main.py", "print_config"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    keys = set(re.findall(r"^  (\w+) = ", re.sub(r"\x1b\[[0-9;]*m", "", result.stdout), re.M))
    assert keys and keys == documented, f"undocumented: {keys - documented}, gone: {documented - keys}"
