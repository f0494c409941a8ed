"""Request traces: converters from public traces and synthetic generators into one canonical stream.

- :mod:`sllmsim.traces.canonical` — the ``time,model,input_tokens,output_tokens`` CSV and its sidecar;
- :mod:`sllmsim.traces.request_arrays` — the same stream in memory as parallel arrays (what the simulator reads);
- :mod:`sllmsim.traces.synthetic` — Poisson / Gamma arrivals, Zipf popularity, trace-YAML ``workloads:``;
- :mod:`sllmsim.traces.azure_llm` — the Azure LLM inference trace 2023 (Patel et al., Splitwise, ISCA 2024);
- :mod:`sllmsim.traces.azure_functions` — the Azure Functions 2019 per-minute invocation counts
  (Shahrad et al., Serverless in the Wild, USENIX ATC 2020) mapped onto models.

This package converts formats and draws arrivals; it models nothing about serving.
"""
