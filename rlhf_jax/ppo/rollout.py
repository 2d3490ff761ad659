"""Rollout: sample responses, then one forward each for policy log-probs, reference log-probs and values.

Singhal et al. 2023 §2.2 (TRL 0.5): responses are sampled with top_k 0, top_p 1,
temperature 1. TRL's ``generate`` draws ``max_new_tokens`` from its
``LengthSampler(lo, hi)`` (uniform over ``lo … hi − 1``) once per generation chunk
of 4 prompts; :func:`length_caps` draws the same way, one cap per chunk of
``generation.cap_chunk`` rows. To keep one compiled sampler, we always sample
``hi − 1`` tokens and cut each row at its cap ``n`` afterwards (tokens past ``n``
are masked; a response whose EOS came after ``n`` counts as not ended), which is
the same distribution as sampling with ``max_new_tokens = n``.

Positions: the sequence is ``[prompt (left-padded, P) | response (right-padded, T)]``;
response token ``t`` is predicted at position ``P − 1 + t``, where its log-prob,
the reference log-prob and the value (the state before emitting it) are read.
Only those ``T`` positions go through the LM head, in chunks of positions
(:mod:`rlhf_jax.models.vocab_logprobs`, on accelerators), so no ``[b, T, vocab]`` float32 tensor is
materialised, forward or backward.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from rlhf_jax.models.transformer import lm_head_weight
from rlhf_jax.models.vocab_logprobs import head_logprobs


def response_positions(prompt_len: int, response_len: int):
    """Indices into the concatenated sequence whose outputs predict the response tokens."""
    return jnp.arange(prompt_len - 1, prompt_len - 1 + response_len)


def concat_sequences(prompt_ids, prompt_mask, response_ids, response_mask):
    return (jnp.concatenate([prompt_ids, response_ids], axis=1),
            jnp.concatenate([prompt_mask, response_mask], axis=1))


def policy_outputs(model, params, prompt_ids, prompt_mask, response_ids, response_mask, *,
                   with_values: bool, with_entropy: bool = False, rngs=None):
    """``(logprobs [b, T], values [b, T] or None, entropy [b, T] or None)`` of the response tokens.

    ``model`` is a :class:`~rlhf_jax.models.heads.PolicyWithValue` (``with_values``)
    or a :class:`CausalLM`; the LM head runs on the response positions only, a chunk of
    positions at a time on accelerators (:func:`~rlhf_jax.models.vocab_logprobs.head_logprobs`).
    """
    ids, mask = concat_sequences(prompt_ids, prompt_mask, response_ids, response_mask)
    out = model.apply({"params": params}, ids, attention_mask=mask, last_token_only=True,
                      rngs=rngs)
    positions = response_positions(prompt_ids.shape[1], response_ids.shape[1])
    weight, vocab_major = lm_head_weight(params, model.config)
    hidden = out.hidden_states[:, positions].astype(weight.dtype)
    logprobs, entropy = head_logprobs(hidden, weight, response_ids, vocab_major=vocab_major)
    values = out.values[:, positions].astype(jnp.float32) if with_values else None
    return logprobs, values, entropy if with_entropy else None


def scalar_values(model, params, prompt_ids, prompt_mask, response_ids, response_mask):
    """Values of the response positions from a separate ``ScalarModel(readout="all")``."""
    ids, mask = concat_sequences(prompt_ids, prompt_mask, response_ids, response_mask)
    values = model.apply({"params": params}, ids, attention_mask=mask).values
    return values[:, response_positions(prompt_ids.shape[1], response_ids.shape[1])].astype(jnp.float32)


def length_caps(rows: int, low: int, high: int, chunk: int, seed) -> np.ndarray:
    """``[rows]`` caps: one draw from ``low … high − 1`` per ``chunk`` consecutive rows
    (TRL's ``LengthSampler(low, high)`` called once per generation chunk), seeded by ``seed``."""
    draws = np.random.default_rng(seed).integers(low, high, -(-rows // chunk))
    return np.repeat(draws, chunk)[:rows].astype(np.int32)


def cut_to_length(tokens, mask, caps, eos_ids, pad_id: int):
    """Mask each row's response tokens past its cap (``caps [b]``, traced); returns
    ``(tokens, mask, lengths, ended)``. ``ended``: the row's last kept token is an EOS.
    """
    t = tokens.shape[1]
    keep = (jnp.arange(t)[None] < caps[:, None]) & (mask > 0)
    tokens = jnp.where(keep, tokens, pad_id)
    lengths = jnp.sum(keep, axis=1)
    last = jnp.take_along_axis(tokens, jnp.maximum(lengths - 1, 0)[:, None], axis=1)[:, 0]
    ended = (lengths > 0) & jnp.isin(last, jnp.asarray(eos_ids))
    return tokens, keep.astype(jnp.int32), lengths, ended
