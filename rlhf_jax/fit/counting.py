"""Bytes per chip and FLOPs, counted by hand from shapes (``cost_analysis()`` counts a loop body once)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

def shard_bytes(tree) -> int:
    """Bytes of one chip's shards of a pytree of ``ShapeDtypeStruct`` / arrays with shardings
    (the largest shard where they differ; an unsharded leaf counts whole)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.shape
        sh = getattr(leaf, "sharding", None)
        if sh is not None:
            shape = sh.shard_shape(shape)
        total += math.prod(shape) * _itemsize(leaf.dtype)
    return total


def _itemsize(dtype) -> int:
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return 8  # a threefry key: two uint32
    return jnp.dtype(dtype).itemsize


def matmul_params(cfg, *, lm_head: bool) -> int:
    """Weights that multiply every token: the blocks' projections, and the LM head if used."""
    e, f, h, k, d = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads,
                     cfg.head_dim)
    attention = e * h * d * 2 + e * k * d * 2            # q, o; k, v
    mlp = e * f * (3 if cfg.mlp == "gated" else 2)
    return cfg.num_layers * (attention + mlp) + (e * cfg.vocab_size if lm_head else 0)


def decoder_forward_flops(cfg, tokens: int, context: int, *, lm_head: bool = True) -> float:
    """Forward FLOPs of ``tokens`` tokens that each attend over ``context`` keys:
    ``2·P·tokens + 4·layers·heads·head_dim·context·tokens`` (``P`` from :func:`matmul_params`;
    attention counted over the whole context, as a dense causal kernel computes it)."""
    attention = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * context
    return float(tokens) * (2 * matmul_params(cfg, lm_head=lm_head) + attention)


def training_passes(cfg) -> int:
    """Forwards' worth of FLOPs in a training step: forward + backward (activation gradients,
    one forward's worth; weight gradients, one more, skipped for LoRA's frozen base: its
    adapters' own are negligible), plus one forward more when the layers are rematerialised."""
    return 1 + 1 + (0 if cfg.lora is not None else 1) + (1 if cfg.remat != "none" else 0)


def train_flops(cfg, tokens: int, context: int, *, lm_head: bool = True) -> float:
    """:func:`training_passes` forwards over ``tokens``."""
    return training_passes(cfg) * decoder_forward_flops(cfg, tokens, context, lm_head=lm_head)


def _forward_flops(cfg, rows: int, prompt: int, response: int) -> float:
    """A forward over ``rows × (prompt + response)`` tokens with the LM head on the response."""
    trunk = decoder_forward_flops(cfg, rows * (prompt + response), prompt + response, lm_head=False)
    return trunk + 2.0 * cfg.hidden_size * cfg.vocab_size * rows * response
