"""The package's shape: imports follow the dependency rule the README's "Development" section states,
and the engine (train/) knows nothing of Sacred: it imports none of it and reads no attribute of
Sacred's run (what recording gives it comes in a `RunContext`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "mlproj"
# Which of mlproj's parts each part may import (besides itself and `errors`), as the README says.
ALLOWED = {
    "util": set(),
    "data": {"util"},
    "train": {"data", "nets", "util"},
    "record": {"train", "data", "util"},
    "runs": {"util"},
    "board": {"runs", "util"},
    "sweep": {"record", "train", "runs", "util"},
    "loading": {"runs", "train", "util"},
    "nets": set(),
    "cli": {"record", "runs", "sweep", "train", "data", "nets", "util", "loading", "board"},
    "bench": {"cli", "record", "runs", "sweep", "train", "data", "nets", "util", "bench_gpu", "bench_board"},
    "bench_board": {"util"},
    "bench_gpu": {"train", "data", "nets", "util"},
}
# The one import against the rule, with its reason: `MLProject.from_run(_run)`, the entry of a user's
# Sacred main function, asks the Sacred glue for the run's context (record/context.py imports no
# module that imports train/loop.py, so there is no cycle).
EXCEPTIONS = {("mlproj/train/loop.py", "mlproj.record.context")}
# The parts that never import Sacred: the engine and what it builds on.
WITHOUT_SACRED = {"train", "data", "nets", "util"}
# What only Sacred's `Run` has: the engine reads none of it, on any object.
SACRED_RUN_ATTRIBUTES = frozenset({
    "_id", "experiment_info", "meta_info", "host_info", "observers", "unobserved", "run_logger", "captured_out",
    "config_modifications", "main_function", "mlproj_checkpoint", "mlproj_callbacks",
})
# What the engine reads of a run's context may share a name with Sacred's run (`info`) or with what
# the record glue once bolted onto it: never of an object named as a run (`run`, `_run`, `self._run`).
RUN_NAMED_ATTRIBUTES = SACRED_RUN_ATTRIBUTES | {"info", "config", "stdout_is_terminal", "resume_command"}


def _part(module: str) -> str:
    """`mlproj.train.loop` -> `train`; `mlproj` (the package's public names) -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()


def _imports(path: Path, source: str) -> set[str]:
    """Every mlproj module `source` (the file at `path`) imports, at module level or inside functions."""
    tree = ast.parse(source, str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mlproj")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("mlproj"):
            found.add(node.module)
            if node.module == "mlproj":  # `from mlproj import bench` names a module; `__version__` a value
                found |= {f"mlproj.{alias.name}" for alias in node.names if _is_module(alias.name)}
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.add("mlproj." + path.relative_to(PACKAGE).parts[0])  # a relative import stays in its part
    return found


def _third_party_imports(tree: ast.AST) -> set[str]:
    """The top-level names of every package `tree` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def sacred_run_reads(source: str) -> list[str]:
    """Where `source` reads an attribute only Sacred's run has: `x._id`, `getattr(run, ...)`, ..."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and (node.attr in SACRED_RUN_ATTRIBUTES or (
                node.attr in RUN_NAMED_ATTRIBUTES and _names_a_run(node.value))):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            target, name = (node.args + [None, None])[:2]
            named_run = target is not None and _names_a_run(target)
            names_attribute = isinstance(name, ast.Constant) and name.value in SACRED_RUN_ATTRIBUTES
            if named_run or names_attribute:
                found.append(f"line {node.lineno}: {node.func.id}({ast.unparse(target)}, ...)")
    return found


def _names_a_run(node: ast.AST) -> bool:
    """Whether `node` is a name or attribute named as a run: `run`, `_run`, `self._run`, `sacred_run`."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name.lower().endswith("run")


def layout_breaks(path: Path, source: str) -> list[str]:
    """What `source`, the file at `path` in the package, breaks of the layout's rules."""
    part = _part("mlproj." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    shown, broken = path.relative_to(ROOT).as_posix(), []
    if part in ALLOWED:  # __init__ names the public API lazily: it may name anything
        for module in sorted(_imports(path, source)):
            target = _part(module)
            allowed = target in (part, "errors", "__init__") or target in ALLOWED[part] or (shown, module) in EXCEPTIONS
            if not allowed:
                broken.append(f"{shown} imports {module} ({part} -> {target})")
    if part in WITHOUT_SACRED and "sacred" in _third_party_imports(ast.parse(source)):
        broken.append(f"{shown} imports sacred ({part} never does)")
    if part == "train":
        broken += [f"{shown} reads Sacred's run: {read}" for read in sacred_run_reads(source)]
    return broken


def test_layout_imports_follow_the_dependency_rule() -> None:
    broken = [line for path in sorted(PACKAGE.rglob("*.py")) for line in layout_breaks(path, path.read_text())]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize(("path", "line"), [
    ("train/loop.py", "import sacred"),
    ("train/tracker.py", "from sacred.run import Run"),
    ("train/loop.py", "def f(project):\n    return project._run._id"),
    ("train/loop.py", "def f(run):\n    return getattr(run, 'stdout_is_terminal', None)"),
    ("train/loop.py", "def f(self):\n    self._run.info['stop_reason'] = None"),
    ("train/checkpoint.py", "def f(run):\n    return run.resume_command"),
    ("train/places.py", "def f(x):\n    return x.experiment_info['name']"),
    ("train/loop.py", "from mlproj.cli import main"),
    ("cli/runs.py", "from mlproj import bench"),
    ("runs/reader.py", "from mlproj.train.loop import MLProject"),
])
def test_layout_rule_broken_once_is_reported(path: str, line: str) -> None:
    assert layout_breaks(PACKAGE / path, line + "\n")
