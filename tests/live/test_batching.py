"""The batching engine: a request's tokens do not depend on what it is batched with, a generation
taken over mid-stream from a busy instance continues exactly, cancellation frees the slot at once,
and an instance never runs more than its max_batch_size."""

from __future__ import annotations

import asyncio
import threading

import pytest

from live.batching import BatchEngine
from live.generation import DecodeControl, GenerationInputError, GenerationRequest, SamplingParams
from live.worker import LocalNodeWorker
from test_migration_resume import SPEC_HARDWARE, _collect, _pause_after

PROMPTS = ("Hello, what is your name", "The model server", "a", "Where is the cache on the node and the disk",
           "token memory", "Write a long answer about the network", "GPU", "how many people live there")


def _requests() -> list[GenerationRequest]:
    """Eight requests of different prompt lengths and budgets, greedy and seeded sampling."""
    out = []
    for i, prompt in enumerate(PROMPTS):
        params = SamplingParams(max_tokens=20 + 7 * i, temperature=0.0 if i % 2 else 0.8, top_p=0.9 if i % 3 else 1.0,
                                seed=100 + i)
        out.append(GenerationRequest(params, prompt=prompt))
    return out


class _Run:
    """One generation on an engine, recorded from its callbacks."""

    def __init__(self, engine: BatchEngine, request: GenerationRequest, control: DecodeControl | None = None):
        self.tokens: list[int] = []
        self.text = ""
        self.result = None
        self.finished = threading.Event()
        self.control = control or DecodeControl()
        self.on_token_hook = None
        engine.start(request, self.control, self._on_token, lambda checkpoint: None, self._done)

    def _on_token(self, delta: str, token_id: int | None) -> None:
        self.text += delta
        if token_id is not None:
            self.tokens.append(token_id)
            if self.on_token_hook is not None:
                self.on_token_hook(len(self.tokens))

    def _done(self, result) -> None:
        self.result = result
        self.finished.set()

    def wait(self):
        assert self.finished.wait(60), "the generation did not finish"
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


def _model(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("arch", ["opt", "llama", "gpt2"])
def test_batched_requests_produce_the_same_tokens_as_each_alone(arch, tiny_model_factory):
    model, tokenizer = _model(tiny_model_factory(arch))
    engine = BatchEngine(model, tokenizer, max_batch_size=8)
    try:
        alone = []
        for request in _requests():
            run = _Run(engine, request)
            out = run.wait()
            alone.append((run.tokens, run.text, out))
        assert engine.max_batch_seen == 1
        runs = [_Run(engine, request) for request in _requests()]
        outs = [run.wait() for run in runs]
        together = [(run.tokens, run.text, out) for run, out in zip(runs, outs)]
        assert engine.max_batch_seen == 8  # all eight shared passes
        for (tokens, text, out), (want_tokens, want_text, want) in zip(together, alone, strict=True):
            assert tokens == want_tokens and text == want_text and out == want
        assert {out.finish_reason for _, _, out in alone} <= {"stop", "length"}
        assert sum(out.completion_tokens for _, _, out in alone) > 8 * 10  # not eight immediate end tokens
    finally:
        engine.close()


def test_requests_beyond_max_batch_size_wait_for_a_slot(tiny_model_factory):
    model, tokenizer = _model(tiny_model_factory("opt"))
    engine = BatchEngine(model, tokenizer, max_batch_size=3)
    try:
        seen = []
        runs = [_Run(engine, request) for request in _requests()]
        for run in runs:
            run.on_token_hook = lambda n: seen.append(engine.occupied)
        for run in runs:
            run.wait()
        assert engine.max_batch_seen == 3 and max(seen) <= 3
    finally:
        engine.close()


def test_a_cancelled_request_leaves_the_batch_at_the_next_step_and_the_others_go_on(tiny_model_factory):
    model, tokenizer = _model(tiny_model_factory("llama"))
    engine = BatchEngine(model, tokenizer, max_batch_size=4)
    try:
        long = GenerationRequest(SamplingParams(max_tokens=300, temperature=0.0), prompt="The model server")
        other = _requests()[1]
        want = _Run(engine, other)
        want.wait()
        victim = _Run(engine, long)
        victim.on_token_hook = lambda n: victim.control.stop() if n == 3 else None
        companion = _Run(engine, other)
        out = victim.wait()
        # The stop came from inside the token callback, so at most the step in flight adds a token.
        assert out.finish_reason == "cancelled" and 3 <= out.completion_tokens <= 4
        assert companion.wait() == want.result and companion.tokens == want.tokens
        assert engine.occupied == 0
    finally:
        engine.close()


def test_a_request_cancelled_while_queued_never_runs(tiny_model_factory):
    model, tokenizer = _model(tiny_model_factory("opt"))
    engine = BatchEngine(model, tokenizer, max_batch_size=1)
    try:
        first = _Run(engine, GenerationRequest(SamplingParams(max_tokens=200, temperature=0.0), prompt="a"))
        control = DecodeControl()
        control.stop()
        queued = _Run(engine, _requests()[0], control)
        assert queued.wait().finish_reason == "cancelled" and queued.tokens == []
        first.wait()
    finally:
        engine.close()


def test_a_prompt_too_long_is_reported_by_the_engine(tiny_model_factory):
    model, tokenizer = _model(tiny_model_factory("opt"))
    engine = BatchEngine(model, tokenizer, max_batch_size=2)
    try:
        run = _Run(engine, GenerationRequest(SamplingParams(max_tokens=4), prompt="hello " * 600))
        with pytest.raises(GenerationInputError, match="context is 512 tokens"):
            run.wait()
    finally:
        engine.close()


@pytest.mark.parametrize("temperature,seed", [(0.0, None), (0.9, 7)], ids=["greedy", "seeded-sampling"])
def test_a_generation_taken_over_from_a_busy_instance_by_a_busy_instance_continues_exactly(
        temperature, seed, store_factory, tiny_model_factory):
    """Source and destination each serve other requests at the same time, so the moved request's
    tokens were computed in batches of different sizes on either side."""
    request = GenerationRequest(SamplingParams(max_tokens=80, temperature=temperature, seed=seed),
                                prompt="Where is the cache on the node")
    companions = _requests()[:3]

    async def busy(worker, instance):
        return [asyncio.ensure_future(_collect(worker.generate(instance, r))) for r in companions]

    async def main():
        source, dest = await _loaded_workers_with(store_factory, tiny_model_factory("gpt2"), 4)
        try:
            want_tokens, want_text, want = await _collect(source.generate("a", request))
            noise = await busy(source, "a") + await busy(dest, "b")
            stream, tokens, text, checkpoint = await _pause_after(source, "a", request, "s", 25)
            await dest.resume_prefill("b", "s", request, tokens[:10])
            await dest.resume_feed("s", tokens[10:])
            await stream.aclose()
            rest_tokens, rest_text, done = await _collect(dest.resume_generate("s", checkpoint))
            assert tokens + rest_tokens == want_tokens and text + rest_text == want_text and done.output == want.output
            await asyncio.gather(*noise)
            assert source._engines["a"].max_batch_seen >= 2 and dest._engines["b"].max_batch_seen >= 2
        finally:
            await source.close()
            await dest.close()

    asyncio.run(main())


@pytest.mark.parametrize("dest_busy", [False, True], ids=["idle-destination", "busy-destination"])
def test_a_take_over_with_nothing_left_to_feed_continues_exactly(dest_busy, store_factory, tiny_model_factory):
    """The source paused right after the destination was fed its last token, so the hand-over feeds
    no token (live.migration.take_over feeds whatever the checkpoint has beyond what was fed). That
    catch-up has nothing to compute: it must neither make an empty forward pass (alone on the
    destination) nor take another sequence's logits (in a batch with others)."""
    request = GenerationRequest(SamplingParams(max_tokens=60, temperature=0.0), prompt="Where is the cache on the node")

    async def main():
        source, dest = await _loaded_workers_with(store_factory, tiny_model_factory("llama"), 4)
        try:
            want_tokens, want_text, want = await _collect(source.generate("a", request))
            noise = await _busy(dest, "b", _requests()[:3]) if dest_busy else []
            stream, tokens, text, checkpoint = await _pause_after(source, "a", request, "s", 20)
            generated = list(checkpoint.generated)
            await dest.resume_prefill("b", "s", request, generated)
            await dest.resume_feed("s", generated[len(generated):])  # nothing new since the prefill
            await stream.aclose()
            rest_tokens, rest_text, done = await _collect(dest.resume_generate("s", checkpoint))
            assert tokens + rest_tokens == want_tokens and text + rest_text == want_text and done.output == want.output
            await asyncio.gather(*noise)
        finally:
            await source.close()
            await dest.close()

    asyncio.run(main())


async def _busy(worker, instance: str, requests) -> list[asyncio.Future]:
    """Generations of ``requests`` started on ``instance``, running while the caller goes on."""
    return [asyncio.ensure_future(_collect(worker.generate(instance, r))) for r in requests]


async def _loaded_workers_with(store_factory, folder, max_concurrency: int):
    """Two workers as in test_migration_resume, their instances serving up to ``max_concurrency``."""
    registry = store_factory(SPEC_HARDWARE, devices={"0": "cpu", "1": "cpu"})
    registry.import_model("m", folder, node_ids=["0", "1"])
    workers = tuple(LocalNodeWorker(s.node, s, "cpu") for s in (registry.node("0"), registry.node("1")))
    for worker, instance in zip(workers, ("a", "b")):
        await worker.load(instance, "m", max_concurrency, None, lambda timing: None)
    return workers


@pytest.mark.parametrize("arch", ["opt", "llama", "gpt2"])
def test_a_tokens_keys_values_and_logits_are_bit_identical_whatever_it_is_batched_with(arch, tiny_model_factory):
    """The property the token-level tests rest on, checked on the tensors themselves (a last-bit
    difference rarely flips a token of a tiny model within a short reply, so equal tokens alone
    would not show it): a sequence decoded alone, one decoded among a varying crowd, and one
    rebuilt in a single pass from its tokens (a migration destination) hold identical caches."""
    import torch

    from live.batching import BatchedSequence, packed_pass

    model, tokenizer = _model(tiny_model_factory(arch))
    request = GenerationRequest(SamplingParams(max_tokens=64), prompt="Where is the cache on the node")
    tokens = [int(t) for t in torch.randint(10, len(tokenizer), (40,), generator=torch.Generator().manual_seed(1))]
    alone, crowded = BatchedSequence(model, tokenizer, request), BatchedSequence(model, tokenizer, request)
    crowd = [BatchedSequence(model, tokenizer, r) for r in _requests()]
    packed_pass(model, [alone])
    packed_pass(model, [crowded])
    for step, token in enumerate(tokens):
        assert torch.equal(alone._logits, crowded._logits), f"logits differ after {step} tokens"
        alone.generated.append(token)
        crowded.generated.append(token)
        packed_pass(model, [alone])
        companions = crowd[:1 + step % len(crowd)]  # 1 to 8 others, new ones arriving with their prompts
        for other in companions:
            if other._fed:
                other.generated.append(token)
        packed_pass(model, companions[:step % 3] + [crowded] + companions[step % 3:])
    rebuilt = BatchedSequence(model, tokenizer, request)
    rebuilt.generated.extend(tokens)
    packed_pass(model, [rebuilt])
    assert torch.equal(alone._logits, crowded._logits) and torch.equal(alone._logits, rebuilt._logits)
    for a, c, r in zip(alone.kv, crowded.kv, rebuilt.kv, strict=True):
        for i in (0, 1):
            assert torch.equal(a[i], c[i]) and torch.equal(a[i], r[i])


def test_the_decode_benchmark_prints_both_paths_and_rejects_bad_levels(capsys):
    from live import bench_decode

    bench_decode.main(["--hidden", "64", "--layers", "1", "--tokens", "3", "--repeats", "1", "--concurrency", "1,2"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.lstrip()[:1].isdigit()]
    assert [row.split()[0] for row in rows] == ["1", "2"]
    assert all(float(row.split()[-1]) > 0 for row in rows)  # the batched/threads ratio of the row
    for bad in (["--concurrency", "x"], ["--concurrency", "0"], ["--hidden", "100"], ["--arch", "bert"]):
        with pytest.raises(SystemExit) as exit_info:
            bench_decode.main(bad)
        assert exit_info.value.code == 2
        assert bad[0] in capsys.readouterr().err
