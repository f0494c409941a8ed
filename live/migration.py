"""Token-based live migration of one running generation from a source worker to a destination worker.

ServerlessLLM (Fu et al., OSDI'24, §5) frees the node that would start a model fastest by moving
running inferences elsewhere. It moves tokens, not the KV cache: the destination, with the model
already loaded, re-computes the cache from the prompt and the tokens generated so far while the
source keeps generating; it catches up in rounds (each round feeds the tokens the source produced
during the previous one) until only a few tokens separate them; then the source stops, the
destination takes the last tokens and the sampler's state, and generation continues there. The
client's stream only sees a slightly longer gap between two tokens.

This module holds the controller-side state of a running request (:class:`RunningRequest`) and the
hand-over protocol for one request (:func:`take_over`) over the :class:`~live.worker.NodeWorker`
interface; :mod:`live.controller` decides what to move (with the scheduler core's plan), loads the
destination instance and frees the source's GPU slot for the model that needed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from sllmsim.errors import SllmsimError

from live.generation import DecodeCheckpoint, GenerationRequest


class MigrationError(SllmsimError):
    """A move that could not be carried out; the request went on on its source."""


@dataclass(frozen=True, slots=True)
class MigrationSettings:
    """How the hand-over of one request proceeds."""

    handover_gap_tokens: int = 2
    """Catch up until at most this many generated tokens are not yet in the destination's cache;
    then pause the source (the rest is fed during the pause)."""
    max_rounds: int = 8
    """Catch-up rounds at most; a destination that cannot gain on its source hands over after them."""


@dataclass(eq=False)
class RunningRequest:
    """A request being generated, as the controller tracks it for a possible migration.

    Updated by the controller's streaming loop as the worker's events pass through it: the prompt's
    token count, and each generated token id, in order.
    """

    ticket: Any
    """The controller's ticket (its ``instance`` changes when the request moves)."""
    request: GenerationRequest
    session_id: str
    prompt_tokens: int = 0
    tokens: list[int] = field(default_factory=list)
    """Generated token ids seen so far."""
    accepted: bool = False
    """The prompt was accepted: the request is decoding and can be moved."""
    closed: bool = False
    """The generation ended here (finished, failed, or its client left)."""
    left_source: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the stream that was handed over is closed (its source thread stopped)."""
    _checkpoint: asyncio.Future | None = None
    _decision: asyncio.Future | None = None

    @property
    def tokens_so_far(self) -> int:
        """Prompt plus generated tokens: what a destination must re-compute."""
        return self.prompt_tokens + len(self.tokens)

    def expect_pause(self) -> asyncio.Future:
        """A future for the checkpoint of the pause about to be asked for (None if the request ends first)."""
        self._checkpoint = asyncio.get_running_loop().create_future()
        if self.closed:
            self._checkpoint.set_result(None)
        return self._checkpoint

    async def paused(self, checkpoint: DecodeCheckpoint) -> AsyncIterator | None:
        """Called by the streaming loop at a :class:`~live.worker.Paused` event: hand the checkpoint to
        the migration and wait for its decision, the destination's stream (None: go on here)."""
        self._decision = asyncio.get_running_loop().create_future()
        if self._checkpoint is not None and not self._checkpoint.done():
            self._checkpoint.set_result(checkpoint)
        else:  # nobody waits for this pause any more
            self._decision.set_result(None)
        return await self._decision

    @property
    def awaits_decision(self) -> bool:
        """The streaming loop is paused and waits for :meth:`decide`."""
        return not self.closed and self._decision is not None and not self._decision.done()

    def decide(self, stream: AsyncIterator | None) -> bool:
        """Give the waiting streaming loop its decision; False when it no longer waits (client gone)."""
        if not self.awaits_decision:
            return False
        self._decision.set_result(stream)
        return True

    def call_off_pause(self) -> None:
        """The migration gives up: a pause still to come, or one under way, goes on here."""
        if self._checkpoint is not None and not self._checkpoint.done():
            self._checkpoint.cancel()
        self.decide(None)

    def end(self) -> None:
        """The generation ended (called by the streaming loop, however it ended)."""
        self.closed = True
        if self._checkpoint is not None and not self._checkpoint.done():
            self._checkpoint.set_result(None)
        if self._decision is not None and not self._decision.done():
            self._decision.cancel()
        self.left_source.set()


@dataclass(frozen=True, slots=True)
class RequestMove:
    """What moving one request did."""

    moved: bool
    """False when the request ended on its source before the hand-over (nothing to move)."""
    recomputed_tokens: int = 0
    """Tokens whose KV cache the destination computed (prompt plus generated at the hand-over)."""
    rounds: int = 0
    """Catch-up rounds after the first prefill."""
    handover_tokens: int = 0
    """Generated tokens at the hand-over."""
    pause_s: float = 0.0
    """Seconds from the source's pause (at its last token) until the destination's stream took over."""


async def take_over(run: RunningRequest, source, dest, dest_instance_id: str, settings: MigrationSettings,
                    switch: Callable[[], None], clock: Callable[[], float] = time.monotonic) -> RequestMove:
    """Move ``run`` from its ``source`` worker to ``dest_instance_id`` on ``dest`` (token-based).

    ``switch()`` is called right before the streaming loop switches to the destination's stream, to
    update the controller's books. Raises :class:`MigrationError` (or the worker's exception) when
    the move fails; the request then goes on on its source, unharmed.
    """
    sid = run.session_id
    fed = list(run.tokens)
    try:
        prompt_tokens = await dest.resume_prefill(dest_instance_id, sid, run.request, fed)
        if prompt_tokens != run.prompt_tokens:
            raise MigrationError(f"the destination tokenized the prompt into {prompt_tokens} tokens, the source "
                                 f"into {run.prompt_tokens}")
        rounds = 0
        while not run.closed and rounds < settings.max_rounds:
            new = run.tokens[len(fed):]
            if len(new) <= settings.handover_gap_tokens:
                break
            await dest.resume_feed(sid, new)
            fed += new
            rounds += 1
    except BaseException:
        await dest.drop_session(sid)
        raise
    if run.closed:
        await dest.drop_session(sid)
        return RequestMove(False)

    waiting = run.expect_pause()
    await source.pause(sid)
    # From here the source stops at its next token and waits: whatever fails must let it go on.
    try:
        checkpoint = await waiting
        if checkpoint is None:  # it ended on the source first
            await dest.drop_session(sid)
            return RequestMove(False)
        paused_s = clock()
        if list(checkpoint.generated[:len(fed)]) != fed:
            raise MigrationError("the source's tokens differ from those fed to the destination")
        await dest.resume_feed(sid, list(checkpoint.generated[len(fed):]))
        stream = dest.resume_generate(sid, checkpoint)
    except BaseException:
        await dest.drop_session(sid)
        run.call_off_pause()
        await source.unpause(sid)
        raise
    if not run.awaits_decision:  # its client left during the pause
        with contextlib.suppress(Exception):
            await stream.aclose()
        return RequestMove(False)
    run.left_source.clear()
    switch()
    run.decide(stream)
    pause_s = clock() - paused_s
    await run.left_source.wait()
    return RequestMove(True, run.prompt_tokens + len(checkpoint.generated), rounds, len(checkpoint.generated),
                       pause_s)
