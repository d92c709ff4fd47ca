"""rollml: optimistic-rollup ML inference with fraud proofs."""

__version__ = "0.1.0"
