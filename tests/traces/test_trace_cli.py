"""``sllmsim trace convert|generate|info`` write canonical CSVs with sidecars and report bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from sllmsim.cli import main
from sllmsim.traces.canonical import meta_path, read_stream

FIXTURES = Path(__file__).parent / "fixtures"


def test_convert_azure_llm(tmp_path, capsys):
    out = tmp_path / "llm.csv"
    rc = main(["trace", "convert", "azure-llm", f"code={FIXTURES / 'azure_llm_tiny_code.csv'}",
               f"conv={FIXTURES / 'azure_llm_tiny_conv.csv'}", "--time-scale", "2", "-o", str(out)])
    assert rc == 0
    assert "wrote 6 requests for 2 models" in capsys.readouterr().out
    df = read_stream(out)
    assert df["time"].max() == 3.5  # the code file's last request, 7 s after the conv file's first, halved
    meta = json.loads(meta_path(out).read_text())
    assert meta["parameters"]["time_scale"] == 2.0 and meta["rows"] == 6


def test_convert_azure_functions_with_model_template(tmp_path):
    out = tmp_path / "af.csv"
    rc = main(["trace", "convert", "azure-functions", str(FIXTURES / "azure_functions_tiny.csv"),
               "--tokens", str(FIXTURES / "azure_llm_tiny_conv.csv"), "--num-models", "3",
               "--model-template", "opt-{rank}", "--spread", "even", "--seed", "4", "-o", str(out)])
    assert rc == 0
    df = read_stream(out)
    assert df["model"].value_counts().to_dict() == {"opt-0": 12, "opt-1": 4, "opt-2": 3}
    meta = json.loads(meta_path(out).read_text())
    assert meta["seed"] == 4 and meta["parameters"]["spread"] == "even"


def test_generate_is_deterministic_per_seed(tmp_path):
    args = ["trace", "generate", "--model", "a,b", "--rate", "20", "--duration", "30", "--arrival", "gamma",
            "--cv", "3", "--seed", "9"]
    assert main(args + ["-o", str(tmp_path / "x.csv")]) == 0
    assert main(args + ["-o", str(tmp_path / "y.csv")]) == 0
    assert (tmp_path / "x.csv").read_bytes() == (tmp_path / "y.csv").read_bytes()
    assert main(args[:-1] + ["10", "-o", str(tmp_path / "z.csv")]) == 0
    assert (tmp_path / "x.csv").read_bytes() != (tmp_path / "z.csv").read_bytes()


def test_generate_from_a_workloads_file(tmp_path):
    spec = tmp_path / "w.yaml"
    spec.write_text("workloads:\n  - {model: a, rate_per_s: 5, duration_s: 20}\n"
                    "  - {model: b, rate_per_s: 5, duration_s: 20, start_s: 10, input_tokens: [5, 9]}\n")
    out = tmp_path / "w.csv"
    assert main(["trace", "generate", "--workloads", str(spec), "-o", str(out)]) == 0
    df = pd.read_csv(out)
    assert set(df["model"]) == {"a", "b"} and df.loc[df.model == "b", "time"].min() >= 10
    assert json.loads(meta_path(out).read_text())["sources"][0]["file"] == "w.yaml"


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    spec = tmp_path / "w.yaml"
    spec.write_text("workloads:\n  - {model: a, rate_per_s: 5, duration: 20}\n")
    assert main(["trace", "generate", "--workloads", str(spec), "-o", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {spec}: workloads[0]: duration: unknown key") and "Traceback" not in err
    assert main(["trace", "convert", "azure-functions", str(FIXTURES / "azure_functions_tiny.csv"),
                 "--tokens", str(FIXTURES / "azure_llm_tiny_conv.csv"), "-o", str(tmp_path / "o.csv")]) == 2
    assert "exactly one of --models" in capsys.readouterr().err


def test_info_summarises(tmp_path, capsys):
    out = tmp_path / "g.csv"
    main(["trace", "generate", "--model", "a", "--rate", "2", "--duration", "50", "-o", str(out)])
    capsys.readouterr()
    assert main(["trace", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "converter: synthetic" in text and "requests per model" in text
