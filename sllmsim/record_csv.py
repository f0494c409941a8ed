"""CSV writing of record columns, byte-identical to :mod:`csv`'s default dialect, at C speed per row.

The run folder's CSVs hold millions of rows; :class:`csv.writer` spends most of a large run's output
time converting and checking every field in turn. Here each column is prepared once, with one type
check for the whole column: floats are written with the fixed ``%.9f`` (the same digits as
``f"{v:.9f}"``), booleans as ``0``/``1``, ``None`` as an empty field, and strings are quoted exactly
where :mod:`csv`'s ``QUOTE_MINIMAL`` would (a delimiter, quote, carriage return or newline inside).
A row is then one ``%`` formatting of a per-chunk row template, which formats all of its fields in
one C call; rows end with ``\\r\\n``, as :class:`csv.writer`'s default ``lineterminator``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from pathlib import Path

#: Characters that make :mod:`csv` quote a field (the default dialect).
_SPECIAL = (",", '"', "\r", "\n")
#: Rows formatted per chunk: bounds the formatted strings held at once on long runs.
CHUNK_ROWS = 65_536


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in _SPECIAL) else text


def _strings(values: Sequence[str]) -> Sequence[str]:
    # One scan of the joined column finds out whether any field needs quotes (they rarely do).
    joined = "".join(values)
    if any(c in joined for c in _SPECIAL):
        return [_quoted(v) for v in values]
    return values


def plain_field(value: object) -> object:
    """The records' fixed formatting of one value, before csv's own conversion (``str`` and quoting):
    it keeps CSVs byte-identical across runs and platforms."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return f"{value:.9f}"
    if isinstance(value, Enum):
        return value.value
    return value


def _field_text(value: object) -> str:
    """One field exactly as :mod:`csv` writes :func:`plain_field` of it."""
    return _quoted(str(plain_field(value)))


def format_column(values: Sequence) -> tuple[str, Sequence]:
    """A ``%`` conversion and the values to substitute into it, for one column of field values."""
    types = set(map(type, values))
    if types == {float}:
        return "%.9f", values
    if types == {bool}:
        return "%d", values
    if types <= {int}:
        return "%d", values
    if types <= {str}:
        return "%s", _strings(values)
    if types <= {float, type(None)}:
        return "%s", ["" if v is None else f"{v:.9f}" for v in values]
    return "%s", [_field_text(v) for v in values]


def write_csv(path: Path, columns: Sequence[str], getter: Callable[[object], tuple], records: Iterable) -> None:
    """Write ``records`` to ``path``: a header of ``columns``, then ``getter(record)`` per row."""
    records = records if isinstance(records, list) else list(records)
    if len(columns) < 2:
        # A lone column: csv writes an empty field as "" there (so the row is not blank); let it.
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            writer.writerows([plain_field(getter(r))] for r in records)
        return
    with open(path, "w", newline="") as fh:
        fh.write(",".join(_quoted(c) for c in columns) + "\r\n")
        for start in range(0, len(records), CHUNK_ROWS):
            chunk = records[start:start + CHUNK_ROWS]
            prepared = [format_column(col) for col in zip(*map(getter, chunk))]
            # '%' inside a value is substituted, never interpreted: only the template holds conversions.
            template = ",".join(conv for conv, _ in prepared) + "\r\n"
            fh.write("".join(map(template.__mod__, zip(*(vals for _, vals in prepared)))))
