"""The package's shape: imports follow the dependency rule the README's "Development" section states."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "mlproj"
# Which of mlproj's parts each part may import (besides itself and `errors`), as the README says.
ALLOWED = {
    "util": set(),
    "data": {"util"},
    "train": {"data", "nets", "util"},
    "record": {"train", "data", "util"},
    "runs": {"util"},
    "sweep": {"record", "train", "runs", "util"},
    "loading": {"runs", "train", "util"},
    "nets": set(),
}


def _part(module: str) -> str:
    """`mlproj.train.loop` -> `train`; `mlproj` (the package's public names) -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    """Every mlproj module `path` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mlproj")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("mlproj"):
            found.add(node.module)
            if node.module == "mlproj":  # `from mlproj import distributed`-style imports name modules
                found |= {f"mlproj.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.add("mlproj." + path.relative_to(PACKAGE).parts[0])  # a relative import stays in its part
    return found


def test_layout_imports_follow_the_dependency_rule() -> None:
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part("mlproj." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        if part not in ALLOWED:
            continue  # cli/, bench and __init__ may import anything
        for module in sorted(_imports(path)):
            target = _part(module)
            if target not in (part, "errors", "__init__") and target not in ALLOWED[part]:
                broken.append(f"{path.relative_to(ROOT)} imports {module} ({part} -> {target})")
    assert not broken, "\n".join(broken)
