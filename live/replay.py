"""The live side's client: deploy a trace's models on a live server and send its requests on time.

Plain HTTP with ``httpx`` (live mode's client dependency), nothing of the server imported: the same
client drives a server started in-process by ``sllmsim validate`` or one running elsewhere.
Each request is a ``POST /v1/completions`` sent at ``start + time`` (all in flight at once, as the
trace says), with a prompt of about ``input_tokens`` words and ``max_tokens = output_tokens``,
sampled with a per-request seed (random-weight models rarely emit their end token, so most answers
run to ``max_tokens``). The server's own records (``GET /records``) are what the validation uses;
the client keeps only what it needs to explain a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from sllmsim.errors import SllmsimError
from sllmsim.traces.request_arrays import RequestArrays

#: Words of the prompts: common words of the tiny models' tokenizer corpus, mostly one token each.
PROMPT_WORDS = ("the model server request token memory disk network load cache node cluster latency storage "
                "schedule answer question hello what is your name").split()


class ReplayError(SllmsimError):
    """The live server refused a deploy or could not be reached."""


@dataclass(frozen=True)
class Outcome:
    """What the client saw of one request."""

    index: int
    model: str
    status_code: int
    """HTTP status (0 when no answer came back)."""
    error: str = ""
    completion_tokens: int = 0


def prompt_text(n_words: int) -> str:
    """A prompt of ``n_words`` words (about as many tokens)."""
    return " ".join(PROMPT_WORDS[i % len(PROMPT_WORDS)] for i in range(max(n_words, 1)))


def deploy(base_url: str, configs: list[dict], timeout_s: float = 600.0) -> dict[str, int]:
    """Register each deploy config (``POST /register``); returns model → checkpoint bytes as stored."""
    import httpx

    sizes = {}
    with httpx.Client(base_url=base_url, timeout=timeout_s) as client:
        for cfg in configs:
            resp = client.post("/register", json=cfg)
            if resp.status_code != 200:
                raise ReplayError(f"deploying {cfg.get('model')!r} failed ({resp.status_code}): {_message(resp)}")
            body = resp.json()
            sizes[body["model"]] = int(body["size_bytes"])
    return sizes


def fetch_records(base_url: str, timeout_s: float = 60.0) -> dict:
    """The server's request and phase records (``GET /records``)."""
    import httpx

    resp = httpx.get(f"{base_url.rstrip('/')}/records", timeout=timeout_s)
    if resp.status_code != 200:
        raise ReplayError(f"fetching the records failed ({resp.status_code}): {_message(resp)}")
    return resp.json()


def _message(resp) -> str:
    try:
        return resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]


def replay(base_url: str, requests: RequestArrays, timeout_s: float = 600.0,
           progress: Callable[[int, int], None] | None = None,
           before_send: Callable[[], None] | None = None) -> list[Outcome]:
    """Send every request at its time (seconds after the call) and wait for all answers.

    ``before_send()`` runs (in a worker thread) just before each request is sent.
    """
    return asyncio.run(_replay(base_url, requests, timeout_s, progress, before_send))


async def _replay(base_url: str, requests: RequestArrays, timeout_s: float,
                  progress: Callable[[int, int], None] | None,
                  before_send: Callable[[], None] | None) -> list[Outcome]:
    import httpx

    total = len(requests)
    done = 0
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:
        start = time.monotonic()

        async def one(i: int) -> Outcome:
            nonlocal done
            model = str(requests.model[i])
            delay = start + float(requests.time_s[i]) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if before_send is not None:
                await asyncio.to_thread(before_send)
            body = {"model": model, "prompt": prompt_text(int(requests.input_tokens[i])),
                    "max_tokens": int(requests.output_tokens[i]), "temperature": 1.0, "seed": i}
            try:
                resp = await client.post("/v1/completions", json=body)
            except httpx.HTTPError as exc:
                outcome = Outcome(i, model, 0, f"{type(exc).__name__}: {exc}")
            else:
                if resp.status_code == 200:
                    outcome = Outcome(i, model, 200, completion_tokens=int(resp.json()["usage"]["completion_tokens"]))
                else:
                    outcome = Outcome(i, model, resp.status_code, _message(resp))
            done += 1
            if progress is not None:
                progress(done, total)
            return outcome

        return list(await asyncio.gather(*(one(i) for i in range(total))))
