"""The fast CSV writer against csv.writer, on random columns of every value type records hold."""

import csv
import math
import random
from enum import Enum
from operator import itemgetter

import pytest

from sllmsim.record_csv import CHUNK_ROWS, format_column, plain_field, write_csv


class _Colour(str, Enum):
    RED = "red"
    COMMA = "a,b"


_STRINGS = ("", "plain", "with,comma", 'with"quote', "line\nbreak", "cr\rhere", " spaced ", "100%", "%s", "ünï")
_FLOATS = (0.0, -0.0, 1.0 / 3, 1e-10, 12345678.123456789, -2.5, 1e300, math.inf, -math.inf, math.nan, 0.1 + 0.2)


def _value(rng: random.Random, kind: str):
    if kind == "float":
        return rng.choice(_FLOATS) if rng.random() < 0.3 else rng.uniform(-1e6, 1e6)
    if kind == "int":
        return rng.randint(-10**12, 10**12)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "str":
        return rng.choice(_STRINGS)
    if kind == "float_or_none":
        return None if rng.random() < 0.3 else rng.uniform(0, 10)
    # A mixed column: every type a record field can hold.
    return rng.choice((None, True, 3, 2.75, "x,y", _Colour.RED, _Colour.COMMA))


def _reference(path, columns, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows([plain_field(v) for v in row] for row in rows)


@pytest.mark.parametrize("seed", range(6))
def test_bytes_equal_csv_writer_on_random_columns(tmp_path, seed):
    rng = random.Random(seed)
    kinds = [rng.choice(("float", "int", "bool", "str", "float_or_none", "mixed")) for _ in range(rng.randint(2, 9))]
    columns = [f"c{i}" if i % 3 else f"c,{i}" for i in range(len(kinds))]
    n = rng.choice((0, 1, 7, 300))
    rows = [tuple(_value(rng, k) for k in kinds) for _ in range(n)]
    write_csv(tmp_path / "fast.csv", columns, itemgetter(*range(len(kinds))), rows)
    _reference(tmp_path / "ref.csv", columns, rows)
    assert (tmp_path / "fast.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()


def test_chunks_with_different_column_types_and_a_lone_column(tmp_path):
    # The first chunk's column is all floats, the next one's mixes in None: each chunk has its template.
    rows = [(float(i), "s") for i in range(CHUNK_ROWS)] + [(None, "t,u"), (1.5, "v")]
    write_csv(tmp_path / "fast.csv", ["a", "b"], itemgetter(0, 1), rows)
    _reference(tmp_path / "ref.csv", ["a", "b"], rows)
    assert (tmp_path / "fast.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()
    lone = [("",), ("x",), (None,)]
    write_csv(tmp_path / "lone.csv", ["only"], itemgetter(0), lone)
    _reference(tmp_path / "lone-ref.csv", ["only"], lone)
    assert (tmp_path / "lone.csv").read_bytes() == (tmp_path / "lone-ref.csv").read_bytes()


def test_column_conversions():
    assert format_column((1.0, 2.5)) == ("%.9f", (1.0, 2.5))
    assert format_column((True, False))[0] == "%d"
    assert format_column(("a", 'b"c'))[1] == ["a", '"b""c"']
    assert format_column((None, 0.5))[1] == ["", "0.500000000"]
