"""KV-cached sampling, entirely on device: one jitted prefill plus a ``lax.while_loop`` decode.

``sample`` takes left-padded prompts of different lengths in one batch, writes
the prompt's keys and values into a cache of ``prompt_len + max_new_tokens``
slots, then decodes one token per iteration. Each row stops at its own EOS; the
loop exits as soon as every row has stopped. The result has a fixed shape
``[batch, max_new_tokens]`` so callers never recompile on output length.

Sampling rules, applied to the next-token logits in this order (as in HF's
``generate``): temperature ``T`` (``logits / T``; ``T == 0`` means greedy),
top-k (keep the ``k`` largest), top-p (keep the smallest set of most likely
tokens whose probability mass reaches ``p``). ``logprobs`` are
``log_softmax(processed logits)`` at the chosen token, i.e. under the
distribution actually sampled from (for greedy: the model's untempered
distribution). With ``T = 1``, ``top_k = 0``, ``top_p = 1`` they equal the model's
own log-probabilities, which is what PPO needs.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence, Union

import flax
import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.kernels import build as kernel_build
from rlhf_jax.kernels import panel_matmul
from rlhf_jax.models.layers import CPU_PANELS, XLA
from rlhf_jax.models.transformer import KVCache, pack_projections, unstack_layers

_NEG_INF = -1e30


@flax.struct.dataclass
class SampleOutput:
    """``tokens``/``logprobs``/``mask``: ``[batch, max_new_tokens]``.

    ``mask`` is 1 for every generated token up to and including the row's EOS;
    after it, ``tokens`` hold ``pad_id`` and ``logprobs`` hold 0.
    """

    tokens: jax.Array
    logprobs: jax.Array
    mask: jax.Array

    @property
    def lengths(self):
        return self.mask.sum(axis=-1)


@flax.struct.dataclass
class _DecodeState:
    step: jax.Array
    tokens: jax.Array
    logprobs: jax.Array
    mask: jax.Array
    done: jax.Array
    next_logits: jax.Array
    cache: KVCache
    key: jax.Array
    seen: jax.Array  # [batch, vocab] tokens of the prompt and response so far (repetition penalty)


def left_pad(token_lists: Sequence[Sequence[int]], pad_id: int, bucket: int = 1) -> tuple:
    """Left-padded ``(ids, mask)`` int32 numpy arrays ``[batch, width]``.

    ``width`` is the longest list rounded up to a multiple of ``bucket``, so
    prompts of nearby lengths share one compiled sampler.
    """
    longest = max(len(tokens) for tokens in token_lists)
    width = -(-longest // bucket) * bucket
    ids = np.full((len(token_lists), width), pad_id, np.int32)
    mask = np.zeros((len(token_lists), width), np.int32)
    for row, tokens in enumerate(token_lists):
        if len(tokens):
            ids[row, width - len(tokens):] = tokens
            mask[row, width - len(tokens):] = 1
    return ids, mask


def process_logits(logits_bv, temperature, *, greedy: bool, top_k: int, use_top_p: bool, top_p):
    """Temperature, then top-k, then top-p; removed tokens get a logit of −1e30 (float32)."""
    logits = logits_bv.astype(jnp.float32)
    if greedy:
        return logits
    logits = logits / temperature
    if top_k > 0:
        kth_largest = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth_largest, _NEG_INF, logits)
    if use_top_p:
        logits = jnp.where(logits < top_p_cutoff(logits, top_p), _NEG_INF, logits)
    return logits


def _ordered_keys(x_f32):
    """``uint32`` keys with the order of the float32 values (IEEE bits, negatives flipped)."""
    bits = jax.lax.bitcast_convert_type(x_f32, jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def top_p_cutoff(logits_bv, top_p):
    """Per row, the smallest logit the nucleus (top-p, Holtzman et al. 2020) keeps: ``[batch, 1]``.

    Sorted by descending probability, a token is kept while the mass before it
    is below ``top_p`` (so the first always is). Equivalently the cutoff is the
    smallest logit ``v`` with ``mass(logits > v) < top_p``. Sorting a whole
    vocabulary every decode step is slow on CPU (~180 ms for 16 × 49,152), so
    this finds that ``v`` exactly by bisection over the 2³² ordered float32 keys:
    32 masked sums over the row (~7 ms), no sort.
    """
    probs = jax.nn.softmax(logits_bv, axis=-1)
    keys = _ordered_keys(logits_bv)

    def mass_above(t_b1):
        return jnp.sum(jnp.where(keys > t_b1, probs, 0.0), axis=-1, keepdims=True)

    def halve(_, bounds):  # invariant: mass_above(hi) < top_p; the answer lies in [lo, hi]
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        below = mass_above(mid) < top_p
        return jnp.where(below, lo, mid + 1), jnp.where(below, mid, hi)

    lo = jnp.min(keys, axis=-1, keepdims=True)
    hi = jnp.max(keys, axis=-1, keepdims=True)
    threshold, _ = jax.lax.fori_loop(0, 32, halve, (lo, hi))
    return jnp.min(jnp.where(keys >= threshold, logits_bv, jnp.inf), axis=-1, keepdims=True)


def _prompt_tokens(prompt_ids, prompt_mask, vocab_size: int):
    """``[batch, vocab]``: which tokens occur in each row's (unpadded) prompt."""
    rows = jnp.broadcast_to(jnp.arange(prompt_ids.shape[0])[:, None], prompt_ids.shape)
    return jnp.zeros((prompt_ids.shape[0], vocab_size), bool).at[rows, prompt_ids].max(
        prompt_mask.astype(bool))


def _mark_seen(seen_bv, token_b, live_b):
    """``seen`` with each live row's new token marked, as one elementwise pass over ``[batch, vocab]``."""
    new = jnp.arange(seen_bv.shape[1])[None, :] == token_b[:, None]
    return seen_bv | (new & live_b[:, None])


def apply_repetition_penalty(logits_bv, seen_bv, penalty):
    """CTRL's repetition penalty (Keskar et al. 2019; as transformers applies it).

    For every token already in the prompt or the response: a positive logit is
    divided by ``penalty``, a negative one multiplied by it.
    """
    logits = logits_bv.astype(jnp.float32)
    penalised = jnp.where(logits > 0, logits / penalty, logits * penalty)
    return jnp.where(seen_bv, penalised, logits)


def greedy_tokens(logits_bv):
    """``argmax`` over the vocabulary (the first index on ties), as a max then a min over indices.

    XLA:CPU runs ``jnp.argmax``'s paired (value, index) reduction at ~2 ms for
    16 × 49,152 logits; two plain reductions take ~1 ms. A row holding NaN
    (where no value equals the max) gets the last id.
    """
    vocab = logits_bv.shape[-1]
    top = jnp.max(logits_bv, axis=-1, keepdims=True)
    ids = jax.lax.broadcasted_iota(jnp.int32, logits_bv.shape, logits_bv.ndim - 1)
    first = jnp.min(jnp.where(logits_bv == top, ids, vocab), axis=-1)
    return jnp.minimum(first, vocab - 1)


def token_logprobs(logits, tokens):
    """``log_softmax(logits)[token]`` as ``logits[token] − logsumexp(logits)`` in float32.

    ``logits [..., vocab]``, ``tokens [...]`` (a decode step's ``[b]``, or a
    rollout's ``[b, t]``): the same number without materialising the log-softmax.
    """
    logits = logits.astype(jnp.float32)
    chosen = jnp.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0]
    return chosen - jax.nn.logsumexp(logits, axis=-1)


def _choose(logits_bv, key, greedy: bool):
    """The next token: the argmax, or a draw from ``softmax(logits)``.

    The draw is ``jax.random.categorical``'s own Gumbel-max, ``argmax(logits + Gumbel(key))``
    (the same tokens for the same key), with the argmax taken by :func:`greedy_tokens`:
    16 × 49,152 logits cost ~3.2 ms a step on this project's 2-core host instead of 8.7–12.5
    (XLA:CPU's paired argmax reduction): 0.7–1.2 s of a 128-token PPO rollout.
    """
    if greedy:
        return greedy_tokens(logits_bv)
    return greedy_tokens(logits_bv + jax.random.gumbel(key, logits_bv.shape, logits_bv.dtype))


def decoding_view(model, params, kernels: Optional[str] = None):
    """The same model laid out for decoding: layers unrolled, an untied LM head, on CPU panel matmuls.

    Decoding reads every weight once per token. With stacked (scanned) layers
    XLA slices each layer's weights out of the stack on every step, which on
    CPU is a full copy; unstacking once (``scan_layers=False``) removes that.
    A tied LM head multiplies by the transposed ``[vocab, embed]`` embedding,
    which XLA:CPU runs ~30% slower than by a ``[embed, vocab]`` matrix
    (SmolLM2 at batch 16: 17 → 12 ms a step), so the view gives the head its
    own transposed copy (``tie_word_embeddings=False``; the logits are the
    same). When the params live on a single CPU device with float32 weights
    (:func:`decoding_kernels`; ``kernels`` overrides it, and must be given
    inside ``jit``, where the params' placement is not known), every projection
    and the head are then packed for :mod:`rlhf_jax.kernels.panel_matmul`
    (``kernels="cpu_panels"``) when that kernel is available; the logits agree
    with XLA's matmul to float32 rounding. Called inside ``jit`` the copies are
    made once per call, outside any decode loop; the price is a second copy of
    the weights while sampling, and a compile time that grows with depth. A
    model already in this layout is returned unchanged. LoRA adapters are merged into their
    projections first (:func:`rlhf_jax.models.lora.merged`): the decode loop multiplies once.
    """
    cfg = model.config
    changes = {}
    if cfg.lora is not None:
        from rlhf_jax.models.lora import merged
        params = merged(cfg.lora, params)
        changes["lora"] = None
    if cfg.scan_layers:
        params = unstack_layers(params, cfg.num_layers)
        changes["scan_layers"] = False
    if cfg.tie_word_embeddings:
        embedding_ve = params["model"]["embed_tokens"]["embedding"]
        params = {**params, "lm_head": {"kernel": jnp.transpose(embedding_ve)}}
        changes["tie_word_embeddings"] = False
    kernels = kernels if kernels is not None else decoding_kernels(model, params)
    if kernels != model.kernels:
        if model.kernels == CPU_PANELS:
            raise ValueError("these params are packed for the CPU kernels; decode them with "
                             "kernels='cpu_panels' (or start from the training layout)")
        params = pack_projections(params, cfg.num_layers)  # XLA → CPU panels
    if not changes and kernels == model.kernels:
        return model, params
    return model.clone(config=cfg.replace(**changes), kernels=kernels), params


def decoding_kernels(model, params) -> str:
    """The kernels a decoding view of ``params`` should use, from where the params live.

    ``"cpu_panels"`` when they sit on one CPU device (numpy arrays count as the default
    device), in float32, on a CPU where the kernels pay
    (:func:`rlhf_jax.kernels.build.profitable_here`) and the panel kernel is built here;
    else ``"xla"``. The compile target decides, not the host: params placed on (or
    shaped for) TPU or GPU devices, or sharded over several, never get the CPU kernels.
    """
    if model.kernels == CPU_PANELS:
        return CPU_PANELS
    cfg = model.config
    if cfg.dtype != "float32" or cfg.param_dtype != "float32":
        return XLA
    devices = _devices_of(params)
    if len(devices) != 1 or next(iter(devices)).platform != "cpu":
        return XLA
    return CPU_PANELS if kernel_build.profitable_here() and panel_matmul.available() else XLA


def _devices_of(params) -> set:
    """The devices ``params`` live on (or, for ``ShapeDtypeStruct`` leaves, are shaped for)."""
    devices = set()
    for leaf in jax.tree.leaves(params):
        sh = getattr(leaf, "sharding", None)
        if sh is not None:
            devices |= set(sh.device_set)
        elif isinstance(leaf, jax.core.Tracer):
            raise ValueError("decoding_view inside jit needs kernels= (the params' placement is "
                             "not known while tracing)")
        else:
            devices.add(jax.devices()[0])
    return devices


def sample(model, params, prompt_ids, prompt_mask, key, *, max_new_tokens: int,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           eos_id: Optional[Union[int, Sequence[int]]] = None, pad_id: int = 0,
           repetition_penalty: float = 1.0, unroll_layers: bool = True) -> SampleOutput:
    """Sample up to ``max_new_tokens`` per row from ``model`` (a ``CausalLM``).

    ``prompt_ids``/``prompt_mask``: ``[batch, prompt_len]``, left-padded.
    ``temperature == 0`` is greedy. ``top_k == 0`` and ``top_p == 1`` disable
    those filters. ``eos_id`` may be one id or several; ``None`` never stops early.
    ``unroll_layers`` decodes with :func:`decoding_view` (faster; pass ``False``
    when a second copy of the weights does not fit in memory).
    The same ``key`` gives the same output. Compiled once per (model, shapes,
    ``max_new_tokens``, ``top_k``, greedy-or-not, top-p-or-not, EOS ids);
    temperature and the top-p value are traced.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
    if prompt_ids.shape != prompt_mask.shape or prompt_ids.ndim != 2:
        raise ValueError(f"prompt_ids {prompt_ids.shape} and prompt_mask {prompt_mask.shape} must "
                         "both be [batch, prompt_len]")
    if not 0.0 < top_p <= 1.0 or top_k < 0 or temperature < 0 or repetition_penalty <= 0:
        raise ValueError(f"need temperature ≥ 0, top_k ≥ 0, 0 < top_p ≤ 1, repetition_penalty > 0; "
                         f"got {temperature}, {top_k}, {top_p}, {repetition_penalty}")
    cfg = model.config
    if cfg.position == "learned" and prompt_ids.shape[1] + max_new_tokens > cfg.max_position_embeddings:
        raise ValueError(
            f"prompt length {prompt_ids.shape[1]} + max_new_tokens {max_new_tokens} exceeds the "
            f"{cfg.max_position_embeddings} learned positions of this {cfg.family} model")
    top_k = min(top_k, cfg.vocab_size)
    eos_ids = () if eos_id is None else tuple(int(e) for e in np.atleast_1d(eos_id))
    kernels = decoding_kernels(model, params) if unroll_layers else model.kernels
    return _sample_jitted(
        model, params, jnp.asarray(prompt_ids, jnp.int32), jnp.asarray(prompt_mask, jnp.int32), key,
        jnp.float32(max(temperature, 1e-6)), jnp.float32(top_p), max_new_tokens=max_new_tokens,
        top_k=top_k, greedy=temperature == 0, use_top_p=top_p < 1.0, eos_ids=eos_ids,
        pad_id=pad_id, unroll_layers=unroll_layers, kernels=kernels,
        penalty=jnp.float32(repetition_penalty), use_penalty=repetition_penalty != 1.0)


@functools.partial(jax.jit, static_argnames=(
    "model", "max_new_tokens", "top_k", "greedy", "use_top_p", "eos_ids", "pad_id",
    "unroll_layers", "kernels", "use_penalty"))
def _sample_jitted(model, params, prompt_ids, prompt_mask, key, temperature, top_p, *,
                   max_new_tokens, top_k, greedy, use_top_p, eos_ids, pad_id, unroll_layers,
                   kernels, penalty, use_penalty):
    if unroll_layers:
        model, params = decoding_view(model, params, kernels=kernels)
    b, p = prompt_ids.shape
    variables = {"params": params}
    cache = model.init_cache(b, p + max_new_tokens)
    prefill = model.apply(variables, prompt_ids, attention_mask=prompt_mask, cache=cache,
                          last_token_only=True)
    filters = dict(greedy=greedy, top_k=top_k, use_top_p=use_top_p, top_p=top_p)
    eos = jnp.asarray(eos_ids if eos_ids else (-1,), jnp.int32)

    def cond(state):
        return (state.step < max_new_tokens) & ~jnp.all(state.done)

    def body(state):
        key, step_key = jax.random.split(state.key)
        logits = state.next_logits
        if use_penalty:
            logits = apply_repetition_penalty(logits, state.seen, penalty)
        logits = process_logits(logits, temperature, **filters)
        token = _choose(logits, step_key, greedy)
        logprob = token_logprobs(logits, token)
        live = ~state.done
        token = jnp.where(live, token, pad_id)
        put = lambda buf, x: jax.lax.dynamic_update_slice_in_dim(buf, x[:, None], state.step, axis=1)
        out = model.apply(variables, token[:, None], attention_mask=live[:, None].astype(jnp.int32),
                          cache=state.cache)
        return _DecodeState(
            step=state.step + 1, tokens=put(state.tokens, token),
            logprobs=put(state.logprobs, jnp.where(live, logprob, 0.0)),
            mask=put(state.mask, live.astype(jnp.int32)),
            done=state.done | jnp.isin(token, eos), next_logits=out.logits[:, -1],
            cache=out.cache, key=key,
            seen=_mark_seen(state.seen, token, live) if use_penalty else state.seen)

    state = _DecodeState(
        step=jnp.zeros((), jnp.int32), tokens=jnp.full((b, max_new_tokens), pad_id, jnp.int32),
        logprobs=jnp.zeros((b, max_new_tokens), jnp.float32),
        mask=jnp.zeros((b, max_new_tokens), jnp.int32), done=jnp.zeros((b,), bool),
        next_logits=prefill.logits[:, -1], cache=prefill.cache, key=key,
        seen=_prompt_tokens(prompt_ids, prompt_mask, model.config.vocab_size) if use_penalty
        else jnp.zeros((b, 1), bool))
    state = jax.lax.while_loop(cond, body, state)
    return SampleOutput(tokens=state.tokens, logprobs=state.logprobs, mask=state.mask)
