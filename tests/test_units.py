"""Size and bandwidth strings use the reference implementation's binary units."""

from __future__ import annotations

import pytest

from sllmsim.units import UnitError, format_bytes, parse_bandwidth_bytes_per_s, parse_size_bytes


@pytest.mark.parametrize("text, expected", [
    ("32GB", 32 * 1024**3), ("128GB", 128 * 1024**3), ("512MB", 512 * 1024**2), ("1.5 KB", 1536),
    ("2TB", 2 * 1024**4), ("10B", 10), ("4gb", 4 * 1024**3), (4096, 4096),
])
def test_sizes(text, expected):
    assert parse_size_bytes(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("24GB/s", 24 * 1024**3), ("5GB/s", 5 * 1024**3), ("10Gbps", 10 * 1024**3 / 8), ("100Mbps", 100 * 1024**2 / 8),
    ("1 TB/s", 1024**4), ("800 MB / s", 800 * 1024**2), (1e9, 1e9),
])
def test_bandwidths(text, expected):
    assert parse_bandwidth_bytes_per_s(text) == expected


@pytest.mark.parametrize("bad", ["32", "32 GiB", "fast", "-1GB", True, None, [1]])
def test_bad_sizes_say_what_was_expected(bad):
    with pytest.raises(UnitError, match="expected a size"):
        parse_size_bytes(bad)


@pytest.mark.parametrize("bad", ["10", "10 Gb", "0GB/s", "5GB", 0, -3, "10gbps"])
def test_bad_bandwidths_say_what_was_expected(bad):
    with pytest.raises(UnitError, match="expected a"):
        parse_bandwidth_bytes_per_s(bad)


def test_format_bytes():
    assert format_bytes(5 * 1024**3) == "5.00 GiB"
    assert format_bytes(12) == "12 B"
