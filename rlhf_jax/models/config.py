"""The architecture description shared by every decoder family.

A :class:`DecoderConfig` is what the Flax modules read. Family files under
``rlhf_jax/models/families/`` translate a HuggingFace ``config.json`` into one
(and back), so the modules never see HF-specific key names.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax.numpy as jnp

from rlhf_jax.models.lora import LoraConfig

NORMS = ("rms", "layer")
MLPS = ("gated", "plain")
ACTIVATIONS = ("silu", "gelu", "gelu_tanh", "relu")
POSITIONS = ("rope", "learned")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
"""``remat``: what each layer's forward keeps for the backward pass. ``none``: every
intermediate; ``full``: only the layer's input (the whole layer runs again); ``dots``: every
matmul output (``jax.checkpoint_policies.checkpoint_dots``); ``dots_no_batch``: the
projections' outputs only (``dots_with_no_batch_dims_saveable``), so the attention scores and
probabilities, ``[b, heads, t, t]`` per layer, are recomputed from the saved q/k/v."""


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Hyper-parameters of a decoder-only transformer.

    Frozen and hashable, so a module built from it can be a static argument of
    ``jax.jit``. ``rope_scaling`` is a sorted tuple of ``(key, value)`` pairs
    (the HF dict made hashable), or ``None``. ``scan_layers=True`` runs the
    layers as one ``nn.scan`` over parameters stacked on a leading ``layers``
    axis (compile time independent of depth: training); ``False`` unrolls them
    with one parameter subtree per layer, ``layers_0`` … (no per-step weight
    slicing: decoding). :func:`rlhf_jax.models.transformer.unstack_layers`
    converts between the two. How the modules multiply (XLA or the CPU
    decoding kernels) is not part of the config: it is the modules' ``kernels``
    attribute (:data:`rlhf_jax.models.layers.KERNELS`). ``lora``: low-rank adapters on the
    projections it targets (:mod:`rlhf_jax.models.lora`), or ``None``.
    """

    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    norm: str = "rms"
    norm_eps: float = 1e-6
    mlp: str = "gated"
    activation: str = "silu"
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    position: str = "rope"
    rope_theta: float = 10000.0
    rope_scaling: Optional[tuple] = None
    tie_word_embeddings: bool = False
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    pad_token_id: Optional[int] = None
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"
    scan_layers: bool = True
    lora: Optional[LoraConfig] = None

    def __post_init__(self):
        _check_choice("norm", self.norm, NORMS)
        _check_choice("mlp", self.mlp, MLPS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("position", self.position, POSITIONS)
        _check_choice("remat", self.remat, REMAT_POLICIES)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads}) for grouped-query attention")
        jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)  # fail early on a typo

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def params_dtype(self):
        return jnp.dtype(self.param_dtype)

    @property
    def rope_scaling_dict(self) -> dict:
        return dict(self.rope_scaling or ())

    def replace(self, **changes) -> "DecoderConfig":
        """A copy with some fields changed (e.g. ``dtype="bfloat16"``)."""
        return dataclasses.replace(self, **changes)


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"DecoderConfig.{name}={value!r}; expected one of {allowed}")
