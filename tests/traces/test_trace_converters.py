"""Converters: the Azure LLM 2023 and Azure Functions 2019 traces into the canonical request stream.

Tiny hand-written fixtures in the raw formats (tests/traces/fixtures/) pin exact behaviour; the real
files under ../shared/traces-real/ are checked where present (row counts, first/last times, tokens).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sllmsim.errors import ConfigError
from sllmsim.traces.azure_functions import (
    convert_azure_functions,
    expand_counts,
    rank_functions,
    read_function_invocations,
    stochastic_round,
)
from sllmsim.traces.azure_llm import convert_azure_llm, read_azure_llm, token_pool
from sllmsim.traces.canonical import COLUMNS, file_sha256, meta_path, read_stream, write_stream

FIXTURES = Path(__file__).parent / "fixtures"
TINY_CODE = FIXTURES / "azure_llm_tiny_code.csv"
TINY_CONV = FIXTURES / "azure_llm_tiny_conv.csv"
TINY_FUNCS = FIXTURES / "azure_functions_tiny.csv"
REAL = Path(__file__).resolve().parents[2].parent / "shared" / "traces-real"
REAL_CODE = REAL / "AzureLLMInferenceTrace_code.csv"
REAL_CONV = REAL / "AzureLLMInferenceTrace_conv.csv"
REAL_FUNCS = REAL / "azure_functions_2019_sample500_invocations.csv"
needs_real = pytest.mark.skipif(not REAL_FUNCS.exists() or not REAL_CODE.exists(),
                                reason="../shared/traces-real/ is not present")


# --- Azure LLM 2023 -------------------------------------------------------------------------------

def test_tiny_azure_llm_keeps_seven_digit_timestamps_and_crlf():
    assert b"\r\n" in TINY_CODE.read_bytes()
    df = read_azure_llm(TINY_CODE)
    assert len(df) == 4
    assert df["timestamp"].iloc[2] == pd.Timestamp("2023-11-16 18:17:05.0000001")
    trace = convert_azure_llm([(TINY_CODE, "code")])
    req = trace.requests
    assert list(req.columns) == COLUMNS
    assert req["time"].tolist() == pytest.approx([0.0, 0.052, 1.0200401, 6.0])
    assert req["input_tokens"].tolist() == [4808, 3180, 12, 100]
    # A zero-token output is raised to the canonical minimum of one, and the sidecar counts it.
    assert req["output_tokens"].tolist() == [10, 8, 1, 200]
    assert trace.meta["tokens_raised_to_min"] == 1


def test_azure_llm_time_scale_and_origins():
    sources = [(TINY_CODE, "code"), (TINY_CONV, "conv")]
    common = convert_azure_llm(sources).requests
    # The conv file starts one second before the code file, so it defines time 0.
    assert common[common.model == "code"]["time"].iloc[0] == pytest.approx(1.0)
    assert common[common.model == "conv"]["time"].tolist() == pytest.approx([0.0, 4.5])
    each = convert_azure_llm(sources, origin="each").requests
    assert each[each.model == "code"]["time"].iloc[0] == 0.0
    fast = convert_azure_llm(sources, time_scale=2.0).requests
    assert fast["time"].to_numpy() == pytest.approx(common["time"].to_numpy() / 2.0)
    cut = convert_azure_llm(sources, duration_s=3.0).requests
    assert cut["time"].max() < 3.0 and len(cut) == 4


def test_azure_llm_bad_inputs_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\r\n2023-11-16 18:17:03.97,5,5\r\nyesterday,4,4\r\n")
    with pytest.raises(ConfigError, match=r"bad.csv: line 3: TIMESTAMP: expected a time"):
        read_azure_llm(bad)
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,5,-1\n")
    with pytest.raises(ConfigError, match=r"line 2: GeneratedTokens: expected a non-negative"):
        read_azure_llm(bad)
    bad.write_text("time,in,out\n1,2,3\n")
    with pytest.raises(ConfigError, match=r"header: expected TIMESTAMP,ContextTokens,GeneratedTokens"):
        read_azure_llm(bad)
    with pytest.raises(ConfigError, match="time_scale"):
        convert_azure_llm([(TINY_CODE, "code")], time_scale=0)
    with pytest.raises(ConfigError, match="file not found"):
        read_azure_llm(tmp_path / "missing.csv")


@needs_real
@pytest.mark.parametrize("path, rows, last_s, in_mean, in_max, out_mean, out_max", [
    (REAL_CODE, 8_819, 3_435.948056, 2_047.85, 7_437, 27.88, 1_899),
    (REAL_CONV, 19_366, 3_501.721937, 1_154.70, 14_050, 211.13, 1_000),
])
def test_real_azure_llm_files(path, rows, last_s, in_mean, in_max, out_mean, out_max):
    trace = convert_azure_llm([(path, "m")])
    req = trace.requests
    assert len(req) == rows
    assert req["time"].iloc[0] == 0.0
    assert req["time"].iloc[-1] == pytest.approx(last_s, abs=1e-6)
    assert req["input_tokens"].mean() == pytest.approx(in_mean, abs=0.01)
    assert req["input_tokens"].max() == in_max
    assert req["output_tokens"].mean() == pytest.approx(out_mean, abs=0.01)
    assert req["output_tokens"].max() == out_max
    assert trace.meta["tokens_raised_to_min"] == 0
    assert trace.meta["sources"][0]["sha256"] == file_sha256(path)


@needs_real
def test_real_azure_llm_both_files_on_a_common_clock():
    req = convert_azure_llm([(REAL_CODE, "code"), (REAL_CONV, "conv")]).requests
    assert len(req) == 8_819 + 19_366
    # conv starts at 18:15:46.6805900, code at 18:17:03.9799600.
    assert req[req.model == "code"]["time"].iloc[0] == pytest.approx(77.299370, abs=1e-6)
    assert np.all(np.diff(req["time"].to_numpy()) >= 0)


# --- Azure Functions 2019 -------------------------------------------------------------------------

def test_tiny_functions_rank_by_popularity_then_hash():
    inv = read_function_invocations(TINY_FUNCS)
    assert inv.minutes.tolist() == [600, 601, 602]
    order = inv.functions["HashFunction"].to_numpy()[rank_functions(inv)]
    assert order.tolist() == ["f-ddd", "f-aaa", "f-bbb", "f-eee"]  # f-ccc was never invoked
    http = inv.functions["HashFunction"].to_numpy()[rank_functions(inv, ["http"])]
    assert http.tolist() == ["f-aaa", "f-eee"]


def test_even_spread_places_arrivals_at_exact_times():
    trace = convert_azure_functions(TINY_FUNCS, [TINY_CONV], ["big", "small"], spread="even")
    req = trace.requests
    big = req[req.model == "big"]["time"].to_numpy()
    small = req[req.model == "small"]["time"].to_numpy()
    assert big.tolist() == pytest.approx([3 + 6 * j for j in range(10)] + [135.0, 165.0])
    assert small.tolist() == pytest.approx([10.0, 30.0, 50.0, 150.0])
    # Token counts are whole rows of the token files.
    assert set(zip(req.input_tokens, req.output_tokens)) <= {(50, 60), (70, 80)}
    assert [m["function"] for m in trace.meta["mapping"]] == ["f-ddd", "f-aaa"]


def test_uniform_and_poisson_spreads_stay_in_their_minutes():
    counts = np.array([[5, 0, 7], [0, 3, 0]])
    times, rows = expand_counts(np.random.default_rng(0), counts, "uniform")
    assert len(times) == 15
    for r, minute, n in ((0, 0, 5), (0, 2, 7), (1, 1, 3)):
        sel = (rows == r) & (times >= 60 * minute) & (times < 60 * (minute + 1))
        assert sel.sum() == n
    big = np.full((1, 200), 50)
    times, _ = expand_counts(np.random.default_rng(0), big, "poisson")
    per_minute = np.bincount((times // 60).astype(int), minlength=200)
    assert per_minute.mean() == pytest.approx(50, rel=0.03)
    assert per_minute.var() == pytest.approx(50, rel=0.3)  # Poisson counts: variance = mean


def test_trigger_filter_time_scaling_and_duration_cut():
    trace = convert_azure_functions(TINY_FUNCS, [TINY_CONV], ["a", "e"], triggers=["http"], spread="even",
                                    target_rps=14 / 180, rate_scaling="time")
    # http functions aaa (4) and eee (3) have 7 invocations in 180 s; doubling the rate halves time.
    req = trace.requests
    assert trace.meta["rate_factor"] == pytest.approx(2.0)
    assert len(req) == 7
    assert req[req.model == "e"]["time"].tolist() == pytest.approx([7.5, 22.5, 45.0])
    cut = convert_azure_functions(TINY_FUNCS, [TINY_CONV], ["a", "e"], triggers=["http"], spread="even",
                                  target_rps=14 / 180, rate_scaling="time", duration_s=30.0).requests
    assert cut["time"].tolist() == pytest.approx([5.0, 7.5, 15.0, 22.5, 25.0])


def test_thinning_keeps_the_expected_count_and_is_seeded():
    values = np.full(100_000, 2.3)
    rounded = stochastic_round(np.random.default_rng(1), values)
    assert set(np.unique(rounded)) == {2, 3}
    assert rounded.mean() == pytest.approx(2.3, abs=0.01)
    # 22 invocations scaled by 1/2 with per-minute stochastic rounding: about 11 on average.
    runs = [convert_azure_functions(TINY_FUNCS, [TINY_CONV], ["d", "a", "b", "e"], target_rps=11 / 180, seed=s)
            for s in range(20)]
    assert 8 <= np.mean([len(r.requests) for r in runs]) <= 14
    again = convert_azure_functions(TINY_FUNCS, [TINY_CONV], ["d", "a", "b", "e"], target_rps=11 / 180, seed=7)
    pd.testing.assert_frame_equal(runs[7].requests, again.requests)


def test_random_selection_is_seeded_and_keeps_popularity_order():
    names = ["r0", "r1"]
    picks = {tuple(m["function"] for m in convert_azure_functions(
        TINY_FUNCS, [TINY_CONV], names, selection="random", seed=s).meta["mapping"]) for s in range(12)}
    assert len(picks) > 1
    popularity = ["f-ddd", "f-aaa", "f-bbb", "f-eee"]
    for pick in picks:
        assert popularity.index(pick[0]) < popularity.index(pick[1])


def test_functions_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match="4 invoked functions"):
        convert_azure_functions(TINY_FUNCS, [TINY_CONV], list("abcde"))
    with pytest.raises(ConfigError, match="start_minute"):
        convert_azure_functions(TINY_FUNCS, [TINY_CONV], ["a"], start_minute=10)
    with pytest.raises(ConfigError, match="distinct"):
        convert_azure_functions(TINY_FUNCS, [TINY_CONV], ["a", "a"])
    with pytest.raises(ConfigError, match="no rows fit within 100 tokens"):
        convert_azure_functions(TINY_FUNCS, [TINY_CONV], ["a"], max_context_tokens=100)
    bad = tmp_path / "inv.csv"
    bad.write_text("HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,1,x\n")
    with pytest.raises(ConfigError, match=r"inv.csv: line 2: minute 2: expected a non-negative whole count"):
        read_function_invocations(bad)


@needs_real
def test_real_functions_file_counts_and_popularity():
    inv = read_function_invocations(REAL_FUNCS)
    assert inv.counts.shape == (500, 480)
    assert inv.minutes[0] == 480 and inv.minutes[-1] == 959
    assert inv.counts.sum() == 3_037_902
    totals = np.sort(inv.counts.sum(axis=1))[::-1]
    assert totals[0] / totals.sum() == pytest.approx(0.63, abs=0.005)
    assert inv.functions["Trigger"].value_counts()["timer"] == 247


@needs_real
def test_real_functions_expand_exactly_without_rescaling():
    trace = convert_azure_functions(REAL_FUNCS, [REAL_CONV], ["top"], duration_s=600.0, spread="uniform")
    inv = read_function_invocations(REAL_FUNCS)
    top = rank_functions(inv)[0]
    assert len(trace.requests) == inv.counts[top, :10].sum()
    assert trace.requests["time"].iloc[-1] < 600.0


@needs_real
def test_real_functions_rescaled_to_a_target_rate():
    models = [f"m{i:02d}" for i in range(32)]
    trace = convert_azure_functions(REAL_FUNCS, [REAL_CODE, REAL_CONV], models, target_rps=2.0,
                                    max_context_tokens=2048, seed=3)
    req = trace.requests
    assert len(req) / (480 * 60) == pytest.approx(2.0, rel=0.02)
    assert (req["input_tokens"] + req["output_tokens"]).max() <= 2048
    assert req["model"].value_counts().index[0] == "m00"
    assert trace.meta["raw_rps_of_selected"] > 90  # the top 32 functions carry most of the ~105 req/s


# --- the canonical file and its sidecar -----------------------------------------------------------

def test_write_read_roundtrip_and_byte_identical_reruns(tmp_path):
    def make(seed):
        return convert_azure_functions(TINY_FUNCS, [TINY_CODE, TINY_CONV], ["d", "a"], seed=seed)

    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write_stream(a, make(5))
    write_stream(b, make(5))
    assert a.read_bytes() == b.read_bytes()
    assert meta_path(a).read_bytes() == meta_path(b).read_bytes()
    assert a.read_text().splitlines()[0] == "time,model,input_tokens,output_tokens"
    back = read_stream(a)
    assert len(back) == 16 and back["model"].tolist().count("d") == 12
    meta = json.loads(meta_path(a).read_text())
    assert meta["converter"] == "azure_functions_2019" and meta["seed"] == 5
    assert meta["sources"][0] == {"file": TINY_FUNCS.name, "bytes": TINY_FUNCS.stat().st_size,
                                  "sha256": file_sha256(TINY_FUNCS)}
    assert meta["rows"] == 16 and meta["models"] == {"a": 4, "d": 12}


@pytest.mark.parametrize("body, where", [
    ("time,model,input_tokens\n0,a,1\n", "header"),
    ("time,model,input_tokens,output_tokens\n0,a,1,1\n-1,a,1,1\n", "row 3: time"),
    ("time,model,input_tokens,output_tokens\n0,a,1.5,1\n", "row 2: input_tokens"),
    ("time,model,input_tokens,output_tokens\n0,a,1,zero\n", "row 2: output_tokens"),
    ("time,model,input_tokens,output_tokens\n0,,1,1\n", "row 2: model"),
])
def test_read_stream_rejects_bad_rows(tmp_path, body, where):
    path = tmp_path / "r.csv"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        read_stream(path)
    assert info.value.field == where


def test_token_pool_keeps_rows_together():
    pool = token_pool([TINY_CODE, TINY_CONV])
    assert pool.tolist() == [[4808, 10], [3180, 8], [100, 200], [50, 60], [70, 80]]
    assert token_pool([TINY_CODE], max_context_tokens=300).tolist() == [[100, 200]]
