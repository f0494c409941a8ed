"""Continuous batching for one loaded instance: one generation loop, one forward pass per step.

An instance's :class:`BatchEngine` runs a single thread. Each step it runs one forward pass over
every token whose keys and values are still to compute — the last token of each running request,
the whole prompt of each newcomer, the catch-up tokens of a generation being taken over by live
migration — and then samples one token for every running request. Requests join (their prefill
rides in the next step's pass) and leave (end token, stop sequence, budget, cancellation, pause)
between steps, up to ``max_batch_size`` at once.

Why hand-written rather than transformers' continuous-batching manager (``generate_batch`` /
``init_continuous_batching``, which does run on the CPU): its generation config is one for the
whole manager (no per-request temperature, top-p or seed), it samples inside its own loop (no
seeded per-request ``torch.Generator`` whose state can travel in a migration checkpoint), and it
has no token-level pause point. What is kept from transformers is the model itself and its
attention plug-in point (``AttentionInterface``): the engine registers one attention function.

**Batch invariance** (what live migration and "a request's reply does not depend on its
companions" rest on). The pass packs every token of the step into one sequence of batch size 1,
``(1, T)``, with each token's own position id, and the registered attention function attends each
request's rows to that request's own KV cache only (it keeps the caches itself; the model runs
with ``use_cache=False``). Everything else in a decoder layer acts row by row except the matrix
products, whose rows depend in their last bits on how many rows are multiplied at once (MKL picks
kernels by shape; measured on this machine: M=1, 2-3 and 4+ differ, and an odd last row of M=5
differs from the rest). Padding every pass to a multiple of :data:`ROW_TILE` rows made each row's
result independent of M and of the other rows for every width tried (up to 512 rows), so a token's
keys, values and logits are the same whatever it is batched with; the tests check it end to end.
Attention is computed in two shapes only: a prompt as one causal chunk (the first pass of a
request), every generated token as its own row against its prefix — so a migration destination
rebuilds a source's cache bit for bit in one pass (prompt chunk, then each generated token as a
row), and the canonical block layout of :class:`~live.generation.Decoder` is not needed here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from torch.nn.functional import scaled_dot_product_attention
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from live.generation import DecodeCheckpoint, DecodeControl, Decoder, GenerationOutput, GenerationRequest
from sllmsim.errors import SllmsimError

#: Rows of every packed pass are padded to a multiple of this (see the module docstring).
ROW_TILE = 8
#: Prompt tokens admitted into one step's pass beyond the running requests' rows (longer prompts
#: still go, one per step), so a burst of long prompts does not stall every running request at once.
PREFILL_TOKENS_PER_STEP = 512
#: How often (seconds) an engine with only paused or queued requests looks at their controls again.
_POLL_S = 0.02

ATTN_IMPLEMENTATION = "sllm_packed"

_plan = threading.local()


class BatchingError(SllmsimError):
    """A model the batching engine cannot drive (its attention does not go through transformers'
    attention interface)."""


def _packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The attention function the engine registers: per-request attention when a packed pass is
    running on this thread, plain SDPA otherwise (the model then works as before, e.g. for
    :class:`~live.generation.Decoder`)."""
    plan = getattr(_plan, "current", None)
    if plan is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    if kwargs.get("sliding_window") is not None:
        raise BatchingError("sliding-window attention is not supported by the batching engine")
    return plan.attend(module.layer_idx, query, key, value, scaling), None


AttentionInterface.register(ATTN_IMPLEMENTATION, _packed_attention)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)


class BatchedSequence(Decoder):
    """One request inside an engine: a :class:`Decoder` (prompt, tokens, sampler, streamed text)
    whose KV cache the engine's packed passes fill instead of its own forward passes."""

    def __init__(self, model, tokenizer, request: GenerationRequest):
        super().__init__(model, tokenizer, request)
        self.kv: list[list[torch.Tensor] | None] = [None] * model.config.num_hidden_layers

    def pending(self) -> list[int]:
        """Tokens (prompt first, then generated) whose keys and values are not computed yet."""
        return (self.prompt_ids + self.generated)[self._fed:]

    def _sync(self) -> None:
        raise RuntimeError("a batched sequence's cache is filled by its engine")


@dataclass(slots=True)
class _Segment:
    seq: BatchedSequence
    offset: int
    """First row of the packed pass that belongs to this sequence."""
    length: int
    chunk: int
    """Leading rows attended as one causal chunk (the prompt, on a sequence's first pass); the rest
    each attend as a single row."""
    cached: int
    """Tokens the sequence's cache held before this pass."""


class _Plan:
    """One packed pass: which rows belong to which sequence."""

    def __init__(self, segments: list[_Segment]):
        self.segments = segments

    def attend(self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               scaling: float | None) -> torch.Tensor:
        # query (1, heads, T, dim); key and value (1, kv_heads, T, dim). Returns (1, T, heads, dim).
        out = query.new_zeros((1, query.shape[2], query.shape[1], query.shape[3]))
        rep = query.shape[1] // key.shape[1]
        for seg in self.segments:
            s, n = seg.offset, seg.length
            new_k, new_v = key[:, :, s:s + n], value[:, :, s:s + n]
            kv = seg.seq.kv[layer]
            if kv is None:
                keys, values = new_k.contiguous(), new_v.contiguous()
            else:
                keys, values = torch.cat([kv[0], new_k], dim=2), torch.cat([kv[1], new_v], dim=2)
            seg.seq.kv[layer] = [keys, values]
            if seg.chunk:
                c = seg.chunk
                o = scaled_dot_product_attention(query[:, :, s:s + c], repeat_kv(keys[:, :, :c].contiguous(), rep),
                                                 repeat_kv(values[:, :, :c].contiguous(), rep), is_causal=True,
                                                 scale=scaling)
                out[:, s:s + c] = o.transpose(1, 2)
            for i in range(seg.chunk, n):
                end = seg.cached + i + 1
                k = keys if end == keys.shape[2] else keys[:, :, :end].contiguous()
                v = values if end == values.shape[2] else values[:, :, :end].contiguous()
                o = scaled_dot_product_attention(query[:, :, s + i:s + i + 1], repeat_kv(k, rep), repeat_kv(v, rep),
                                                 scale=scaling)
                out[:, s + i] = o[:, :, 0]
        return out


def enable_batching(model) -> None:
    """Route ``model``'s attention through the engine's function (plain SDPA outside a pass)."""
    if model.config._attn_implementation == ATTN_IMPLEMENTATION:
        return
    try:
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
    except (ValueError, AttributeError) as exc:
        raise BatchingError(f"{type(model).__name__}: its attention cannot be replaced ({exc})") from None


@torch.inference_mode()
def packed_pass(model, seqs: Sequence[BatchedSequence], pad_id: int = 0) -> None:
    """One forward pass computing every pending token of ``seqs``; each sequence's ``_logits``
    become those of its last token."""
    enable_batching(model)  # without it the pass would silently attend within itself only
    ids: list[int] = []
    positions: list[int] = []
    segments: list[_Segment] = []
    last_rows: list[int] = []
    for seq in seqs:
        tokens = seq.pending()
        cached = seq._fed
        chunk = len(seq.prompt_ids) if cached == 0 else 0
        segments.append(_Segment(seq, len(ids), len(tokens), chunk, cached))
        ids.extend(tokens)
        positions.extend(range(cached, cached + len(tokens)))
        last_rows.append(len(ids) - 1)
    pad = -len(ids) % ROW_TILE
    ids.extend([pad_id] * pad)
    positions.extend([0] * pad)
    keep = last_rows + [last_rows[-1]] * (-len(last_rows) % ROW_TILE)
    device = seqs[0].device
    _plan.current = _Plan(segments)
    try:
        out = model(input_ids=torch.tensor([ids], device=device), position_ids=torch.tensor([positions], device=device),
                    use_cache=False, logits_to_keep=torch.tensor(keep, device=device))
    finally:
        _plan.current = None
    for j, seg in enumerate(segments):
        seg.seq._fed += seg.length
        seg.seq._cached_generated = len(seg.seq.generated)
        seg.seq._logits = out.logits[:, j, :]
        seg.seq.forward_passes += 1


Emit = Callable[[object], None]
Done = Callable[[GenerationOutput | BaseException], None]


@dataclass(eq=False, slots=True)
class _Entry:
    """A generation the engine drives: its sequence (built at admission), control and callbacks."""

    control: DecodeControl
    emit: Callable[[str, int | None], None]
    on_pause: Callable[[DecodeCheckpoint], None]
    done: Done
    on_accept: Callable[[int], None] | None = None
    request: GenerationRequest | None = None
    seq: BatchedSequence | None = None
    checkpoint: DecodeCheckpoint | None = None
    paused: bool = False


@dataclass(eq=False, slots=True)
class _CatchUp:
    seq: BatchedSequence
    future: Future = field(default_factory=Future)


class BatchEngine:
    """The generation loop of one loaded instance (see the module docstring); thread-safe.

    :meth:`start` and :meth:`resume` add generations; :meth:`prefill` and :meth:`feed` build the
    cache of a generation being taken over. Callbacks run on the engine's thread.
    """

    def __init__(self, model, tokenizer, max_batch_size: int, name: str = "engine"):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        enable_batching(model)
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._cond = threading.Condition()
        self._incoming: list[_Entry | _CatchUp] = []
        self._closed = False
        self._waiting: list[_Entry] = []
        self._active: list[_Entry] = []
        """Admitted generations, running or paused (a paused one keeps its slot, as a paused thread did)."""
        self.steps = 0
        """Packed passes run so far."""
        self.max_batch_seen = 0
        """Most generations that shared one pass."""
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # -- called from any thread --------------------------------------------------------------

    def start(self, request: GenerationRequest, control: DecodeControl, on_token: Callable[[str, int | None], None],
              on_pause: Callable[[DecodeCheckpoint], None], done: Done,
              on_accept: Callable[[int], None] | None = None) -> None:
        """Queue a generation of ``request``. At admission its prompt is tokenized (``on_accept(n)``
        or ``done(GenerationInputError)``); then ``on_token(delta, token_id)`` per token as in
        :meth:`Decoder.run`, ``on_pause(checkpoint)`` when ``control`` pauses it, and finally
        ``done(output)``. ``control.stop()`` (or its cancel event) drops it at the next step."""
        self._put(_Entry(control, on_token, on_pause, done, on_accept, request=request))

    def prefill(self, request: GenerationRequest, generated: Sequence[int]) -> Future:
        """Start taking a generation over: a future of the :class:`BatchedSequence` whose cache holds the
        prompt and ``generated`` (or of the request's :class:`GenerationInputError`)."""
        future: Future = Future()
        try:
            seq = BatchedSequence(self.model, self.tokenizer, request)  # tokenizing: quick, and thread-safe
        except BaseException as exc:
            future.set_exception(exc)
            return future
        seq.generated.extend(generated)
        catch_up = _CatchUp(seq)
        catch_up.future.add_done_callback(
            lambda f: future.set_exception(f.exception()) if f.exception() else future.set_result(seq))
        self._put(catch_up)
        return future

    def feed(self, seq: BatchedSequence, token_ids: Sequence[int]) -> Future:
        """Extend a taken-over generation's cache with more of the source's tokens."""
        seq.generated.extend(token_ids)
        catch_up = _CatchUp(seq)
        self._put(catch_up)
        return catch_up.future

    def resume(self, seq: BatchedSequence, checkpoint: DecodeCheckpoint, control: DecodeControl,
               on_token: Callable[[str, int | None], None], on_pause: Callable[[DecodeCheckpoint], None],
               done: Done) -> None:
        """Continue a taken-over generation from the source's ``checkpoint`` (as :meth:`start`, with
        no prompt acceptance)."""
        self._put(_Entry(control, on_token, on_pause, done, seq=seq, checkpoint=checkpoint))

    def wake(self) -> None:
        """Look at the controls now (after a pause, unpause or stop)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the loop; generations still inside end as cancelled."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    @property
    def occupied(self) -> int:
        """Generations admitted now (running or paused)."""
        return len(self._active)

    def _put(self, item) -> None:
        with self._cond:
            if self._closed:
                raise BatchingError("the instance's engine is closed")
            self._incoming.append(item)
            self._cond.notify_all()

    # -- the engine's thread -----------------------------------------------------------------

    def _loop(self) -> None:
        catch_ups: list[_CatchUp] = []
        try:
            while True:
                with self._cond:
                    while not (self._closed or self._incoming or self._running()):
                        self._cond.wait(_POLL_S if (self._waiting or self._active) else None)
                        if self._waiting or self._active:
                            break
                    if self._closed:
                        break
                    incoming, self._incoming = self._incoming, []
                for item in incoming:
                    (catch_ups if isinstance(item, _CatchUp) else self._waiting).append(item)
                self._review()
                self._admit()
                running = self._running()
                # A catch-up fed no token (its source paused right after the last feed) has nothing
                # to compute: in the pass it would be an empty segment, which takes the logits of
                # the row before it (or, alone, makes an empty pass).
                pending = [e.seq for e in running if e.seq.pending()] + [c.seq for c in catch_ups if c.seq.pending()]
                if pending:
                    try:
                        packed_pass(self.model, pending, self._pad_id)
                    except BaseException as exc:
                        for c in catch_ups:
                            c.future.set_exception(exc)
                        for e in running:
                            self._finish(e, exc)
                        catch_ups = []
                        continue
                    self.steps += 1
                    self.max_batch_seen = max(self.max_batch_seen, len(pending))
                for c in catch_ups:
                    c.future.set_result(None)
                catch_ups = []
                for entry in running:
                    self._step(entry)
        finally:
            with self._cond:
                self._closed = True
                left, self._incoming = self._incoming, []
            for item in left + catch_ups:
                if isinstance(item, _CatchUp):
                    item.future.set_exception(BatchingError("the instance's engine is closed"))
                else:
                    self._waiting.append(item)
            for entry in self._waiting + self._active:
                self._end(entry, "cancelled")

    def _running(self) -> list[_Entry]:
        return [e for e in self._active if not e.paused]

    def _review(self) -> None:
        """Controls changed from outside: cancelled queued generations go, paused ones resume or end."""
        for entry in list(self._waiting):
            if entry.control.stopped:
                self._waiting.remove(entry)
                self._end(entry, "cancelled")
        for entry in list(self._active):
            if not entry.paused:
                if entry.control.stopped:  # dropped before its next pass: the slot is free at once
                    self._end(entry, "cancelled")
            else:
                if entry.control.stopped:  # continued elsewhere, or its client left
                    self._finish(entry, entry.seq._output("handed_over"))
                elif not entry.control.pause_requested:
                    entry.paused = False

    def _admit(self) -> None:
        budget = PREFILL_TOKENS_PER_STEP
        while self._waiting and len(self._active) < self.max_batch_size:
            entry = self._waiting[0]
            try:
                if entry.seq is None:
                    entry.seq = BatchedSequence(self.model, self.tokenizer, entry.request)
                elif entry.checkpoint is not None:  # a take-over: the source's last tokens, text and sampler
                    entry.seq.generated.extend(entry.seq.missing(entry.checkpoint))
                    entry.seq.adopt(entry.checkpoint)
                    entry.checkpoint = None
            except BaseException as exc:
                self._waiting.pop(0)
                entry.done(exc)
                continue
            cost = len(entry.seq.pending())
            if cost > budget and budget < PREFILL_TOKENS_PER_STEP:
                break  # next step
            budget -= cost
            self._waiting.pop(0)
            if entry.on_accept is not None:
                entry.on_accept(len(entry.seq.prompt_ids))
            self._active.append(entry)

    def _step(self, entry: _Entry) -> None:
        """Sample one token of a running generation and act on it, as :meth:`Decoder.run` does."""
        seq = entry.seq
        if len(seq.generated) >= seq.budget:
            self._end(entry, "length")
            return
        try:
            ended = seq.take(seq.sampler(seq._all_ids, seq._logits), entry.emit)
        except BaseException as exc:
            self._finish(entry, exc)
            return
        if ended is not None:
            self._end(entry, ended)
        elif entry.control.stopped:
            self._end(entry, "cancelled")
        elif entry.control.pause_requested:
            entry.on_pause(seq.checkpoint())
            entry.paused = True

    def _end(self, entry: _Entry, finish: str) -> None:
        if entry.seq is None:
            entry.done(GenerationOutput("", 0, 0, finish))
            return
        try:
            entry.seq.flush(entry.emit)
        except BaseException as exc:
            self._finish(entry, exc)
            return
        self._finish(entry, entry.seq._output(finish))

    def _finish(self, entry: _Entry, result: GenerationOutput | BaseException) -> None:
        if entry in self._active:
            self._active.remove(entry)
        if entry.seq is not None:
            entry.seq.kv = []  # free the slot's memory at once
        entry.done(result)
