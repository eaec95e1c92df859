"""Reading long metric series fast, for drawing them (`mlproj board`): only the arrays wanted,
one metric at a time, numbers parsed by numpy.

`mlproj.runs.reader` reads a run folder; this module reads the part of it that can be large, a
metrics.json of millions of points, in a fraction of the time and memory a whole JSON parse takes.
It gives the same steps and values as `reader.read_metric_values` (tested against it), and falls
back on it for a file not in the layout Sacred writes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from mlproj.errors import MLProjError
from mlproj.runs.reader import open_record, read_metric_values

# The start of one array of a metric in metrics.json. A JSON string holds no unescaped quote, so the
# pattern cannot match inside a metric's name; the arrays hold numbers (and NaN/Infinity), never `]`.
_ARRAY_START = re.compile(rb'"(steps|values|timestamps)":\s*\[')
_CHUNK = 1 << 22  # metrics.json is scanned in pieces of 4 MB: a long series is never held whole
_TAIL = 64  # bytes kept between pieces, so an array's start cut by a piece's end is still found


def read_metric_arrays(path: str, names: Collection[str] | None = None) -> dict[str, tuple[Sequence[Any], Sequence[Any]]]:
    """(steps, values) of each metric in `names` (default: all) of the run folder `path`, as
    `iter_metric_arrays` reads them; {} when the run logged no metrics."""
    return {name: (steps, values) for name, steps, values in iter_metric_arrays(path, names)}


def iter_metric_arrays(path: str, names: Collection[str] | None = None) -> Iterator[tuple[str, Sequence[Any], Sequence[Any]]]:
    """(name, steps, values) of each metric in `names` (default: all) of the run folder `path`, one
    metric at a time: what drawing curves needs, read several times faster than `read_metric_values`
    and in a fraction of its memory on long series.

    metrics.json is scanned once for where each array lies (without parsing it); then only the
    wanted metrics' steps and values are read and parsed, one metric at a time (timestamps never
    are). Steps that are all integers come as an int64 numpy array, values that are all numbers
    (NaN and Infinity included) as a float64 one; any other array as the list json reads.

    Raises:
        MLProjError: when metrics.json is damaged or cannot be read, or is no regular file (see
            `mlproj.runs.reader.open_record`).
    """
    file = os.path.join(path, "metrics.json")
    f = open_record(file)
    if f is None:
        return
    with f:
        try:
            layout = _array_layout(f)
        except (ValueError, AttributeError, TypeError):  # not the layout Sacred writes: read it whole
            layout = None
        if layout is None:
            for name, m in read_metric_values(path).items():
                if names is None or name in names:
                    yield name, m.get("steps", []), m.get("values", [])
            return
        for name, spans in layout.items():
            if names is not None and name not in names:
                continue
            try:
                yield name, _parse_numbers(_read_array(f, spans.get("steps")), "int64"), _parse_numbers(_read_array(f, spans.get("values")), "float64")
            except ValueError as err:
                raise MLProjError(f"{file} is not valid JSON ({err}): the run record is damaged; move that run folder away.") from None


def _array_layout(f: Any) -> dict[str, dict[str, tuple[int, int]]]:
    """Where each metric's arrays lie in the metrics.json `f`: {name: {steps|values|timestamps: (start, end)}},
    byte offsets of the arrays' items; from one pass over the file that keeps only what lies
    between the arrays, which is parsed as JSON with each array replaced by its number."""
    skeleton, spans = [], []
    buffer, base, start = b"", 0, None  # start: where the open array's items begin
    while True:
        chunk = f.read(_CHUNK)
        buffer += chunk
        pos = 0
        while True:
            if start is None:
                found = _ARRAY_START.search(buffer, pos)
                if found is None:
                    keep = len(buffer) - _TAIL if chunk else len(buffer)
                    skeleton.append(buffer[pos:max(keep, pos)])
                    pos = max(keep, pos)
                    break
                skeleton.append(buffer[pos:found.start()] + b'"%s": %d' % (found.group(1), len(spans)))
                spans.append(found.group(1).decode())
                start, pos = base + found.end(), found.end()
            else:
                end = buffer.find(b"]", pos)
                if end == -1:
                    pos = len(buffer)
                    break
                spans[-1] = (spans[-1], start, base + end)
                start, pos = None, end + 1
        base += pos
        buffer = buffer[pos:]
        if not chunk:
            break
    layout = {}
    for name, record in json.loads(b"".join(skeleton)).items():
        layout[name] = {spans[i][0]: spans[i][1:] for i in record.values()}
    return layout


def _parse_numbers(array: bytes, dtype: str) -> Any:
    """The JSON array `array` as a numpy array of `dtype` when it holds only such numbers (numpy's
    parser reads them several times faster than json, into 8 bytes each), else as json reads it (a list).

    Raises:
        ValueError: when `array` is not a JSON array.
    """
    import numpy as np  # lazy: listing runs never parses a series

    text = array[1:-1]
    try:
        parsed = np.fromstring(text.decode("ascii"), dtype=dtype, sep=",")
    except ValueError:  # text numpy cannot read (a string, null, a fraction among integers...): read it as json
        return json.loads(array)
    # numpy also reads what JSON refuses (a trailing comma: "1,2,"), one item short: json says so.
    if len(parsed) != (text.count(b",") + 1 if text.strip() else 0):
        return json.loads(array)
    if dtype == "int64" and len(parsed) and (parsed.max() == np.iinfo(np.int64).max or parsed.min() == np.iinfo(np.int64).min):
        return json.loads(array)  # numpy clamps an integer too large for int64; json keeps it whole
    return parsed


def _read_array(f: Any, span: tuple[int, int] | None) -> bytes:
    """The JSON array whose items lie at `span` in `f`, brackets included; `[]` for None."""
    if span is None:
        return b"[]"
    f.seek(span[0] - 1)
    return f.read(span[1] - span[0] + 2)
