"""Text generation for one request on a loaded transformers model: prompt building and a token loop.

A hand-written decode loop (rather than ``model.generate`` with a streamer thread) because the server
needs, per token: the exact moment of the first token (for the records), incremental text that never
splits a UTF-8 character or leaks the start of a stop sequence (for streaming), and a cancel check
(a client that disconnects stops the loop). Sampling uses transformers' own logits warpers, on the CPU
with a seeded ``torch.Generator``, so a seed gives the same text on any device.

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

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> int:
        scores = logits.float().cpu()
        if self.greedy:
            return int(scores.argmax(dim=-1)[0])
        ids = input_ids.cpu()
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


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    request: GenerationRequest,
    on_text: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
    on_prompt: Callable[[int], None] | None = None,
) -> GenerationOutput:
    """Generate a reply to ``request``.

    ``on_prompt(n_tokens)`` is called once the prompt is tokenized and accepted, before prefill.
    ``on_text(delta)`` is called once per generated token with the text that became safe to show
    (possibly ``""``), so its first call marks the first token. Raises :class:`GenerationInputError`
    for a prompt the model cannot take.
    """
    params = request.params
    prompt_ids = encode_prompt(tokenizer, request)
    if not prompt_ids:
        raise GenerationInputError("prompt", "the prompt is empty after tokenization")
    max_len = context_length(model)
    budget = params.max_tokens
    if max_len is not None:
        if len(prompt_ids) >= max_len:
            raise GenerationInputError(
                "messages" if request.messages is not None else "prompt",
                f"the prompt has {len(prompt_ids)} tokens; this model's context is {max_len} tokens",
            )
        budget = min(budget, max_len - len(prompt_ids))
    if on_prompt is not None:
        on_prompt(len(prompt_ids))

    device = next(model.parameters()).device
    eos = _eos_ids(model, tokenizer)
    sample = _Sampler(params)
    stops = params.stop
    input_ids = torch.tensor([prompt_ids], device=device)
    all_ids = input_ids
    generated: list[int] = []
    emitted = 0
    text = ""
    finish = "length"
    cache_arg = _cache_argument(model)
    out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=True)
    for _ in range(budget):
        next_id = sample(all_ids, out.logits[:, -1, :])
        if next_id in eos:
            finish = "stop"
            break
        generated.append(next_id)
        text = tokenizer.decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
            finish = "stop"
            if on_text is not None:
                on_text(text[emitted:])
            emitted = len(text)
            break
        safe = len(text) - _held_back(text, stops)
        if on_text is not None:
            on_text(text[emitted:safe] if safe > emitted else "")
        emitted = max(emitted, safe)
        if cancel is not None and cancel.is_set():
            finish = "cancelled"
            break
        step = torch.tensor([[next_id]], device=device)
        all_ids = torch.cat([all_ids, step], dim=1)
        out = model(input_ids=step, attention_mask=torch.ones_like(all_ids), use_cache=True,
                    **{cache_arg: _returned_cache(out)})
    # Whatever was held back (a partial stop prefix that never completed) belongs to the reply.
    if on_text is not None and len(text) > emitted:
        on_text(text[emitted:])
    return GenerationOutput(text=text, prompt_tokens=len(prompt_ids), completion_tokens=len(generated),
                            finish_reason=finish)
