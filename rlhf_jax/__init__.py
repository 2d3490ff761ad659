"""rlhf_jax: a JAX/Flax RLHF library reimplementing and extending
*A Long Way to Go: Investigating Length Correlations in RLHF* (Singhal et al., 2023).

Modules:
  rlhf_jax.models    Flax decoder models, heads, HF safetensors / GGUF checkpoints.
  rlhf_jax.generate  KV-cached sampler (prefill + ``lax.while_loop`` decode).
  rlhf_jax.sharding  device mesh, logical axis rules, param and batch placement.
  rlhf_jax.cli       the ``rlhf-jax`` command.
"""

__version__ = "0.1.0"
