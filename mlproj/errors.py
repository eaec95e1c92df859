"""The one exception type for user mistakes.

Everything the user can fix (a bad config value, a missing data folder, an unknown run) raises
`MLProjError` with a message that says what was passed and what to do. Entry points (`main.py`,
the `mlproj` command) print it as one line and exit with status 1; everything else is a bug and
keeps its traceback.
"""


class MLProjError(Exception):
    """A mistake the user can fix; its message says what was wrong and what to do."""


def invalid_config(key: str, value: object, expected: str) -> MLProjError:
    """The error for config `key` holding `value` where `expected` (e.g. "an integer >= 1") was due."""
    return MLProjError(f"config {key}={value!r} is invalid: expected {expected}. Run with {key}=<value> to fix it.")
