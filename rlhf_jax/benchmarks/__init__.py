"""Benchmarks, run as scripts (``python -m rlhf_jax.benchmarks.<name>``); not tests."""
