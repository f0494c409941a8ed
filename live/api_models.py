"""Request and response bodies of the OpenAI-compatible API, as pydantic models.

Requests are validated here, at the HTTP boundary: a bad field becomes a 400 naming the field (as
OpenAI answers), before the controller sees anything. Types are strict, as the API defines them:
``max_tokens: "5"``, ``temperature: "0.5"`` or ``stream: 1`` are errors, not coerced; a ``seed`` must
fit the sampler's 64 bits and text must be encodable (no lone surrogates). Unknown fields are rejected rather than
ignored, as the OpenAI API does, so that a misspelt ``max_token`` is not silently dropped; the
OpenAI parameters we cannot honour are accepted only at their neutral values.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

#: ``max_tokens`` when a chat request gives none. The OpenAI API generates up to the context length;
#: a random-weight test model rarely emits its end token, so an explicit cap keeps replies bounded.
DEFAULT_CHAT_MAX_TOKENS = 128
#: ``max_tokens`` when a completion request gives none: the OpenAI API's documented default.
DEFAULT_COMPLETION_MAX_TOKENS = 16
#: The OpenAI API accepts at most four stop sequences.
MAX_STOP_SEQUENCES = 4


#: The sampler's seed range (``torch.Generator.manual_seed``).
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text must be valid Unicode: a lone surrogate at character {exc.start}") from None
    return value


#: A string that can be encoded as UTF-8 (JSON can spell lone surrogates; tokenizers cannot take them).
Text = Annotated[str, AfterValidator(_encodable)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    """One ``{"type": "text", "text": ...}`` part of a message's content."""

    type: Literal["text"]
    text: Text


class ChatMessage(_Strict):
    """One chat message. Content may be a string or a list of text parts."""

    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart]
    name: Text | None = None

    def text(self) -> str:
        """The message's content as one string."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Strict):
    include_usage: StrictBool = False


class _SamplingFields(_Strict):
    """Fields shared by chat and text completions."""

    model: Text = Field(min_length=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: StrictFloat = Field(default=1.0, ge=0.0, le=2.0)
    top_p: StrictFloat = Field(default=1.0, gt=0.0, le=1.0)
    seed: StrictInt | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stop: Text | list[Text] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    """Only one choice per request is generated."""
    presence_penalty: Literal[0, 0.0] = 0.0
    frequency_penalty: Literal[0, 0.0] = 0.0
    logit_bias: dict[str, float] | None = None
    user: Text | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed, got {len(stops)}")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _check_logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise ValueError("logit_bias is not supported by this server")
        return value

    def stop_sequences(self) -> tuple[str, ...]:
        """``stop`` as a tuple (empty when none)."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_SamplingFields):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    """The newer name of ``max_tokens``; wins when both are given."""
    logprobs: Literal[False] = False

    def max_new_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_CHAT_MAX_TOKENS

    def max_tokens_given(self) -> bool:
        return self.max_completion_tokens is not None or self.max_tokens is not None


class CompletionRequest(_SamplingFields):
    """``POST /v1/completions``: one text prompt (a list holding one string is accepted too)."""

    prompt: Text | list[Text]
    echo: StrictBool = False
    logprobs: None = None
    suffix: None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError(f"exactly one prompt per request is supported, got {len(value)}")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def max_new_tokens(self) -> int:
        return self.max_tokens or DEFAULT_COMPLETION_MAX_TOKENS

    def max_tokens_given(self) -> bool:
        return self.max_tokens is not None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sllmsim"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
    models: list[ModelCard]
    """The same cards again: ServerlessLLM's server answers ``GET /v1/models`` with a ``models`` list,
    and its ``sllm status`` reads that key."""


class DeleteRequest(_Strict):
    """``POST /delete``: deployment names (or their ``pretrained_model_name_or_path``) to delete.

    Either ``{"models": [...]}`` (``sllmsim delete``) or ``{"model": NAME}`` (ServerlessLLM's
    ``sllm delete``, which posts once per model). The reference's ``lora_adapters`` (delete only
    those adapters of the model) is refused: live mode serves no LoRA adapters.
    """

    models: list[str] | None = Field(default=None, min_length=1)
    model: str | None = Field(default=None, min_length=1)
    lora_adapters: dict[str, str] | list[str] | None = None

    @field_validator("lora_adapters")
    @classmethod
    def _no_adapters(cls, value: dict[str, str] | list[str] | None) -> None:
        if value is not None:
            raise ValueError("live mode serves no LoRA adapters, so it has none to delete; "
                             "omit lora_adapters to delete the model itself")
        return value

    @model_validator(mode="after")
    def _one_shape(self) -> DeleteRequest:
        if (self.models is None) == (self.model is None):
            raise ValueError("expected either 'model' (one name) or 'models' (a list of names)")
        return self

    def names(self) -> list[str]:
        """The names to delete, in the order given."""
        return list(self.models) if self.models is not None else [self.model]
