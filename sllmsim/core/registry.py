"""One registry for every pluggable policy, chosen by name from configs.

A policy is one class plus ``@register(kind, name)``. A ``"package.module:Name"`` string imports a
policy class from outside the package, the way vLLM resolves a scheduler class.

The built-in policies register themselves when their modules are imported, and
``sllmsim/core/__init__.py`` imports them all. Python runs a package's ``__init__`` before any of its
submodules, so whoever imports this module has the built-ins registered by the time they call
:func:`names` or :func:`resolve`, and this module needs no import of the policy modules (which
import it): no cycle.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable

from sllmsim.errors import SllmsimError

_REGISTRY: dict[str, dict[str, type]] = {}

#: The placement policy a trace, an experiment or live mode runs unless it names another.
DEFAULT_PLACEMENT = "storage_aware"
#: The autoscaling policy run unless another is named (the reference's only metric, ``concurrency``).
DEFAULT_AUTOSCALE = "concurrency"


class UnknownPolicyError(SllmsimError):
    """A policy name that is neither registered nor an importable ``module:Class`` path."""


def register(kind: str, name: str) -> Callable[[type], type]:
    """Class decorator: make ``cls`` available as policy ``name`` of ``kind`` (e.g. ``placement``)."""

    def deco(cls: type) -> type:
        table = _REGISTRY.setdefault(kind, {})
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} policy {name!r} registered twice")
        table[name] = cls
        cls.policy_name = name
        return cls

    return deco


def names(kind: str) -> list[str]:
    """Registered names of one kind, sorted."""
    return sorted(_REGISTRY.get(kind, {}))


def resolve(kind: str, name: str) -> type:
    """The class registered as ``name`` of ``kind``, or imported from ``"module:Class"``."""
    table = _REGISTRY.get(kind, {})
    if name in table:
        return table[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            found = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise UnknownPolicyError(f"cannot import {kind} policy {name!r}: {exc}") from None
        if not isinstance(found, type):  # e.g. 'os:system': never call an arbitrary function
            raise UnknownPolicyError(f"{kind} policy {name!r} is not a class (a {type(found).__name__})")
        return found
    close = difflib.get_close_matches(name, list(table), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UnknownPolicyError(
        f"unknown {kind} policy {name!r}{hint} (known: {', '.join(sorted(table))}; or give 'module:Class')"
    )

