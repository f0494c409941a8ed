"""experiments/validation-cpu/decode_gap.py on a synthetic series with known per-token times."""

import pandas as pd
import pytest
from repo_paths import load_experiment_script


def _load():
    return load_experiment_script("validation-cpu/decode_gap.py")


def _request(instance, arrival, tokens, live_step_s, sim_step_s, in_flight=1):
    ttft = 0.1
    return {"model": "m", "instance_id_live": instance, "arrival_s_live": arrival, "status_live": "completed",
            "status_sim": "completed", "output_tokens_live": tokens, "in_flight_live": in_flight,
            "ttft_s_live": ttft, "ttft_s_sim": ttft * 0.5,
            "latency_s_live": ttft + (tokens - 1) * live_step_s, "latency_s_sim": ttft * 0.5 + (tokens - 1) * sim_step_s}


def test_splits_first_and_later_requests_and_leaves_out_batched_ones(tmp_path):
    rows = [
        _request("m-0", 0.0, 11, 0.012, 0.010),   # first on m-0: sim -16.7 %
        _request("m-0", 5.0, 21, 0.010, 0.010),   # later: exact
        _request("m-0", 9.0, 5, 0.010, 0.010),    # later: exact
        _request("m-0", 9.5, 5, 0.030, 0.010, in_flight=8),  # decoded in a batch: left out
        _request("m-0", 9.6, 1, 0.030, 0.010),    # one token: no decode step, left out
    ]
    for run in ("run-1", "run-2"):
        report = tmp_path / run / "report"
        report.mkdir(parents=True)
        pd.DataFrame(rows).to_csv(report / "requests.csv", index=False)
    table = _load().decode_table(tmp_path).set_index("first_on_instance")
    assert table.loc[True, "n"] == 2 and table.loc[False, "n"] == 4
    assert table.loc[True, "live_ms_per_token"] == pytest.approx(12.0)
    assert table.loc[True, "decode_signed"] == pytest.approx(10 / 12 - 1)
    assert table.loc[False, "decode_signed"] == pytest.approx(0.0, abs=1e-12)
    assert table.loc[False, "ttft_signed"] == pytest.approx(-0.5)


def test_an_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no run-"):
        _load().decode_table(tmp_path)
