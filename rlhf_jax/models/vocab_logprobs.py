"""Token log-probabilities and entropies through the LM head, never holding ``[b, t, vocab]``.

PPO needs, at each response position, ``log π(y_t)`` (the chosen token's log-probability) and
the policy's entropy ``H_t``. Computed the plain way, ``logits = h · W`` is a
``[b, t, vocab]`` float32 array, its log-softmax another, and the backward pass a third
(``∂logits``): at SmolLM2's 49,152-entry vocabulary and 16 × 128 response tokens that is
~400 MB each, and the largest temporaries of a PPO update on a small model.

:func:`token_logprobs_and_entropy` walks the sequence in chunks of positions instead: each
chunk's logits exist only inside one ``lax.map`` (forward) or ``lax.scan`` (backward) step, and
its VJP, written by hand, recomputes them from ``h`` and ``W`` rather than storing them. For a
chunk with logits ``z``, ``lse = logsumexp(z)`` and ``p = exp(z − lse)``:

- ``log π(y) = z_y − lse`` and ``H = lse − Σ_v p_v z_v``;
- ``∂z = g_lp · (onehot(y) − p) − g_H · p ⊙ (z − lse + H)``
  (``∂H/∂z_v = −p_v (log p_v + H)``);
- ``∂h = ∂z · Wᵀ`` and ``∂W += hᵀ · ∂z`` (summed over the chunks in the scan's carry).

The chunks run along the sequence axis, so the batch axis keeps its sharding on a device
mesh and the vocabulary axis its tensor sharding (the ``logsumexp`` over a sharded vocabulary
is GSPMD's reduction). The cost is one extra ``h · W`` per chunk in the backward pass.

:func:`head_logprobs`, what the stages call, chunks on accelerators only. On XLA:CPU the
recomputed ``h · W`` costs more than the memory it saves: SmolLM2-135M's PPO iteration at
16 × (64 + 128) tokens took 43.0–44.7 s chunked against 38.5–41.2 s plain, for a peak RSS of
11.1 against 11.9 GB (``benchmarks.vs_torch`` workers, 2 rounds × 2 iterations, this project's
2-core host, 2026-12-06). The choice is made per compile target
(``jax.lax.platform_dependent``), so ``rlhf-jax fit`` compiles the chunked form for a TPU
topology from a CPU host.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rlhf_jax.models.layers import matmul

ROWS_PER_CHUNK = 512
"""Rows (batch × positions) of logits one chunk holds: ``[512, 49152]`` float32 is 100 MB."""


def chunk_positions(batch: int, length: int, rows: int = ROWS_PER_CHUNK) -> int:
    """Positions per chunk: ``rows // batch`` (at least 1, at most ``length``)."""
    return max(1, min(length, rows // max(batch, 1)))


def _contract_last(a, b, b_axis: int):
    """``a[..., k] · b`` contracting ``a``'s last axis with ``b``'s axis ``b_axis``, float32 out."""
    return jax.lax.dot_general(a, b, (((a.ndim - 1,), (b_axis,)), ((), ())),
                               preferred_element_type=jnp.float32)


def _chunk_logits(h_bcd, weight, vocab_major: bool):
    """``h · W`` in float32: ``W [vocab, embed]`` (a tied embedding) or ``[embed, vocab]``."""
    return _contract_last(h_bcd, weight, 1 if vocab_major else 0)


def _chunk_forward(h_bcd, t_bc, weight, vocab_major: bool):
    z = _chunk_logits(h_bcd, weight, vocab_major)
    lse = jax.nn.logsumexp(z, axis=-1)
    chosen = jnp.take_along_axis(z, t_bc[..., None], axis=-1)[..., 0]
    p = jnp.exp(z - lse[..., None])
    entropy = lse - jnp.sum(p * z, axis=-1)
    return chosen - lse, entropy, lse


def _split(x, c: int):
    """``[b, t, …]`` → ``[t/c, b, c, …]`` (``t`` a multiple of ``c``)."""
    b, t = x.shape[:2]
    return jnp.moveaxis(x.reshape(b, t // c, c, *x.shape[2:]), 1, 0)


def _join(x):
    """Inverse of :func:`_split`."""
    k, b, c = x.shape[:3]
    return jnp.moveaxis(x, 0, 1).reshape(b, k * c, *x.shape[3:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _chunked(hidden_btd, weight, tokens_bt, vocab_major: bool, c: int):
    logprobs, entropy, _ = _chunked_forward(hidden_btd, weight, tokens_bt, vocab_major, c)[0]
    return logprobs, entropy


def _chunked_forward(hidden_btd, weight, tokens_bt, vocab_major, c):
    h, t = _split(hidden_btd, c), _split(tokens_bt, c)
    lp, ent, lse = jax.lax.map(lambda xs: _chunk_forward(xs[0], xs[1], weight, vocab_major),
                               (h, t))
    out = (_join(lp), _join(ent), _join(lse))
    return out, (hidden_btd, weight, tokens_bt, out[1], out[2])


def _chunked_fwd(hidden_btd, weight, tokens_bt, vocab_major, c):
    (lp, ent, _), residuals = _chunked_forward(hidden_btd, weight, tokens_bt, vocab_major, c)
    return (lp, ent), residuals


def _chunked_bwd(vocab_major, c, residuals, cotangents):
    hidden_btd, weight, tokens_bt, entropy_bt, lse_bt = residuals
    g_lp, g_ent = cotangents

    def step(dw, xs):
        h, t, ent, lse, glp, gent = xs
        z = _chunk_logits(h, weight, vocab_major)
        p = jnp.exp(z - lse[..., None])
        onehot = jax.lax.broadcasted_iota(jnp.int32, z.shape, z.ndim - 1) == t[..., None]
        dz = (glp[..., None] * (onehot.astype(jnp.float32) - p)
              - gent[..., None] * p * (z - lse[..., None] + ent[..., None]))
        dz = dz.astype(h.dtype)
        # W [vocab, embed]: ∂h = ∂z · W, ∂W = ∂zᵀ · h;  W [embed, vocab]: ∂h = ∂z · Wᵀ, ∂W = hᵀ · ∂z
        dh = _contract_last(dz, weight, 0 if vocab_major else 1)
        left, right = (dz, h) if vocab_major else (h, dz)
        dw = dw + jax.lax.dot_general(left.reshape(-1, left.shape[-1]),
                                      right.reshape(-1, right.shape[-1]),
                                      (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
        return dw, dh.astype(h.dtype)

    xs = tuple(_split(x, c) for x in (hidden_btd, tokens_bt, entropy_bt, lse_bt,
                                       g_lp.astype(jnp.float32), g_ent.astype(jnp.float32)))
    dw, dh = jax.lax.scan(step, jnp.zeros(weight.shape, jnp.float32), xs)
    return _join(dh), dw.astype(weight.dtype), None


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


def plain_logprobs_and_entropy(hidden_btd, weight, tokens_bt, *, vocab_major: bool):
    """:func:`token_logprobs_and_entropy` from a whole ``[b, t, vocab]`` float32 logits array,
    differentiated by autodiff: ``z_y − logsumexp(z)`` and ``−Σ p log p``. The product is
    :func:`~rlhf_jax.models.layers.matmul`, whose VJP keeps XLA:CPU from writing the
    ``[tokens, vocab]`` gradient transposed; a tied ``[vocab, embed]`` table is transposed
    first (a 113 MB copy for SmolLM2), since XLA:CPU's product with the transposed operand is
    slower: the PPO forward of 16 × (64 + 128) tokens took 4.25 s against 5.25 with
    ``matmul_transposed`` (``benchmarks.backward_profile --parts full``, 2026-12-06)."""
    z = matmul(hidden_btd, weight.T if vocab_major else weight).astype(jnp.float32)
    chosen = jnp.take_along_axis(z, tokens_bt[..., None].astype(jnp.int32), axis=-1)[..., 0]
    logp = jax.nn.log_softmax(z, axis=-1)
    return chosen - jax.nn.logsumexp(z, axis=-1), -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def head_logprobs(hidden_btd, weight, tokens_bt, *, vocab_major: bool):
    """``(log π(tokens), entropy)`` through the LM head: chunked
    (:func:`token_logprobs_and_entropy`) when compiled for an accelerator, plain
    (:func:`plain_logprobs_and_entropy`) for XLA:CPU (the module docstring gives the numbers).
    An entropy nobody uses costs nothing on the plain path (XLA drops it)."""
    plain = functools.partial(plain_logprobs_and_entropy, vocab_major=vocab_major)
    chunked = functools.partial(token_logprobs_and_entropy, vocab_major=vocab_major)
    return jax.lax.platform_dependent(hidden_btd, weight, tokens_bt, cpu=plain, default=chunked)


def token_logprobs_and_entropy(hidden_btd, weight, tokens_bt, *, vocab_major: bool,
                               rows_per_chunk: int = ROWS_PER_CHUNK):
    """``(log π(tokens) [b, t], entropy [b, t])`` in float32 for the LM head ``weight``.

    ``hidden_btd``: the final (normed) hidden states at the positions whose next token is
    ``tokens_bt``; ``weight``: the tied embedding ``[vocab, embed]`` (``vocab_major=True``) or
    the untied head's kernel ``[embed, vocab]``, both in the compute dtype. Differentiable in
    ``hidden_btd`` and ``weight`` (the module docstring gives the VJP). Equal, to float32
    rounding, to ``log_softmax(h · W)`` taken at the tokens and its entropy.
    """
    b, t = tokens_bt.shape
    c = chunk_positions(b, t, rows_per_chunk)
    pad = -t % c
    if pad:
        hidden_btd = jnp.pad(hidden_btd, ((0, 0), (0, pad), (0, 0)))
        tokens_bt = jnp.pad(tokens_bt, ((0, 0), (0, pad)))
    logprobs, entropy = _chunked(hidden_btd, weight, tokens_bt.astype(jnp.int32), vocab_major, c)
    return logprobs[:, :t], entropy[:, :t]
