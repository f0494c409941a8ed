"""Live mode: serve real transformers models, placed by the same scheduler core as the simulator.

Storage side (this package's lower half): :mod:`live.store` (model store and import area),
:mod:`live.checkpoint_format` (a checkpoint folder on disk: manifest, hashes, copying),
:mod:`live.node_storage` (a node's disk, host-memory cache and device), :mod:`live.host_cache`,
:mod:`live.loader` (the fast safetensors loader) and :mod:`live.tiny_model` (test fixtures).
Importing this package imports nothing heavy; the modules import torch and transformers.
"""
