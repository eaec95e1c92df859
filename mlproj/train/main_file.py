"""Which `MLProject` class a main file trains: its module-level `Project`, else its one `MLProject`
subclass (whatever its name), else `MLProject`.

One convention for every reader of a main file: the Sacred glue checks a run's config with that
class's `check_config` before the run starts, and `mlproj.load_run` builds that class.
"""

from __future__ import annotations

from typing import Any

from mlproj.errors import MLProjError

# The module-level name in a main file that names its project class (default: MLProject).
PROJECT_CLASS_NAME = "Project"


def project_class(namespace: dict[str, Any], main_file: str | None) -> type:
    """The project class of `namespace` (a main file's globals): the one it names `Project`, else the
    one `MLProject` subclass it holds (`class MyProject(MLProject)`, trained with `MyProject.from_run`),
    else `MLProject`.

    Raises:
        MLProjError: when `Project` is there but is no `MLProject` subclass, or when there is no
            `Project` and several subclasses (the error names them and how to choose).
    """
    # lazy: train.loop imports torch, and record.experiment (print_config) imports this module
    from mlproj.train.loop import MLProject

    if PROJECT_CLASS_NAME not in namespace:
        subclasses = _subclasses(namespace, MLProject)
        if len(subclasses) > 1:
            names = ", ".join(sorted(subclasses))
            raise MLProjError(
                f"{main_file or 'the main file'} holds several MLProject subclasses ({names}): name the one it trains "
                f"with a module-level line such as `{PROJECT_CLASS_NAME} = {sorted(subclasses)[-1]}`."
            )
        return next(iter(subclasses.values()), MLProject)
    found = namespace[PROJECT_CLASS_NAME]
    if not (isinstance(found, type) and issubclass(found, MLProject)):
        raise MLProjError(
            f"{main_file or 'the main file'} defines {PROJECT_CLASS_NAME} = {found!r}, not an MLProject subclass: "
            f"make {PROJECT_CLASS_NAME} the project class, or rename it."
        )
    return found


def _subclasses(namespace: dict[str, Any], base: type) -> dict[str, type]:
    """The `base` subclasses `namespace` holds, by the name they are bound to (each class once)."""
    found: dict[str, type] = {}
    for name, value in namespace.items():
        if isinstance(value, type) and issubclass(value, base) and value is not base and value not in found.values():
            found[name] = value
    return found
