"""Live mode's errors that the server answers with their own HTTP status (:mod:`live.http_errors`)."""

from __future__ import annotations

from sllmsim.errors import SllmsimError


class UnknownModelError(SllmsimError):
    """A request or command names a model that is not deployed (HTTP 404)."""

    def __init__(self, model: str, deployed: list[str], note: str = ""):
        self.model = model
        self.deployed = deployed
        listing = ", ".join(deployed) if deployed else "none"
        super().__init__(f"model {model!r} is not deployed{note}; deployed models: {listing}")


class ConflictError(SllmsimError):
    """A deploy of a name that is already deployed or still being deleted (HTTP 409)."""


class LoadFailedError(SllmsimError):
    """The instance that a request waited for failed to load (HTTP 500 with the reason)."""


class ShuttingDownError(SllmsimError):
    """The server's drain time ran out before the request finished (HTTP 503, or a stream's error event)."""
