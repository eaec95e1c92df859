"""A Sacred run entry (a run folder's run.json, or a MongoDB `runs` document: the same fields) as a
`Run`, its fields checked: a runs dir may come from anywhere, and a field of a type Sacred never
writes is one line naming the run and the field, not a traceback in every command that lists runs.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from mlproj.errors import MLProjError
from mlproj.runs.record import Run


def parse_time(value: Any) -> datetime | None:
    """A recorded time (ISO text in run folders, a datetime from MongoDB) as a naive UTC datetime;
    None for none (null, "").

    Raises:
        MLProjError: when `value` is neither (what it is, in a few words).
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise MLProjError(f"{_shown(value)} is not a time (ISO text such as 2026-01-31T10:00:00)")
    return parsed.astimezone(timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


def _shown(value: Any) -> str:
    """`value` as a message quotes it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def run_from_entry(entry: Any, *, id: int | str, config: Any, info: Any, **rest: Any) -> Run:
    """The `Run` of a Sacred run entry (a run folder's run.json, or a MongoDB `runs` document: the
    same fields), with the `config` and `info` its store keeps and `rest` (path, loaders) as given.

    Raises:
        MLProjError: when a field has a type Sacred never writes (run.json a list, a start_time that
            is no time, an artifact that is a number...): names the run and the field.
    """
    try:
        _check_entry(entry, config, info)
        experiment = entry.get("experiment") or {}
        return Run(
            id=id,
            name=experiment.get("name") or "",
            status=entry.get("status") or "UNKNOWN",
            start=_field_time(entry, "start_time"),
            stop_time=_field_time(entry, "stop_time"),
            config=config,
            info=info,
            artifacts=[a if isinstance(a, str) else a["name"] for a in entry.get("artifacts") or []],
            result=entry.get("result"),
            command=entry.get("command") or "",
            meta=entry.get("meta") or {},
            experiment=experiment,
            host=entry.get("host") or {},
            resources=entry.get("resources") or [],
            fail_trace=entry.get("fail_trace"),
            heartbeat=_field_time(entry, "heartbeat"),
            **rest,
        )
    except MLProjError as err:
        path = rest.get("path")
        where, fix = (os.path.join(path, "run.json"), "move that run folder away") if path else (f"run {id}", "remove that run's document")
        raise MLProjError(f"{where}: {err}: the run record is damaged; {fix}.") from None


# The type of each field of a run entry that mlproj reads (None, or absent, is always allowed).
_ENTRY_TYPES: dict[str, type] = {"experiment": dict, "status": str, "artifacts": list, "command": str,
                                 "meta": dict, "host": dict, "resources": list}


def _check_entry(entry: Any, config: Any, info: Any) -> None:
    """Raise MLProjError, saying what is wrong, unless the entry's fields that mlproj reads have the
    types Sacred writes."""
    for what, value in (("the record", entry), ("config", config), ("info", info)):
        if not isinstance(value, dict):
            raise MLProjError(f"{what} is {_kind(value)}, not an object")
    for key, kind in _ENTRY_TYPES.items():
        if entry.get(key) is not None and not isinstance(entry[key], kind):
            raise MLProjError(f"{key} is {_kind(entry[key])}, not {_kind(kind())}")
    name = (entry.get("experiment") or {}).get("name")
    if name is not None and not isinstance(name, str):
        raise MLProjError(f"experiment.name is {_kind(name)}, not text")
    for artifact in entry.get("artifacts") or []:
        if not isinstance(artifact, str) and not (isinstance(artifact, dict) and isinstance(artifact.get("name"), str)):
            raise MLProjError(f"artifact {_shown(artifact)} is not a file name")


def _field_time(entry: dict[str, Any], key: str) -> datetime | None:
    """`parse_time` of the entry's field `key`, its error naming the field."""
    try:
        return parse_time(entry.get(key))
    except MLProjError as err:
        raise MLProjError(f"{key} {err}") from None


def _kind(value: Any) -> str:
    """What a JSON value is, in words: `a list`, `text`, `a number`..."""
    kinds = {dict: "an object", list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number", type(None): "null"}
    return kinds.get(type(value), f"a {type(value).__name__}")
