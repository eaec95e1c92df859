"""Command-line values as Sacred reads them (`with key=value`), and values written back that way.

`parse_value` has the semantics of Sacred's own parser (`sacred.arg_parser._convert_value`: a
Python literal through a JSON round trip, so tuples become lists and dict keys strings; anything
else is the text itself). It does not call it: importing Sacred takes a second and prints
deprecation warnings, and `mlproj runs --where` must answer fast. A test checks the two agree.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

# Characters that make a bare word ambiguous on a command line: quote the value instead.
_NEEDS_QUOTES = re.compile(r"[\s'\"\\]")


def parse_value(text: str) -> Any:
    """`text` as Sacred reads a `with key=value` value: `0.1`, `[1, 2]`, `None`, `'1e-3'` (a
    string), and any other text as itself (`lenet`, `cuda:0`, `true`). Surrounding spaces go.

    A literal JSON cannot hold (bytes, complex, sets) reads as its text, where Sacred would
    raise a TypeError.
    """
    text = text.strip()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    try:
        return json.loads(json.dumps(value))  # as sacred.serializer.restore does
    except (TypeError, ValueError):
        return text


def render_value(value: Any) -> str:
    """`value` as a `key=value` word that `parse_value` (and Sacred) reads back as `value`:
    strings bare when that is unambiguous (`lenet`, `runs/1`), quoted otherwise (`'1e-3'`,
    `'None'`, `'a b'`); everything else as its Python literal."""
    if isinstance(value, str) and value and parse_value(value) == value and not _NEEDS_QUOTES.search(value):
        return value
    return repr(value)


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dicts as dotted keys: {"optim": {"lr": 1}} -> {"optim.lr": 1}."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
