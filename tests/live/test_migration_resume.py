"""Token-based resume across two node workers: a generation paused on one worker and continued on
another, from the prompt and the tokens generated so far, yields exactly the uninterrupted tokens."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch

from live.generation import CACHE_BLOCK_TOKENS, Decoder, GenerationRequest, SamplingParams
from live.migration import MigrationSettings, RunningRequest, take_over
from live.worker import Finished, LocalNodeWorker, Paused, PromptAccepted, TextDelta
from test_server import HARDWARE

SPEC_HARDWARE = json.loads(HARDWARE.read_text())

MESSAGES = ({"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is your name?"})
#: Three cache blocks and a half (live.generation.CACHE_BLOCK_TOKENS is 16).
MAX_TOKENS = 56


def _request(temperature: float = 0.0, seed: int | None = None, max_tokens: int = MAX_TOKENS) -> GenerationRequest:
    return GenerationRequest(SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed),
                             messages=MESSAGES)


async def _loaded_workers(store_factory, folder, device: str) -> tuple[LocalNodeWorker, LocalNodeWorker]:
    """Two node workers, each with its own copy of the model loaded (instances ``a`` and ``b``)."""
    registry = store_factory(SPEC_HARDWARE, devices={"0": device, "1": device})
    registry.import_model("m", folder, node_ids=["0", "1"])
    workers = tuple(LocalNodeWorker(s.node, s, device) for s in (registry.node("0"), registry.node("1")))
    for worker, instance in zip(workers, ("a", "b")):
        await worker.load(instance, "m", 1, None, lambda timing: None)
    return workers


async def _collect(stream) -> tuple[list[int], str, Finished]:
    tokens, text = [], ""
    async for event in stream:
        if isinstance(event, TextDelta):
            text += event.text
            if event.token_id is not None:
                tokens.append(event.token_id)
        elif isinstance(event, Finished):
            return tokens, text, event
    raise AssertionError("the stream ended without Finished")


async def _pause_after(worker, instance: str, request, session: str, k: int):
    """Start a generation, ask it to pause once ``k`` tokens arrived; returns its stream, the tokens and
    text streamed before the pause, and the checkpoint."""
    stream = worker.generate(instance, request, session)
    tokens, text = [], ""
    async for event in stream:
        if isinstance(event, TextDelta):
            text += event.text
            tokens.append(event.token_id)
            if len(tokens) == k:
                await worker.pause(session)
        elif isinstance(event, Paused):
            return stream, tokens, text, event.checkpoint
        elif isinstance(event, Finished):
            raise AssertionError(f"finished before pausing at {k} tokens")
    raise AssertionError("the stream ended without a pause")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("arch", ["opt", "llama", "gpt2"])
@pytest.mark.parametrize("temperature,seed", [(0.0, None), (0.9, 7)], ids=["greedy", "seeded-sampling"])
def test_generation_resumed_on_another_worker_continues_with_the_same_tokens(
        arch, device, temperature, seed, store_factory, tiny_model_factory):
    request = _request(temperature, seed)

    async def main():
        source, dest = await _loaded_workers(store_factory, tiny_model_factory(arch), device)
        try:
            want_tokens, want_text, want = await _collect(source.generate("a", request))
            assert want.output.completion_tokens == MAX_TOKENS  # long enough to pause at every k below
            for k in (1, 16, 37):  # no complete block, exactly one, two and a tail
                stream, tokens, text, checkpoint = await _pause_after(source, "a", request, f"s{k}", k)
                assert list(checkpoint.generated) == tokens and len(tokens) >= k
                # Token-based: the destination sees only the request and token ids, in two rounds.
                half = len(tokens) // 2
                prompt_tokens = await dest.resume_prefill("b", f"s{k}", request, tokens[:half])
                assert prompt_tokens == want.output.prompt_tokens
                await dest.resume_feed(f"s{k}", tokens[half:])
                await stream.aclose()  # the source stops for good
                rest_tokens, rest_text, done = await _collect(dest.resume_generate(f"s{k}", checkpoint))
                assert tokens + rest_tokens == want_tokens
                assert text + rest_text == want_text
                assert done.output == want.output
        finally:
            await source.close()
            await dest.close()

    asyncio.run(main())


def test_a_paused_generation_that_is_let_go_on_continues_unchanged(store_factory, tiny_model_factory):
    request = _request(0.8, 3)

    async def main():
        source, dest = await _loaded_workers(store_factory, tiny_model_factory("llama"), "cpu")
        try:
            _, want_text, want = await _collect(source.generate("a", request))
            stream, _, text, _ = await _pause_after(source, "a", request, "s", 5)
            await source.unpause("s")
            _, rest_text, done = await _collect(stream)
            assert text + rest_text == want_text and done.output == want.output
        finally:
            await source.close()
            await dest.close()

    asyncio.run(main())


class _Ticket:
    def __init__(self):
        self.record = None


def test_take_over_moves_a_stream_between_workers(store_factory, tiny_model_factory):
    """The controller-side protocol: catch up in rounds while the source streams, pause, switch.

    The source runs freely in its thread; a long generation and at most two catch-up rounds leave it
    far from its end at the hand-over, however the two threads share the CPU."""
    request = _request(max_tokens=120)

    async def main():
        source, dest = await _loaded_workers(store_factory, tiny_model_factory("opt"), "cpu")
        try:
            _, want_text, want = await _collect(source.generate("a", request))
            run = RunningRequest(_Ticket(), request, "s")
            switched = []
            text, mover = "", None
            stream = source.generate("a", request, "s")
            finished = None
            while stream is not None:
                following = None
                async for event in stream:
                    if isinstance(event, PromptAccepted):
                        run.prompt_tokens, run.accepted = event.prompt_tokens, True
                    elif isinstance(event, TextDelta):
                        text += event.text
                        if event.token_id is not None:
                            run.tokens.append(event.token_id)
                        if len(run.tokens) == 3 and mover is None:
                            mover = asyncio.ensure_future(take_over(
                                run, source, dest, "b", MigrationSettings(handover_gap_tokens=1, max_rounds=2),
                                lambda: switched.append(len(run.tokens))))
                    elif isinstance(event, Paused):
                        following = await run.paused(event.checkpoint)
                        assert following is not None
                        break
                    elif isinstance(event, Finished):
                        finished = event
                await stream.aclose()
                if following is not None:
                    run.left_source.set()
                stream = following
            run.end()
            move = await mover
            assert move.moved and switched == [move.handover_tokens]
            assert move.recomputed_tokens == want.output.prompt_tokens + move.handover_tokens
            assert text == want_text and finished.output == want.output
        finally:
            await source.close()
            await dest.close()

    asyncio.run(main())


@pytest.mark.parametrize("arch", ["opt", "llama", "gpt2"])
def test_a_resume_rebuilds_the_source_cache_bit_for_bit_in_one_pass_per_block(arch, tiny_model_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_model_factory(arch)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    request = _request()
    source = Decoder(model, tokenizer, request)
    source.run()
    # The source stopped at its budget without running its last token through the model.
    n = len(source.generated) - 1
    dest = Decoder(model, tokenizer, request)
    dest.extend(source.generated[:n])
    block = CACHE_BLOCK_TOKENS
    assert dest.forward_passes == 1 + n // block + n % block  # the prompt, each block, the tail
    assert dest.tokens_in_cache == source.tokens_in_cache == len(source.prompt_ids) + n
    for mine, theirs in zip(dest._cache.layers, source._cache.layers, strict=True):
        assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)
