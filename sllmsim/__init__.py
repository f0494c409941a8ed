"""sllmsim: simulate and serve serverless LLM clusters with storage-aware scheduling."""

__version__ = "0.1.0"
