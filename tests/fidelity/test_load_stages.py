"""experiments/validation-cpu/load_stages.py on a synthetic two-run series with known stage times."""

from pathlib import Path

import pandas as pd
import pytest
from repo_paths import load_experiment_script


def _load():
    return load_experiment_script("validation-cpu/load_stages.py")


def _load_row(model, rank, tier, live, sim, paired=True):
    row = {"model": model, "first_rank": rank, "tier_live": tier, "paired": paired}
    for i, stage in enumerate(("download", "to_host", "to_gpu")):
        row[f"{stage}_s_live"], row[f"{stage}_s_sim"] = live[i], sim[i]
    row["load_s_live"], row["load_s_sim"] = sum(live), sum(sim)
    return row


def _write(folder: Path, run: str, rows):
    path = folder / run / "report"
    path.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path / "loads.csv", index=False)


def test_medians_per_load_and_stage_over_runs_and_host_loads_without_a_disk_stage(tmp_path, capsys):
    series = tmp_path / "series"
    # A disk load whose disk stage the simulator doubles and whose device stage it halves, and a host load.
    _write(series, "run-1", [_load_row("a", 0, "disk", (0, 1.0, 2.0), (0, 2.0, 1.0)),
                             _load_row("a", 1, "host", (0, 0, 1.0), (0, 0, 0.8)),
                             _load_row("b", 0, "disk", (0, 1.0, 1.0), (0, 1.0, 1.0), paired=False)])
    _write(series, "run-2", [_load_row("a", 0, "disk", (0, 2.0, 2.0), (0, 4.0, 1.0)),
                             _load_row("a", 1, "host", (0, 0, 1.0), (0, 0, 1.2))])
    module = _load()
    rows = module.stage_rows(module.read_series([series])).set_index(["model", "rank", "stage"])
    assert set(rows.index) == {("a", 0, "to_host"), ("a", 0, "to_gpu"), ("a", 0, "load"),
                               ("a", 1, "to_gpu"), ("a", 1, "load")}  # unpaired b and empty stages left out
    assert rows.loc[("a", 0, "to_host"), "signed_error"] == pytest.approx(1.0)
    assert rows.loc[("a", 0, "to_gpu"), "signed_error"] == pytest.approx(-0.5)
    assert rows.loc[("a", 0, "to_host"), "live_s"] == pytest.approx(1.5)
    assert rows.loc[("a", 0, "load"), "signed_error"] == pytest.approx((0.0 + 0.25) / 2)  # runs: 3/3 and 5/4
    assert rows.loc[("a", 1, "to_gpu"), "signed_error"] == pytest.approx(0.0)  # -20 % and +20 %
    assert rows.loc[("a", 1, "to_gpu"), "runs"] == 2
    assert module.main([str(series)]) == 0
    assert "| a #0 | disk | to_host | 2 | 1.50 | 3.00 | +100 % |" in capsys.readouterr().out


def test_a_folder_without_runs_is_named(tmp_path):
    with pytest.raises(SystemExit, match="no run-"):
        _load().read_series([tmp_path])
