"""The decoder trunk, the causal LM on top of it, and the KV cache.

``Decoder`` embeds tokens, runs the layers and applies the final norm. With
``scan_layers=True`` (training; the default) the layers are one ``nn.scan`` over
stacked parameters (leading logical axis ``layers``, so compile time does not
grow with depth); with ``False`` (decoding, see ``rlhf_jax.generate.decoding_view``)
they are unrolled with one parameter subtree per layer. ``CausalLM`` adds the LM head (tied to the
embedding or its own matrix). Scalar heads for reward and value models live in
``rlhf_jax.models.heads``.

Padding: batches are left-padded. Position ids default to
``cumsum(attention_mask) − 1`` over everything seen so far (cache included), so a
left-padded row gets the same positions as the unpadded sequence.
"""

from __future__ import annotations

import math
from typing import Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from rlhf_jax.kernels.panel_matmul import pack_panels
from rlhf_jax.models.config import DecoderConfig
from rlhf_jax.models.layers import (CPU_PANELS, XLA, Block, Norm, _constrain, _weight, check_kernels,
                                    linear, matmul_transposed, rope_table)


@flax.struct.dataclass
class KVCache:
    """Keys and values of every layer for ``max_length`` slots, all on device.

    ``k``: ``[batch, kv_heads, head_dim, slots]`` (keys transposed, so that
    ``q · kᵀ`` needs no transpose) and ``v``: ``[batch, kv_heads, slots,
    head_dim]`` per layer; stacked with a leading ``layers`` axis for a scanned
    model, or a tuple of ``num_layers`` arrays for an unrolled one
    (``scan_layers=False``), so that no layer's cache is sliced out of or
    stacked into a bigger array on each step.
    ``mask``: ``[batch, slots]``, 1 where a slot holds a real token; ``index``:
    the next slot to write.
    """

    k: jax.Array
    v: jax.Array
    mask: jax.Array
    index: jax.Array

    @classmethod
    def zeros(cls, config: DecoderConfig, batch_size: int, max_length: int, dtype=None):
        dtype = dtype or config.compute_dtype
        k_shape = (batch_size, config.num_kv_heads, config.head_dim, max_length)
        v_shape = (batch_size, config.num_kv_heads, max_length, config.head_dim)
        if config.scan_layers:
            k = jnp.zeros((config.num_layers, *k_shape), dtype)
            v = jnp.zeros((config.num_layers, *v_shape), dtype)
        else:
            k = tuple(jnp.zeros(k_shape, dtype) for _ in range(config.num_layers))
            v = tuple(jnp.zeros(v_shape, dtype) for _ in range(config.num_layers))
        return cls(k=k, v=v,
                   mask=jnp.zeros((batch_size, max_length), jnp.int32),
                   index=jnp.zeros((), jnp.int32))


@flax.struct.dataclass
class ModelOutput:
    """What the models return: ``logits`` (LM) or ``values`` (scalar head), hidden states, cache."""

    logits: Optional[jax.Array] = None
    values: Optional[jax.Array] = None
    hidden_states: Optional[jax.Array] = None
    cache: Optional[KVCache] = None


def default_positions(attention_mask_bt):
    """Position ids ``max(cumsum(mask) − 1, 0)``: left padding does not shift positions."""
    return jnp.maximum(jnp.cumsum(attention_mask_bt, axis=-1) - 1, 0).astype(jnp.int32)


def _remat_policy(name):
    """The ``jax.checkpoint`` policy of a :data:`~rlhf_jax.models.config.REMAT_POLICIES` name."""
    policies = jax.checkpoint_policies
    return {"full": None, "dots": policies.checkpoint_dots,
            "dots_no_batch": policies.dots_with_no_batch_dims_saveable}[name]


class Decoder(nn.Module):
    """Token (+ learned position) embedding, ``num_layers`` blocks, final norm.

    Returns ``(hidden_bte, cache)``; ``cache`` is ``None`` when none was given.
    ``kernels``: see :data:`rlhf_jax.models.layers.KERNELS`.
    """

    config: DecoderConfig
    kernels: str = XLA

    def setup(self):
        cfg = self.config
        check_kernels(self.kernels)
        if self.kernels == CPU_PANELS and cfg.scan_layers:
            raise ValueError("kernels='cpu_panels' needs unrolled layers (scan_layers=False); "
                             "use rlhf_jax.generate.decoding_view")
        self.embed_tokens = nn.Embed(
            cfg.vocab_size, cfg.hidden_size, dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(0.02), ("vocab", "embed")))
        if cfg.position == "learned":
            self.embed_positions = nn.Embed(
                cfg.max_position_embeddings, cfg.hidden_size, dtype=cfg.compute_dtype,
                param_dtype=cfg.params_dtype,
                embedding_init=nn.with_logical_partitioning(
                    nn.initializers.normal(0.01), ("position", "embed")))
        block = Block
        if cfg.remat != "none":
            block = nn.remat(Block, prevent_cse=not cfg.scan_layers, policy=_remat_policy(cfg.remat))
        if cfg.scan_layers:
            self.layers = nn.scan(
                block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0), length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"})(cfg, self.kernels)
        else:
            self.blocks = [block(cfg, self.kernels, name=f"layers_{i}") for i in range(cfg.num_layers)]
        self.norm = Norm(cfg)

    def _run_layers(self, x, rope, key_mask_bs, cache_index, layer_kv):
        if self.config.scan_layers:
            return self.layers(x, rope, key_mask_bs, cache_index, layer_kv)
        new_k, new_v = [], []
        for i, blk in enumerate(self.blocks):
            kv_i = None if layer_kv is None else (layer_kv[0][i], layer_kv[1][i])
            x, kv_i = blk(x, rope, key_mask_bs, cache_index, kv_i)
            if kv_i is not None:
                new_k.append(kv_i[0])
                new_v.append(kv_i[1])
        return x, (None if layer_kv is None else (tuple(new_k), tuple(new_v)))

    def __call__(self, input_ids, attention_mask=None, position_ids=None,
                 cache: Optional[KVCache] = None):
        b, t = input_ids.shape
        mask_bt = jnp.ones((b, t), jnp.int32) if attention_mask is None \
            else attention_mask.astype(jnp.int32)
        if cache is None:
            key_mask_bs, cache_index, layer_kv = mask_bt, jnp.zeros((), jnp.int32), None
        else:
            key_mask_bs = jax.lax.dynamic_update_slice(cache.mask, mask_bt, (0, cache.index))
            cache_index, layer_kv = cache.index, (cache.k, cache.v)
        positions_bt = position_ids
        if positions_bt is None:
            positions_bt = jax.lax.dynamic_slice_in_dim(
                default_positions(key_mask_bs), cache_index, t, axis=1)
        x = self.embed_tokens(input_ids)
        if self.config.position == "learned":
            x = x + self.embed_positions(positions_bt)
        x = _constrain(x, ("batch", "length", "act_embed"))
        x, layer_kv = self._run_layers(x, rope_table(self.config, positions_bt, self.kernels), key_mask_bs,
                                       cache_index, layer_kv)
        x = self.norm(x)
        if cache is not None:
            cache = KVCache(k=layer_kv[0], v=layer_kv[1], mask=key_mask_bs, index=cache.index + t)
        return x, cache


def unstack_layers(params, num_layers: int):
    """Stacked ``layers`` params (``scan_layers=True``) → ``layers_0 … layers_{n-1}`` subtrees.

    Works on any params dict whose decoder sits under ``"model"``. Inside ``jit``
    the slices are taken once, outside any decode loop.
    """
    model = dict(params["model"])
    stacked = model.pop("layers")
    for i in range(num_layers):
        model[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
    return {**params, "model": model}


def stack_layers(params, num_layers: int):
    """Inverse of :func:`unstack_layers`."""
    model = dict(params["model"])
    per_layer = [model.pop(f"layers_{i}") for i in range(num_layers)]
    model["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)
    return {**params, "model": model}


# Projection matrices of a block (number of input axes each), packed by :func:`pack_projections`.
_BLOCK_PROJECTIONS = {"attn": {"q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 2},
                      "mlp": {"up_proj": 1, "gate_proj": 1, "down_proj": 1}}


def pack_projections(params, num_layers: int):
    """Unrolled (``layers_i``), untied params → every projection and the LM head as 16-column panels.

    The layout of ``kernels="cpu_panels"`` (see :func:`rlhf_jax.models.layers.linear`).
    """
    def pack(w, n_in):
        k = math.prod(w.shape[:n_in])
        return pack_panels(w.reshape(k, -1))

    model = dict(params["model"])
    for i in range(num_layers):
        layer = dict(model[f"layers_{i}"])
        for block, names in _BLOCK_PROJECTIONS.items():
            layer[block] = {name: pack(w, names[name]) if name in names else w
                            for name, w in layer[block].items()}
        model[f"layers_{i}"] = layer
    lm_head = {"kernel": pack_panels(params["lm_head"]["kernel"])}
    return {**params, "model": model, "lm_head": lm_head}


class LMHead(nn.Module):
    """Untied output projection ``logits = h · W`` with ``W: [embed, vocab]``."""

    config: DecoderConfig
    kernels: str = XLA

    @nn.compact
    def __call__(self, hidden_bte):
        cfg = self.config
        w = _weight(self, "kernel", ("embed", "vocab"), (cfg.hidden_size, cfg.vocab_size))
        return linear(self, hidden_bte, w)


def lm_head_weight(params: dict, config: DecoderConfig) -> tuple:
    """``(W, vocab_major)``: the LM head's matrix of a :class:`CausalLM`'s ``params`` in the
    compute dtype, the tied token embedding ``[vocab, embed]`` (``vocab_major``) or the untied
    ``lm_head`` kernel ``[embed, vocab]``; what :meth:`CausalLM.logits` multiplies by."""
    if config.tie_word_embeddings:
        return params["model"]["embed_tokens"]["embedding"].astype(config.compute_dtype), True
    return params["lm_head"]["kernel"].astype(config.compute_dtype), False


class CausalLM(nn.Module):
    """Decoder + LM head. ``apply`` returns a :class:`ModelOutput` with ``logits [b, t, vocab]``.

    ``last_token_only=True`` computes logits for the final position alone
    (``[b, 1, vocab]``), which is all a sampler's prefill needs. ``kernels``: how it
    multiplies (:data:`rlhf_jax.models.layers.KERNELS`; ``"cpu_panels"`` only in the view
    :func:`rlhf_jax.generate.decoding_view` makes).
    """

    config: DecoderConfig
    kernels: str = XLA

    def setup(self):
        self.model = Decoder(self.config, self.kernels)
        if not self.config.tie_word_embeddings:
            self.lm_head = LMHead(self.config, self.kernels)

    def __call__(self, input_ids, attention_mask=None, position_ids=None,
                 cache: Optional[KVCache] = None, last_token_only: bool = False):
        hidden, cache = self.model(input_ids, attention_mask, position_ids, cache)
        logits = self.logits(hidden[:, -1:] if last_token_only else hidden)
        return ModelOutput(logits=logits, hidden_states=hidden, cache=cache)

    def logits(self, hidden_bte):
        """LM head on hidden states; tied heads reuse the token embedding."""
        if self.config.tie_word_embeddings:
            table = self.model.embed_tokens.embedding
            logits = matmul_transposed(hidden_bte.astype(self.config.compute_dtype),
                                       table.astype(self.config.compute_dtype))
        else:
            logits = self.lm_head(hidden_bte)
        return _constrain(logits, ("batch", "length", "act_vocab"))

    def init_cache(self, batch_size: int, max_length: int, dtype=None) -> KVCache:
        """An empty cache of ``max_length`` slots (prompt + new tokens)."""
        return KVCache.zeros(self.config, batch_size, max_length, dtype)
