"""Text generation for one request on a loaded transformers model: prompt building and a token loop.

A hand-written decode loop (rather than ``model.generate`` with a streamer thread) because the server
needs, per token: the exact moment of the first token (for the records), incremental text that never
splits a UTF-8 character or leaks the start of a stop sequence (for streaming), and a cancel check
(a client that disconnects stops the loop), and a pause point where live migration can take the
generation over (:class:`Decoder`, :class:`DecodeCheckpoint`). Sampling uses transformers' own logits
warpers, on the CPU with a seeded ``torch.Generator``, so a seed gives the same text on any device.

Everything here is blocking; the worker runs it in a thread.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from sllmsim.errors import SllmsimError


class GenerationInputError(SllmsimError):
    """A request this model cannot serve (prompt too long, no chat template); the API answers 400."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to pick tokens: ``temperature`` 0 means greedy; ``seed`` None means a fresh random seed."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    max_tokens_given: bool = False
    """Whether the client set ``max_tokens``: then more than the context leaves is an error (as vLLM
    answers); a default is cut to what the context leaves."""


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What to generate: a chat (``messages``) or a plain ``prompt``, and how to sample."""

    params: SamplingParams
    messages: tuple[dict, ...] | None = None
    prompt: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationOutput:
    """The finished generation."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    """``stop`` (end token or stop sequence), ``length`` (max_tokens or context) or ``cancelled``."""


def chat_prompt(tokenizer, messages: Sequence[dict]) -> str:
    """The model's chat template applied to ``messages``, ending with the assistant's turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise GenerationInputError("messages", "this model has no chat template; use /v1/completions instead")
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, request: GenerationRequest) -> list[int]:
    """Token ids of the request's prompt (chat template applied for chats)."""
    if request.messages is not None:
        # The template already holds any special tokens the model expects.
        return list(tokenizer(chat_prompt(tokenizer, request.messages), add_special_tokens=False)["input_ids"])
    return list(tokenizer(request.prompt or "")["input_ids"])


def _longest_token_bytes(tokenizer) -> int:
    """UTF-8 bytes of the tokenizer's longest vocabulary entry (computed once per tokenizer).

    A token never stands for more text than its entry spells (byte-level BPE maps each byte to one
    character, SentencePiece writes a space as the 3-byte U+2581), so ``bytes / this`` is a lower
    bound on a text's token count that costs no tokenization.
    """
    cached = getattr(tokenizer, "_sllmsim_longest_token_bytes", None)
    if cached is None:
        cached = max((len(t.encode("utf-8", "surrogatepass")) for t in tokenizer.get_vocab()), default=1)
        try:
            tokenizer._sllmsim_longest_token_bytes = cached
        except AttributeError:  # a tokenizer that takes no attributes is measured each time
            pass
    return max(1, cached)


def check_prompt_size(tokenizer, request: GenerationRequest, max_len: int | None) -> None:
    """Refuse, before tokenizing it, a prompt whose text alone needs more tokens than ``max_len``."""
    if max_len is None:
        return
    texts = [m.get("content") or "" for m in request.messages] if request.messages is not None \
        else [request.prompt or ""]
    nbytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    at_least = -(-nbytes // _longest_token_bytes(tokenizer))
    if at_least >= max_len:
        raise GenerationInputError(
            "messages" if request.messages is not None else "prompt",
            f"the prompt's {nbytes} bytes are at least {at_least} tokens; this model's context is {max_len} tokens",
        )


def context_length(model) -> int | None:
    """Longest sequence the model's position embeddings allow, if the config says."""
    cfg = model.config
    for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` must not be streamed yet.

    An incomplete UTF-8 character decodes as U+FFFD and may still change; a suffix that starts a
    stop sequence may turn out to be one.
    """
    hold = 0
    while hold < len(text) and text[len(text) - 1 - hold] == "\ufffd":
        hold += 1
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return hold


class _Sampler:
    def __init__(self, params: SamplingParams):
        self.greedy = params.temperature == 0.0
        self.warpers = []
        if not self.greedy:
            if params.temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(params.temperature))
            if params.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(params.top_p))
        self.rng = torch.Generator(device="cpu")
        if params.seed is None:
            self.rng.seed()
        else:
            self.rng.manual_seed(params.seed)

    def __call__(self, input_ids: Callable[[], torch.Tensor], logits: torch.Tensor) -> int:
        scores = logits.float().cpu()
        if self.greedy:
            return int(scores.argmax(dim=-1)[0])
        ids = input_ids()
        for warper in self.warpers:
            scores = warper(ids, scores)
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.rng)[0, 0])


def _cache_argument(model) -> str:
    # transformers 5.2x renamed the KV-cache argument from ``past_key_values`` to ``cache``.
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _returned_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


#: Generated tokens whose KV-cache entries are re-computed together, as one chunk, once all of them
#: are known (see :class:`Decoder`): the cache layout a resumed generation can rebuild exactly.
CACHE_BLOCK_TOKENS = 16


def _croppable(cache) -> bool:
    """Whether the last entries of ``cache`` can be dropped: a dynamic cache of full-attention layers
    (sliding-window and linear-attention layers keep state that a crop cannot restore)."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer
    except ImportError:
        return False
    layers = getattr(cache, "layers", None)
    return isinstance(cache, DynamicCache) and bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


@dataclass(frozen=True, slots=True)
class DecodeCheckpoint:
    """A paused generation as plain data: everything another copy of the model needs to continue it
    exactly where it stopped (the basis of token-based live migration).

    The KV cache is deliberately not part of it: the destination re-computes it from the prompt
    (which it tokenizes itself from the request) and ``generated``.
    """

    generated: tuple[int, ...]
    """Token ids generated so far, in order."""
    emitted_chars: int
    """Characters of the decoded reply already streamed to the client."""
    rng_state: bytes
    """State of the sampler's seeded ``torch.Generator`` after the last sampled token."""


class DecodeControl:
    """Signals from the event loop to a decode loop running in a worker thread (thread-safe).

    ``stop()`` ends the loop at its next token; ``pause()`` makes it stop at its next token and
    wait, having handed its :class:`DecodeCheckpoint` out, until ``resume()`` (go on here) or
    ``stop()`` (the generation continues elsewhere, or its client left).
    """

    def __init__(self, cancel: threading.Event | None = None):
        self._cond = threading.Condition()
        self._state = "run"  # run, pause or stop
        self._cancel = cancel

    def stop(self) -> None:
        with self._cond:
            self._state = "stop"
            self._cond.notify_all()

    def pause(self) -> None:
        with self._cond:
            if self._state == "run":
                self._state = "pause"

    def resume(self) -> None:
        with self._cond:
            if self._state == "pause":
                self._state = "run"
                self._cond.notify_all()

    @property
    def stopped(self) -> bool:
        return self._state == "stop" or (self._cancel is not None and self._cancel.is_set())

    @property
    def pause_requested(self) -> bool:
        return self._state == "pause"

    def wait_while_paused(self) -> bool:
        """Block while paused; True when told to stop, False when told to go on."""
        with self._cond:
            while self._state == "pause":
                self._cond.wait()
            return self._state == "stop"


class Decoder:
    """One request's decoding on one loaded model: prompt, tokens so far, KV cache and sampler.

    A generation starts with :meth:`run` (prefill, then the token loop). Live migration resumes one
    on another copy of the model from tokens alone: :meth:`extend` it with the tokens generated so
    far, in as many rounds as the source produces them, :meth:`restore` the source's
    :class:`DecodeCheckpoint`, then :meth:`run` continues it, with the very tokens the source would
    have produced, greedy or seeded sampling alike (the sampler's state travels in the checkpoint).

    Exactness needs the destination's KV cache to be bit-identical to the source's, and a matrix
    product's rows depend in their last bits on how many rows are computed at once (BLAS kernels
    block differently), so one prefill over the prompt and all generated tokens would not do: near a
    tie a greedy choice flips, and the texts part (the tiny test models showed it after ~250 tokens).
    So every generation keeps its cache in one canonical layout: the prompt computed in one pass,
    then each complete block of :data:`CACHE_BLOCK_TOKENS` generated tokens computed as one chunk
    (when a block completes, its one-token entries are dropped and the block re-computed, at about
    the cost of the one-token step it replaces), then the last tokens one at a time. A destination
    rebuilds that layout in one pass per block plus fewer than a block of steps. (A cache whose
    entries cannot be dropped — sliding-window or linear attention — keeps one-token entries
    throughout, and is rebuilt one step per token: exact, but as slow as generating.)

    Raises :class:`GenerationInputError` at construction for a prompt the model cannot take.
    """

    def __init__(self, model, tokenizer, request: GenerationRequest):
        self.model = model
        self.tokenizer = tokenizer
        self.params = params = request.params
        max_len = context_length(model)
        check_prompt_size(tokenizer, request, max_len)
        self.prompt_ids = encode_prompt(tokenizer, request)
        if not self.prompt_ids:
            raise GenerationInputError("prompt", "the prompt is empty after tokenization")
        self.budget = params.max_tokens
        if max_len is not None:
            if len(self.prompt_ids) >= max_len:
                raise GenerationInputError(
                    "messages" if request.messages is not None else "prompt",
                    f"the prompt has {len(self.prompt_ids)} tokens; this model's context is {max_len} tokens",
                )
            room = max_len - len(self.prompt_ids)
            if params.max_tokens_given and params.max_tokens > room:
                raise GenerationInputError(
                    "max_tokens", f"max_tokens is {params.max_tokens}, but the prompt has {len(self.prompt_ids)} "
                    f"tokens and this model's context is {max_len} tokens: at most {room} can be generated")
            self.budget = min(self.budget, room)
        self.device = next(model.parameters()).device
        self.eos = _eos_ids(model, tokenizer)
        self.sampler = _Sampler(params)
        self.generated: list[int] = []
        self.emitted = 0
        self.text = ""
        self._cache = None
        self._logits: torch.Tensor | None = None
        self._fed = 0
        self._cached_generated = 0
        self._block = 0
        self._cache_arg = _cache_argument(model)
        self.forward_passes = 0
        """Forward passes run so far (the cost of a resume, in the tests)."""

    @property
    def tokens_in_cache(self) -> int:
        """Tokens (prompt first) whose keys and values the cache holds."""
        return self._fed

    def _forward(self, token_ids: Sequence[int]) -> None:
        step = torch.tensor([list(token_ids)], device=self.device)
        self._fed += len(token_ids)
        mask = torch.ones((1, self._fed), dtype=torch.long, device=self.device)
        extra = {} if self._cache is None else {self._cache_arg: self._cache}
        out = self.model(input_ids=step, attention_mask=mask, use_cache=True, **extra)
        self._cache = _returned_cache(out)
        self._logits = out.logits[:, -1, :]
        self.forward_passes += 1

    @torch.inference_mode()
    def _sync(self) -> None:
        """Bring the cache to hold the prompt and every generated token, in the canonical layout; the
        logits of the last token pick the next one."""
        if self._fed == 0:
            self._forward(self.prompt_ids)
            self._block = CACHE_BLOCK_TOKENS if _croppable(self._cache) else 0
        have, want = self._cached_generated, len(self.generated)
        if self._block:
            have_blocks = have // self._block * self._block
            want_blocks = want // self._block * self._block
            if want_blocks > have_blocks:
                if have > have_blocks:
                    self._cache.crop(-(have - have_blocks))  # drop the one-token entries of the block
                    self._fed -= have - have_blocks
                for start in range(have_blocks, want_blocks, self._block):
                    self._forward(self.generated[start:start + self._block])
                have = want_blocks
        for i in range(have, want):
            self._forward([self.generated[i]])
        self._cached_generated = want

    def extend(self, token_ids: Sequence[int]) -> None:
        """Take more of the generated tokens (resuming elsewhere): they enter the cache."""
        self.generated.extend(token_ids)
        self._sync()

    def checkpoint(self) -> DecodeCheckpoint:
        """The generation so far as plain data (see :class:`DecodeCheckpoint`)."""
        return DecodeCheckpoint(tuple(self.generated), self.emitted, bytes(self.sampler.rng.get_state().numpy()))

    def restore(self, checkpoint: DecodeCheckpoint) -> None:
        """Take over a generation paused elsewhere: take what of its tokens this one lacks, and adopt
        its reply text, streamed position and sampler state."""
        self.extend(self.missing(checkpoint))
        self.adopt(checkpoint)

    def missing(self, checkpoint: DecodeCheckpoint) -> list[int]:
        """The checkpoint's tokens that this generation was not given yet."""
        known = list(checkpoint.generated)
        if known[:len(self.generated)] != self.generated:
            raise ValueError("the checkpoint's tokens differ from those this generation was given")
        return known[len(self.generated):]

    def adopt(self, checkpoint: DecodeCheckpoint) -> None:
        """Take the checkpoint's streamed position and sampler state (its tokens already taken)."""
        self.emitted = checkpoint.emitted_chars
        self.text = self._decode()
        self.sampler.rng.set_state(torch.frombuffer(bytearray(checkpoint.rng_state), dtype=torch.uint8))

    def _decode(self) -> str:
        return self.tokenizer.decode(self.generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _all_ids(self) -> torch.Tensor:
        return torch.tensor([self.prompt_ids + self.generated])

    @torch.inference_mode()
    def run(self, on_token: Callable[[str, int | None], None] | None = None, control: DecodeControl | None = None,
            on_pause: Callable[[DecodeCheckpoint], None] | None = None) -> GenerationOutput:
        """Generate until an end token, a stop sequence, the budget, or ``control`` stops it.

        ``on_token(delta, token_id)`` is called once per generated token with the text that became
        safe to show (possibly ``""``), and once more with ``token_id`` None if text held back at the
        end remains. At a pause, ``on_pause(checkpoint)`` is called before waiting; a generation
        stopped while paused returns ``finish_reason="handed_over"`` and streams nothing more.
        """
        finish = "length"
        self._sync()
        while len(self.generated) < self.budget:
            ended = self.take(self.sampler(self._all_ids, self._logits), on_token)
            if ended is not None:
                finish = ended
                break
            if control is not None:
                if control.stopped:
                    finish = "cancelled"
                    break
                if control.pause_requested:
                    if on_pause is not None:
                        on_pause(self.checkpoint())
                    if control.wait_while_paused():
                        # Continued elsewhere: what is held back is the destination's to stream.
                        return self._output("handed_over")
            self._sync()
        self.flush(on_token)
        return self._output(finish)

    def take(self, next_id: int, on_token: Callable[[str, int | None], None] | None) -> str | None:
        """Take one sampled token: stream what became safe to show; the finish reason (``stop`` or
        ``length``) when it ends the generation, else None (its forward pass is still to run)."""
        stops = self.params.stop
        if next_id in self.eos:
            return "stop"
        self.generated.append(next_id)
        text = self.text = self._decode()
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text = text = text[:cut]
            if on_token is not None:
                on_token(text[self.emitted:], next_id)
            self.emitted = len(text)
            return "stop"
        safe = len(text) - _held_back(text, stops)
        if on_token is not None:
            on_token(text[self.emitted:safe] if safe > self.emitted else "", next_id)
        self.emitted = max(self.emitted, safe)
        if len(self.generated) >= self.budget:
            return "length"  # the budget is spent: the last token's forward pass would be wasted
        return None

    def flush(self, on_token: Callable[[str, int | None], None] | None) -> None:
        """Stream whatever was held back (a partial stop prefix that never completed): it belongs to
        the reply once the generation ends."""
        if on_token is not None and len(self.text) > self.emitted:
            on_token(self.text[self.emitted:], None)
            self.emitted = len(self.text)

    def _output(self, finish: str) -> GenerationOutput:
        return GenerationOutput(text=self.text, prompt_tokens=len(self.prompt_ids),
                                completion_tokens=len(self.generated), finish_reason=finish)


def generate(
    model,
    tokenizer,
    request: GenerationRequest,
    on_text: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
    on_prompt: Callable[[int], None] | None = None,
) -> GenerationOutput:
    """Generate a reply to ``request`` (blocking).

    ``on_prompt(n_tokens)`` is called once the prompt is tokenized and accepted, before prefill.
    ``on_text(delta)`` is called once per generated token with the text that became safe to show
    (possibly ``""``), so its first call marks the first token. Raises :class:`GenerationInputError`
    for a prompt the model cannot take.
    """
    decoder = Decoder(model, tokenizer, request)
    if on_prompt is not None:
        on_prompt(len(decoder.prompt_ids))
    on_token = None if on_text is None else (lambda delta, _token_id: on_text(delta))
    return decoder.run(on_token, DecodeControl(cancel))
