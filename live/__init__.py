"""Live mode: serve real transformers models, placed by the same scheduler core as the simulator.

Storage side (this package's lower half): :mod:`live.store` (model store and import area),
:mod:`live.checkpoint_format` (a checkpoint folder on disk: manifest, hashes, copying),
:mod:`live.node_storage` (a node's disk, host-memory cache and device), :mod:`live.host_cache`,
:mod:`live.loader` (the fast safetensors loader) and :mod:`live.tiny_model` (test fixtures).
Serving side: :mod:`live.server` (the HTTP API; error answers in :mod:`live.http_errors`, streams in
:mod:`live.sse`) over :mod:`live.controller` (admission, scaling, loading, making room), which changes
the entities of :mod:`live.state` and asks the scheduler core over :mod:`live.scheduler_views`;
:mod:`live.deployments` validates and persists deployments, :mod:`live.status` shows them.
Importing this package imports nothing heavy; the modules import torch and transformers.
"""
