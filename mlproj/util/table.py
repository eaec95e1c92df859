"""Rows of run columns as text: an aligned table, CSV, JSON, Markdown or HTML.

A row is a dict from column name to a plain value (number, string, None); the columns are the
keys of the first row, in order. `cell` decides how a value reads in the text formats; CSV and
JSON keep numbers whole.
"""

from __future__ import annotations

import csv
import html
import io
import json
from datetime import datetime, timedelta
from typing import Any

FORMATS = ("table", "csv", "json", "markdown", "html")


def cell(value: Any) -> str:
    """A value as a short string: floats to 4 significant digits, None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, timedelta):
        return str(value - timedelta(microseconds=value.microseconds))
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return str(value)


def render(rows: list[dict[str, Any]], fmt: str, columns: list[str] | None = None, max_width: int | None = None) -> str:
    """`rows` in format `fmt` (one of FORMATS); the result ends with a newline.

    With `max_width`, a cell of the text formats (table, markdown, html) longer than that is cut
    with an ellipsis; csv and json keep every value whole.
    """
    columns = columns or (list(rows[0]) if rows else [])
    if fmt == "json":
        return json.dumps([{c: _plain(row.get(c)) for c in columns} for row in rows], indent=2, default=str) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else _plain(row.get(c)) if isinstance(row.get(c), (int, float)) else cell(row.get(c)) for c in columns])
        return out.getvalue()
    cells = [[_cut(cell(row.get(c)), max_width) for c in columns] for row in rows]
    if fmt == "markdown":
        def line(values: list[str]) -> str:
            return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

        numeric = [_is_numeric(rows, c) for c in columns]
        rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
        return "\n".join([line(columns), rule, *(line(r) for r in cells)]) + "\n"
    if fmt == "html":
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>\n" for r in cells)
        return f'<table class="mlproj-runs">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n'
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [_is_numeric(rows, c) for c in columns]

    def pad(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)).rstrip()

    return "\n".join([pad(columns), *(pad(r) for r in cells)]) + "\n"


def _cut(text: str, width: int | None) -> str:
    """`text`, cut to `width` characters with an ellipsis at the end when longer."""
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime, timedelta)):
        return cell(value) if isinstance(value, timedelta) else value.isoformat(timespec="milliseconds")  # as BSON keeps it
    return value


def _is_numeric(rows: list[dict[str, Any]], column: str) -> bool:
    values = [row.get(column) for row in rows if row.get(column) is not None]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
