"""Parsing of the size and bandwidth strings used by the hardware JSON and deploy configs.

Units are binary, as in the reference ServerlessLLM implementation: ``1GB = 1024**3`` bytes,
``1GB/s = 1024**3`` bytes/s and ``1Gbps = 1024**3 / 8`` bytes/s.
"""

from __future__ import annotations

import math
import re

_SIZE_FACTORS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_BIT_FACTORS = {"bps": 1, "Kbps": 1024, "Mbps": 1024**2, "Gbps": 1024**3, "Tbps": 1024**4}

_NUMBER = r"(?P<num>[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)"
_SIZE_RE = re.compile(rf"^\s*{_NUMBER}\s*(?P<unit>[KMGT]?B)\s*$", re.IGNORECASE)
_BYTES_RATE_RE = re.compile(rf"^\s*{_NUMBER}\s*(?P<unit>[KMGT]?B)\s*/\s*s\s*$", re.IGNORECASE)
_BITS_RATE_RE = re.compile(rf"^\s*{_NUMBER}\s*(?P<unit>[KMGT]?bps)\s*$")


class UnitError(ValueError):
    """A size or bandwidth string that does not parse; the message says what was expected."""


def _as_number(num: str) -> float | int:
    value = float(num)
    if not math.isfinite(value):
        raise UnitError(f"expected a finite number, got {num!r}")
    return int(value) if value.is_integer() else value


def parse_size_bytes(value: object) -> int:
    """Parse ``"32GB"``, ``"512 MB"`` or a plain non-negative number of bytes into bytes."""
    if isinstance(value, bool):
        raise UnitError(f"expected a size such as '32GB' or a number of bytes, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise UnitError(f"expected a finite, non-negative size, got {value!r}")
        return int(value)
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            unit = match.group("unit").upper()
            return int(_as_number(match.group("num")) * _SIZE_FACTORS[unit])
    raise UnitError(
        f"expected a size such as '32GB' (units B, KB, MB, GB, TB; binary) or a number of bytes, got {value!r}"
    )


def parse_bandwidth_bytes_per_s(value: object) -> float:
    """Parse ``"24GB/s"`` (bytes) or ``"10Gbps"`` (bits) or a plain number of bytes/s into bytes/s."""
    if isinstance(value, bool):
        raise UnitError(f"expected a bandwidth such as '5GB/s' or '10Gbps', got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0:
            raise UnitError(f"expected a finite, positive bandwidth, got {value!r}")
        return value
    if isinstance(value, str):
        match = _BYTES_RATE_RE.match(value)
        if match:
            rate = _as_number(match.group("num")) * _SIZE_FACTORS[match.group("unit").upper()]
        else:
            match = _BITS_RATE_RE.match(value)
            rate = _as_number(match.group("num")) * _BIT_FACTORS[match.group("unit")] / 8 if match else None
        if rate is not None:
            if rate <= 0:
                raise UnitError(f"expected a positive bandwidth, got {value!r}")
            return rate
    raise UnitError(
        "expected a bandwidth such as '5GB/s' (B/s, KB/s, MB/s, GB/s, TB/s) or '10Gbps' "
        f"(bps, Kbps, Mbps, Gbps, Tbps), got {value!r}"
    )


def size_text(nbytes: int) -> str:
    """A size in the hardware JSON's binary units: whole GB where it is one, else whole MB (rounded down)."""
    if nbytes % 1024**3 == 0:
        return f"{nbytes // 1024**3}GB"
    return f"{max(nbytes // 1024**2, 1)}MB"


def rate_text(bytes_per_s: float) -> str:
    """A bandwidth in the hardware JSON's units (binary MB/s), to four significant digits."""
    return f"{float(f'{bytes_per_s / 1024**2:.4g}'):g}MB/s"


def format_bytes(n_bytes: float) -> str:
    """Human-readable binary size, e.g. ``4.94 GiB``."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
