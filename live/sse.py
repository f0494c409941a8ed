"""Server-sent events in OpenAI's chunk format: a generation's events as the chunks of a streamed
chat completion or completion, ending with ``data: [DONE]`` (an error after the headers were sent
is an in-band error event, as OpenAI streams do)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator

from sllmsim.errors import SllmsimError

from live.api_models import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkDelta,
    Completion,
    CompletionChoice,
    CompletionRequest,
    Usage,
)
from live.worker import Finished, TextDelta

logger = logging.getLogger("sllmsim.live")


def _sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


def _stream_error(exc: Exception) -> str:
    """The error event that ends a stream which failed after its headers were sent."""
    if isinstance(exc, SllmsimError):
        message = str(exc)
    else:
        logger.error("a stream failed: %r", exc, exc_info=exc)
        message = "internal server error (the server's log has the details)"
    return _sse({"error": {"message": message, "type": "server_error", "param": None, "code": None}})


def finish_reason(reason: str) -> str:
    """OpenAI's ``finish_reason`` for a generation's: ``length`` (the token limit) or ``stop``."""
    return "length" if reason == "length" else "stop"


async def chat_stream(events: AsyncIterator, body: ChatCompletionRequest, rid: str, created: int,
                      prompt_tokens: int) -> AsyncIterator[str]:
    """The chunks of a streamed chat completion: the role first, then one per text delta, the finish
    reason, and the usage when the request asked for it."""
    def chunk(delta: ChunkDelta, finish: str | None = None) -> str:
        return _sse(ChatCompletionChunk(id=rid, created=created, model=body.model,
                                        choices=[ChatChunkChoice(delta=delta, finish_reason=finish)]
                                        ).model_dump(exclude_none=True))

    async with contextlib.aclosing(events):
        try:
            yield chunk(ChunkDelta(role="assistant", content=""))
            async for event in events:
                if isinstance(event, TextDelta) and event.text:
                    yield chunk(ChunkDelta(content=event.text))
                elif isinstance(event, Finished):
                    out = event.output
                    yield chunk(ChunkDelta(), finish_reason(out.finish_reason))
                    if body.include_usage():
                        usage = Usage(prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens,
                                      total_tokens=out.prompt_tokens + out.completion_tokens)
                        yield _sse(ChatCompletionChunk(id=rid, created=created, model=body.model, choices=[],
                                                       usage=usage).model_dump(exclude_none=True))
        except Exception as exc:  # headers are sent: report in-band, as OpenAI streams do
            yield _stream_error(exc)
        yield _sse("[DONE]")


async def completion_stream(events: AsyncIterator, body: CompletionRequest, rid: str, created: int,
                            prompt_tokens: int, prefix: str) -> AsyncIterator[str]:
    """The chunks of a streamed completion: the echoed prompt (``prefix``) if any, one per text
    delta, the finish reason, and the usage when the request asked for it."""
    def chunk(text: str, finish: str | None = None, usage: Usage | None = None, choices: bool = True) -> str:
        payload = Completion(id=rid, created=created, model=body.model,
                             choices=[CompletionChoice(text=text, finish_reason=finish)] if choices else [],
                             usage=usage).model_dump()
        if usage is None:
            payload.pop("usage")
        return _sse(payload)

    async with contextlib.aclosing(events):
        try:
            if prefix:
                yield chunk(prefix)
            async for event in events:
                if isinstance(event, TextDelta) and event.text:
                    yield chunk(event.text)
                elif isinstance(event, Finished):
                    out = event.output
                    yield chunk("", finish_reason(out.finish_reason))
                    if body.include_usage():
                        yield chunk("", usage=Usage(prompt_tokens=out.prompt_tokens,
                                                    completion_tokens=out.completion_tokens,
                                                    total_tokens=out.prompt_tokens + out.completion_tokens),
                                    choices=False)
        except Exception as exc:
            yield _stream_error(exc)
        yield _sse("[DONE]")
