"""Which `MLProject` class a main file trains: its module-level `Project`, else `MLProject`.

One convention for every reader of a main file: the Sacred glue checks a run's config with that
class's `check_config` before the run starts, and `mlproj.load_run` builds that class.
"""

from __future__ import annotations

from typing import Any

from mlproj.errors import MLProjError

# The module-level name in a main file that names its project class (default: MLProject).
PROJECT_CLASS_NAME = "Project"


def project_class(namespace: dict[str, Any], main_file: str | None) -> type:
    """The project class `namespace` (a main file's globals) names with `Project`, else `MLProject`.

    Raises:
        MLProjError: when `Project` is there but is no `MLProject` subclass.
    """
    # lazy: train.loop imports torch, and record.experiment (print_config) imports this module
    from mlproj.train.loop import MLProject

    found = namespace.get(PROJECT_CLASS_NAME, MLProject)
    if not (isinstance(found, type) and issubclass(found, MLProject)):
        raise MLProjError(
            f"{main_file or 'the main file'} defines {PROJECT_CLASS_NAME} = {found!r}, not an MLProject subclass: "
            f"make {PROJECT_CLASS_NAME} the project class, or rename it."
        )
    return found
