"""``sllmsim trace``: convert public traces and generate synthetic ones into the canonical request CSV."""

from __future__ import annotations

from pathlib import Path

import click

OUT_HELP = "request CSV to write (its provenance goes to OUT.meta.json beside it)"


@click.group()
def trace() -> None:
    """Request traces: converters and generators writing time,model,input_tokens,output_tokens CSVs."""


@trace.group()
def convert() -> None:
    """Convert a public trace into the canonical request CSV."""


@convert.command("azure-llm")
@click.argument("sources", nargs=-1, required=True, metavar="MODEL=FILE...")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help=OUT_HELP)
@click.option("--time-scale", type=float, default=1.0, show_default=True,
              help="k in t' = t / k: k > 1 replays the trace k times faster (k times the rate)")
@click.option("--origin", type=click.Choice(["common", "each"]), default="common", show_default=True,
              help="time 0 at the earliest timestamp of all files, or at each file's own first one")
@click.option("--duration", "duration_s", type=float, default=None, help="keep arrivals before this many seconds")
def convert_azure_llm(sources: tuple[str, ...], out: Path, time_scale: float, origin: str,
                      duration_s: float | None) -> None:
    """Azure LLM inference trace 2023 (Splitwise, ISCA 2024): each FILE's requests go to MODEL.

    Example: sllmsim trace convert azure-llm opt-6.7b=AzureLLMInferenceTrace_code.csv
    opt-13b=AzureLLMInferenceTrace_conv.csv -o traces/azure-llm.csv
    """
    from sllmsim.traces.azure_llm import convert_azure_llm as run

    pairs = [_model_file(s) for s in sources]
    result = run([(path, model) for model, path in pairs], time_scale=time_scale, origin=origin,
                 duration_s=duration_s)
    _write(out, result)


@convert.command("azure-functions")
@click.argument("invocations", type=click.Path(path_type=Path))
@click.option("--tokens", "token_paths", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Azure LLM 2023 file whose rows give token counts (repeatable)")
@click.option("--models", default=None, help="comma-separated model names; rank r (0 = most popular) -> r-th name")
@click.option("--num-models", type=int, default=None, help="instead of --models: K models named by --model-template")
@click.option("--model-template", default="fn-{rank:03d}", show_default=True,
              help="name of the model of rank r with --num-models (a Python format string with {rank})")
@click.option("--selection", type=click.Choice(["top", "random"]), default="top", show_default=True,
              help="the K most popular functions, or K at random (seeded)")
@click.option("--trigger", "triggers", multiple=True, help="keep only functions with this trigger (repeatable), e.g. http")
@click.option("--spread", type=click.Choice(["uniform", "even", "poisson"]), default="uniform", show_default=True,
              help="how a minute's count becomes arrival times within the minute")
@click.option("--target-rps", type=float, default=None, help="rescale the total request rate to this many per second")
@click.option("--rate-scaling", type=click.Choice(["thin", "time"]), default="thin", show_default=True,
              help="thin: scale per-minute counts (keeps real idle gaps); time: compress time")
@click.option("--start-minute", type=int, default=None, help="first minute column to use (a label of the file)")
@click.option("--duration", "duration_s", type=float, default=None, help="cut the output at this many seconds")
@click.option("--max-context-tokens", type=int, default=None,
              help="draw token counts only from rows whose input + output fit this context window")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help=OUT_HELP)
def convert_azure_functions(invocations: Path, token_paths: tuple[Path, ...], models: str | None,
                            num_models: int | None, model_template: str, selection: str,
                            triggers: tuple[str, ...], spread: str, target_rps: float | None,
                            rate_scaling: str, start_minute: int | None, duration_s: float | None,
                            max_context_tokens: int | None, seed: int, out: Path) -> None:
    """Azure Functions 2019 per-minute counts (Serverless in the Wild, ATC 2020) mapped onto models.

    Example: sllmsim trace convert azure-functions azure_functions_2019_sample500_invocations.csv
    --tokens AzureLLMInferenceTrace_conv.csv --num-models 8 --target-rps 1 --duration 3600 -o af.csv
    """
    from sllmsim.errors import ConfigError
    from sllmsim.traces.azure_functions import convert_azure_functions as run

    if (models is None) == (num_models is None):
        raise ConfigError("--models/--num-models", "", "give exactly one of --models a,b,c or --num-models K")
    if models is not None:
        names = [m.strip() for m in models.split(",") if m.strip()]
    else:
        if num_models < 1:
            raise ConfigError("--num-models", "", f"expected at least 1, got {num_models}")
        try:
            names = [model_template.format(rank=r) for r in range(num_models)]
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError("--model-template", "", f"expected a format string using {{rank}}: {exc}") from None
    result = run(invocations, list(token_paths), names, selection=selection,
                 triggers=list(triggers) or None, spread=spread, target_rps=target_rps,
                 rate_scaling=rate_scaling, start_minute=start_minute, duration_s=duration_s,
                 max_context_tokens=max_context_tokens, seed=seed)
    _write(out, result)


@trace.command("generate")
@click.option("--workloads", "workloads_file", type=click.Path(path_type=Path), default=None,
              help="YAML file with a list of workload entries (or a mapping with a 'workloads' list)")
@click.option("--model", "model_names", default=None, help="model name, or comma-separated names sharing the rate by Zipf")
@click.option("--rate", "rate_per_s", type=float, default=None, help="mean arrival rate, requests per second")
@click.option("--duration", "duration_s", type=float, default=None, help="seconds of arrivals")
@click.option("--arrival", type=click.Choice(["poisson", "gamma"]), default="poisson", show_default=True)
@click.option("--cv", type=float, default=None, help="coefficient of variation of the gaps (gamma)")
@click.option("--zipf-s", type=float, default=None, help="Zipf exponent over the comma-separated models (default 1)")
@click.option("--input-tokens", type=int, default=None, help="prompt tokens per request (default 128)")
@click.option("--output-tokens", type=int, default=None, help="output tokens per request (default 128)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help=OUT_HELP)
def generate(workloads_file: Path | None, model_names: str | None, rate_per_s: float | None,
             duration_s: float | None, arrival: str, cv: float | None, zipf_s: float | None,
             input_tokens: int | None, output_tokens: int | None, seed: int, out: Path) -> None:
    """Synthetic arrivals: Poisson or bursty Gamma per model, Zipf popularity over several models.

    Either one workload from the options, or the entries of a --workloads YAML (the same keys as a
    trace YAML's workloads: list). Example: sllmsim trace generate --model a,b,c --rate 5
    --duration 600 --arrival gamma --cv 4 --seed 1 -o bursty.csv
    """
    import numpy as np

    from sllmsim.errors import ConfigError
    from sllmsim.traces.canonical import Trace, source_info
    from sllmsim.traces.synthetic import generate_workloads

    if workloads_file is not None:
        if any(v is not None for v in (model_names, rate_per_s, duration_s, cv, zipf_s, input_tokens, output_tokens)):
            raise ConfigError("--workloads", "", "give the workload either in the YAML file or as options, not both")
        specs = _load_workloads(workloads_file)
        source = str(workloads_file)
        sources = [source_info(workloads_file)]
    else:
        for name, value in (("--model", model_names), ("--rate", rate_per_s), ("--duration", duration_s)):
            if value is None:
                raise ConfigError(name, "", "required (or give --workloads FILE)")
        names = [m.strip() for m in model_names.split(",") if m.strip()]
        spec: dict = {"rate_per_s": rate_per_s, "duration_s": duration_s, "arrival": arrival}
        if len(names) == 1:
            spec["model"] = names[0]
        else:
            spec["models"] = names
        for key, value in (("cv", cv), ("zipf_s", zipf_s), ("input_tokens", input_tokens),
                           ("output_tokens", output_tokens)):
            if value is not None:
                spec[key] = value
        specs = [spec]
        source = "options"
        sources = []
    df = generate_workloads(specs, np.random.default_rng(np.random.SeedSequence(seed)), source)
    meta = {"converter": "synthetic", "parameters": {"workloads": specs}, "seed": seed, "sources": sources}
    _write(out, Trace(requests=df, meta=meta))


@trace.command("info")
@click.argument("path", type=click.Path(path_type=Path))
def info(path: Path) -> None:
    """Summarise a canonical request CSV: rows, span, rate and requests per model."""
    from rich.console import Console
    from rich.table import Table

    from sllmsim.traces.canonical import read_meta, read_stream

    df = read_stream(path)
    meta = read_meta(path)
    span = float(df["time"].iloc[-1] - df["time"].iloc[0]) if len(df) > 1 else 0.0
    console = Console()
    console.print(f"{path}: {len(df):,} requests over {span:,.1f} s"
                  + (f" ({len(df) / span:.3f} req/s)" if span > 0 else ""))
    if meta:
        console.print(f"converter: {meta.get('converter')}  seed: {meta.get('seed')}  "
                      f"parameters: {meta.get('parameters')}")
    table = Table(title="requests per model")
    for col in ("model", "requests", "share", "mean input tokens", "mean output tokens"):
        table.add_column(col, justify="left" if col == "model" else "right")
    grouped = df.groupby("model", sort=True)
    counts = grouped.size().sort_values(ascending=False, kind="stable")
    means = grouped[["input_tokens", "output_tokens"]].mean()
    for model, n in counts.items():
        table.add_row(str(model), f"{n:,}", f"{n / len(df):.1%}", f"{means.loc[model, 'input_tokens']:.0f}",
                      f"{means.loc[model, 'output_tokens']:.0f}")
    console.print(table)


def _model_file(text: str) -> tuple[str, Path]:
    from sllmsim.errors import ConfigError

    model, sep, path = text.partition("=")
    if not sep or not model or not path:
        raise ConfigError(text, "", "expected MODEL=FILE, e.g. opt-6.7b=AzureLLMInferenceTrace_code.csv")
    return model, Path(path)


def _load_workloads(path: Path) -> list:
    import yaml

    from sllmsim.errors import ConfigError

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", f"not valid YAML ({exc})") from None
    if isinstance(data, dict):
        if "workloads" not in data:
            raise ConfigError(str(path), "workloads", "expected a 'workloads' list (or a top-level list)")
        data = data["workloads"]
    if not isinstance(data, list):
        raise ConfigError(str(path), "workloads", f"expected a list of workload mappings, got {type(data).__name__}")
    return data


def _write(out: Path, result) -> None:
    from sllmsim.traces.canonical import write_stream

    csv_path, meta_path = write_stream(out, result)
    df = result.requests
    span = float(df["time"].iloc[-1]) if len(df) else 0.0
    click.echo(f"wrote {len(df):,} requests for {df['model'].nunique()} models over {span:,.1f} s to {csv_path} "
               f"(provenance: {meta_path.name})")
