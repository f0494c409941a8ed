"""Errors raised at the input boundary; the CLI prints them without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


class SllmsimError(Exception):
    """Base of every error that the CLI reports as a one-line message instead of a traceback."""


class ConfigError(SllmsimError):
    """A bad input: names the file (or source), the field and what was expected."""

    def __init__(self, source: str, field: str, message: str):
        self.source = source
        self.field = field
        self.message = message
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {message}")


def check_keys(data: Mapping, allowed: Iterable[str], source: str, prefix: str = "") -> None:
    """Reject keys not in ``allowed``, suggesting the closest allowed key for a misspelling."""
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; allowed keys: {', '.join(allowed)}"
            raise ConfigError(source, f"{prefix}{key}", f"unknown key{hint}")
