"""Scalar heads on the decoder trunk, for reward and value models.

A reward model reads one scalar per sequence at the last non-pad token (the
Bradley–Terry reward of the paper's §2.1); a value model reads one scalar per
position (the PPO critic of §2.2). Both are ``ScalarModel`` with a different
``readout``.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from rlhf_jax.models.config import DecoderConfig
from rlhf_jax.models.transformer import CausalLM, Decoder, KVCache, ModelOutput

READOUTS = ("last", "all")


def last_token_index(attention_mask_bt):
    """Index of each row's last non-pad token (right- or left-padded rows alike)."""
    t = attention_mask_bt.shape[-1]
    slots = jnp.arange(t)[None, :]
    return jnp.max(jnp.where(attention_mask_bt.astype(bool), slots, -1), axis=-1)


class ScalarHead(nn.Module):
    """``v = h · w + b`` in float32, one scalar per position.

    ``w`` and ``b`` are stored in float32 whatever the trunk's ``param_dtype``: a head trains on
    a frozen bfloat16 base under LoRA, and a bfloat16 weight of ~0.02 would round away updates
    of lr ~1e-5 (its spacing there is ~1e-4).
    """

    config: DecoderConfig

    @nn.compact
    def __call__(self, hidden_bte):
        e = self.config.hidden_size
        w = self.param("kernel", nn.with_logical_partitioning(
            nn.initializers.normal(1.0 / (e + 1) ** 0.5), ("embed",)), (e,), jnp.float32)
        b = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ()), (),
                       jnp.float32)
        return jnp.einsum("bte,e->bt", hidden_bte.astype(jnp.float32),
                          w.astype(jnp.float32)) + b.astype(jnp.float32)


HEAD_READS = ("sum", "quality", "length", "both")
"""What a :class:`ScalarModel` with a length head returns as ``values``: the sum of its two
heads (the reward it was trained with), one of them, or both stacked on a last axis
(``[..., 2]``: quality, length)."""


class ScalarModel(nn.Module):
    """Decoder + scalar head. ``values`` is ``[b]`` (readout ``last``) or ``[b, t]`` (``all``).

    ``length_head``: a second head beside ``score`` (ODIN's, Chen et al. 2024 §4:
    ``score`` is the quality head, ``length_score`` the length head, both linear on the same
    trunk features); ``heads`` says which of them ``values`` reads (:data:`HEAD_READS`).
    Without the length head the params are a plain reward model's, so an ODIN model's quality
    head alone is a ``ScalarModel`` over its params minus ``length_score``.
    """

    config: DecoderConfig
    readout: str = "last"
    length_head: bool = False
    heads: str = "sum"

    def setup(self):
        if self.readout not in READOUTS:
            raise ValueError(f"ScalarModel.readout={self.readout!r}; expected one of {READOUTS}")
        if self.heads not in HEAD_READS or (self.heads != "sum" and not self.length_head):
            raise ValueError(f"ScalarModel.heads={self.heads!r}; expected one of {HEAD_READS} "
                             "(anything but 'sum' needs length_head=True)")
        self.model = Decoder(self.config)
        self.score = ScalarHead(self.config)
        if self.length_head:
            self.length_score = ScalarHead(self.config)

    def __call__(self, input_ids, attention_mask=None, position_ids=None,
                 cache: Optional[KVCache] = None):
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        hidden, cache = self.model(input_ids, attention_mask, position_ids, cache)
        values = self._read_heads(hidden)  # [b, t] (or [b, t, 2]); "last" gathers one position
        if self.readout == "last":
            idx = last_token_index(attention_mask)
            index = idx[:, None, None] if values.ndim == 3 else idx[:, None]
            values = jnp.take_along_axis(values, index, axis=1)[:, 0]
        return ModelOutput(values=values, hidden_states=hidden, cache=cache)

    def _read_heads(self, hidden_bte):
        quality = self.score(hidden_bte)
        if not self.length_head:
            return quality
        length = self.length_score(hidden_bte)
        return {"sum": quality + length, "quality": quality, "length": length,
                "both": jnp.stack([quality, length], axis=-1)}[self.heads]


class PolicyWithValue(CausalLM):
    """A causal LM with a value head on its trunk: the PPO policy of the paper's TRL setup (§2.2).

    ``apply`` returns ``logits [b, t, vocab]`` and ``values [b, t]`` from one
    trunk pass. Parameter names are ``CausalLM``'s (``model``, ``lm_head``) plus
    ``value_head``, so ``CausalLM(config)`` samples from the same params with
    the value head left out (:func:`lm_params`).
    """

    def setup(self):
        super().setup()
        self.value_head = ScalarHead(self.config)

    def __call__(self, input_ids, attention_mask=None, position_ids=None,
                 cache: Optional[KVCache] = None, last_token_only: bool = False):
        hidden, cache = self.model(input_ids, attention_mask, position_ids, cache)
        logits = self.logits(hidden[:, -1:] if last_token_only else hidden)
        return ModelOutput(logits=logits, values=self.value_head(hidden), hidden_states=hidden,
                           cache=cache)


def lm_params(params: dict) -> dict:
    """The ``CausalLM`` part of a :class:`PolicyWithValue`'s params."""
    return {k: v for k, v in params.items() if k != "value_head"}
