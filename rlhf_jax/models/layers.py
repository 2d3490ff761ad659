"""Building blocks of the decoder: norms, rotary embeddings, attention, MLP, block.

Every parameter is declared with logical axis names (see ``rlhf_jax.sharding``
for the rules that map them onto a device mesh) and every large activation is
constrained with logical names too. Shapes follow the einsum-suffix habit:
``b`` batch, ``t`` query length, ``s`` key length (cache slots), ``e`` embed,
``h`` query heads, ``k`` kv heads, ``g`` query heads per kv head, ``d`` head dim,
``f`` MLP hidden.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlhf_jax.kernels import decode_attention
from rlhf_jax.kernels.panel_matmul import PANEL, panel_matmuls
from rlhf_jax.models import lora
from rlhf_jax.models.config import DecoderConfig

_INIT_STD = 0.02

XLA, CPU_PANELS = "xla", "cpu_panels"
KERNELS = (XLA, CPU_PANELS)
"""How a module multiplies: ``"xla"`` (``jnp.dot`` on weights in their logical shapes: training,
scoring, TPU/GPU) or ``"cpu_panels"`` (CPU decoding: every projection and the LM head stored as
16-column panels for :mod:`rlhf_jax.kernels.panel_matmul`, single-query attention by
:mod:`rlhf_jax.kernels.decode_attention`). Not a model hyper-parameter: it is the decoding layout
that :func:`rlhf_jax.generate.decoding_view` chooses for the compile target, passed to each
module as its ``kernels`` attribute beside the :class:`DecoderConfig`."""


def check_kernels(kernels: str) -> str:
    if kernels not in KERNELS:
        raise ValueError(f"kernels={kernels!r}: expected one of {KERNELS}")
    return kernels


def _param(module: nn.Module, name: str, axes: tuple, shape: tuple, init=None):
    """Declares a parameter with logical axis names ``axes``."""
    init = init or nn.initializers.normal(stddev=_INIT_STD)
    boxed = nn.with_logical_partitioning(init, axes)
    return module.param(name, boxed, shape, module.config.params_dtype)


class Projection(NamedTuple):
    """A projection matrix ``w`` (from :func:`_weight`), its output width ``n_out`` (the product
    of its output axes) and its LoRA adapter ``(a, b)`` or ``None``."""

    w: jax.Array
    n_out: int
    adapter: Optional[tuple] = None


def _weight(module: nn.Module, name: str, axes: tuple, shape: tuple, n_in: int = 1) -> Projection:
    """The projection ``name`` of logical shape ``shape`` (its first ``n_in`` axes are inputs).

    With ``module.kernels == "cpu_panels"`` the matrix is stored as the 16-column panels of its
    ``[prod(in), prod(out)]`` reshape (:func:`rlhf_jax.kernels.panel_matmul.pack_panels`).
    When the config's ``lora`` targets ``name``, the adapter ``name_lora_a [in…, r]`` (PEFT's
    uniform init) and ``name_lora_b [r, out…]`` (zeros) are declared beside it, in float32, with
    the projection's logical axes and a replicated rank axis (:mod:`rlhf_jax.models.lora`).
    Multiply with :func:`linear`.
    """
    k, n = math.prod(shape[:n_in]), math.prod(shape[n_in:])
    lora_cfg = module.config.lora
    adapted = lora_cfg is not None and name in lora_cfg.targets
    if module.kernels == CPU_PANELS:
        if adapted:
            raise ValueError("kernels='cpu_panels' takes merged weights: decode with "
                             "rlhf_jax.models.lora.merged params and a config without lora")
        return Projection(_param(module, name, (None, None, None), (-(-n // PANEL), k, PANEL)), n)
    w = _param(module, name, axes, shape)
    if not adapted:
        return Projection(w, n)
    r = lora_cfg.rank
    a = module.param(name + lora.ADAPTER_A, nn.with_logical_partitioning(
        lora.adapter_init(k), (*axes[:n_in], lora.RANK_AXIS)), (*shape[:n_in], r), jnp.float32)
    b = module.param(name + lora.ADAPTER_B, nn.with_logical_partitioning(
        nn.initializers.zeros, (lora.RANK_AXIS, *axes[n_in:])), (r, *shape[n_in:]), jnp.float32)
    return Projection(w, n, (a, b))


def linear(module: nn.Module, x, projection: Projection):
    """``x[..., k] · W`` with ``W`` from :func:`_weight`, as one 2-D ``[k, n_out]`` matmul.

    Multi-axis einsums (``[e, h, d]`` weights) make XLA:CPU transpose the weight
    on every call; the 2-D reshape is free and keeps it in place. Panels run
    :func:`rlhf_jax.kernels.panel_matmul.panel_matmul`.
    """
    return linears(module, x, (projection,))[0]


def linears(module: nn.Module, x, projections):
    """``[x · W (+ LoRA) for each projection]``: several :func:`linear` of the same input.

    With panels they run as one kernel call (``x`` transposed once, all the
    panels split between the threads together: a decode step's q/k/v or
    gate/up are each too small to keep the threads busy alone). An adapted
    projection adds ``(α/r)·(dropout(x)·A)·B`` (:mod:`rlhf_jax.models.lora`).
    """
    dt = module.config.compute_dtype
    if module.kernels == CPU_PANELS:
        return panel_matmuls(x, [(p.w.astype(dt), p.n_out) for p in projections])
    outs = [matmul(x, p.w.astype(dt).reshape(-1, p.n_out)) for p in projections]
    if any(p.adapter is not None for p in projections):
        lora_cfg = module.config.lora
        x_in = x
        if lora_cfg.dropout > 0 and module.has_rng("dropout"):
            keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - lora_cfg.dropout, x.shape)
            x_in = jnp.where(keep, x / (1.0 - lora_cfg.dropout), 0).astype(x.dtype)
        r = lora_cfg.rank
        for i, p in enumerate(projections):
            if p.adapter is not None:
                a, b = p.adapter
                low = matmul(x_in, a.astype(dt).reshape(-1, r))
                outs[i] = outs[i] + (lora_cfg.scale * matmul(low, b.astype(dt).reshape(r, -1))
                                     ).astype(outs[i].dtype)
    return outs


_CONTRACT_ROWS = (((0,), (0,)), ((), ()))  # Σ over the leading (token) axis of both operands


@jax.custom_vjp
def matmul(x, w):
    """``x[..., k] · w[k, n]``, with a VJP written as two plain products.

    ``∂x = g · wᵀ`` (``g[..., n]`` contracted with ``w``'s ``n`` axis) and ``∂w = x₂ᵀ · g₂``
    (the ``[m, k]``/``[m, n]`` reshapes contracted over their leading axis), each one
    ``dot_general`` with no transpose around it. The numbers are those of ``jax.grad`` of
    ``jnp.dot``. What changes is the HLO: autodiff's ``∂w`` is a transposed product that
    XLA:CPU's transpose folding turns into a dot on ``gᵀ``. Layout assignment then makes the
    elementwise fusion that produces ``g`` (SwiGLU's backward) write it transposed, a strided
    store of ~80 ms per ``[3072, 1536]`` array. SmolLM2-135M's trunk over 16 × 192 tokens:
    forward + backward 21.8 → 15.6 s (``benchmarks.backward_profile --parts trunk``, issue 15).
    Remat policies still see the forward ``dot_general`` (``checkpoint_dots`` saves it).
    """
    return jnp.dot(x, w)


def _matmul_forward(x, w):
    return jnp.dot(x, w), (x, w)


def _matmul_backward(residuals, g):
    x, w = residuals
    k, n = w.shape
    dx = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())))
    dw = jax.lax.dot_general(x.reshape(-1, k), g.reshape(-1, n), _CONTRACT_ROWS)
    return dx.astype(x.dtype), dw.astype(w.dtype)


matmul.defvjp(_matmul_forward, _matmul_backward)


@jax.custom_vjp
def matmul_transposed(x, w):
    """``x[..., k] · w[n, k]ᵀ`` (a tied LM head on the ``[vocab, embed]`` embedding), with
    ``∂x = g · w`` and ``∂w = g₂ᵀ · x₂`` as plain products: :func:`matmul`'s VJP for the
    transposed weight, which keeps the ``[tokens, vocab]`` log-softmax gradient in place."""
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (1,)), ((), ())))


def _matmul_transposed_forward(x, w):
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (1,)), ((), ()))), (x, w)


def _matmul_transposed_backward(residuals, g):
    x, w = residuals
    n, k = w.shape
    dx = jnp.dot(g, w)
    dw = jax.lax.dot_general(g.reshape(-1, n), x.reshape(-1, k), _CONTRACT_ROWS)
    return dx.astype(x.dtype), dw.astype(w.dtype)


matmul_transposed.defvjp(_matmul_transposed_forward, _matmul_transposed_backward)


def _constrain(x, axes):
    return nn.with_logical_constraint(x, axes)


class Norm(nn.Module):
    """RMSNorm ``x / sqrt(mean(x²) + eps) · w`` or LayerNorm ``(x − μ)/σ · w + b``.

    Statistics are computed in float32 whatever the compute dtype.
    """

    config: DecoderConfig

    @nn.compact
    def __call__(self, x_bte):
        cfg = self.config
        e = x_bte.shape[-1]
        x32 = x_bte.astype(jnp.float32)
        scale = _param(self, "scale", ("norm",), (e,), nn.initializers.ones)
        if cfg.norm == "rms":
            y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + cfg.norm_eps)
            y = y * scale.astype(jnp.float32)
        else:
            mean = jnp.mean(x32, axis=-1, keepdims=True)
            var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
            y = (x32 - mean) * jax.lax.rsqrt(var + cfg.norm_eps)
            bias = _param(self, "bias", ("norm",), (e,), nn.initializers.zeros)
            y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
        return y.astype(cfg.compute_dtype)


def rope_inverse_frequencies(config: DecoderConfig) -> jnp.ndarray:
    """Inverse frequencies ``θ^(−2i/d)`` of RoPE, with HF's ``rope_scaling`` applied.

    Supported ``rope_type``s: ``default``, ``linear`` (frequencies divided by
    ``factor``) and ``llama3`` (the Llama-3.1 wavelength-dependent smoothing).
    """
    d = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    scaling = config.rope_scaling_dict
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = jnp.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return jnp.where(medium, smoothed, scaled)
    raise ValueError(f"rope_scaling type {kind!r} is not supported (default, linear, llama3)")


def rope_table(config: DecoderConfig, positions_bt, kernels: str = XLA):
    """``(cos, sin)`` of the rotary angles ``pos · inv_freq``, each ``[batch, t, head_dim]``.

    ``None`` for models without RoPE. Computed once per forward and shared by
    every layer. On CPU decoding (``kernels="cpu_panels"``) the table is computed behind
    a conditional, which XLA cannot fuse through: otherwise XLA:CPU fuses
    ``cos``/``sin`` into each layer's rotation and evaluates them once per head
    (SmolLM2 at batch 16: 0.9 ms of a ~35 ms step; an optimization barrier is
    removed before fusion and does not help).
    """
    if config.position != "rope":
        return None
    angle = positions_bt.astype(jnp.float32)[:, :, None] * rope_inverse_frequencies(config)
    angle = jnp.concatenate([angle, angle], axis=-1)
    cos_sin = lambda a: (jnp.cos(a), jnp.sin(a))
    if kernels == CPU_PANELS:  # a predicate XLA cannot fold; both branches are the same
        return jax.lax.cond(jnp.all(jnp.isfinite(angle)), cos_sin, cos_sin, angle)
    return cos_sin(angle)


def apply_rope(x_bthd, rope):
    """Rotates pairs ``(x_i, x_{i+d/2})`` by angle ``pos · inv_freq_i`` (HF ``rotate_half`` layout).

    ``rope`` is :func:`rope_table`'s ``(cos, sin)``.
    """
    cos, sin = (table[:, :, None, :] for table in rope)
    x32 = x_bthd.astype(jnp.float32)
    half = x32.shape[-1] // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * cos + rotated * sin).astype(x_bthd.dtype)


class Attention(nn.Module):
    """Causal grouped-query attention ``softmax(q kᵀ / √d + mask) v`` with an optional KV cache.

    ``layer_kv`` is ``None`` (no cache: keys are this call's tokens) or a pair
    ``(k_bkds, v_bksd)`` of cache slots (keys transposed: slots minor); this
    call's keys and values are written at slot ``cache_index`` and the updated
    pair is returned. ``key_mask_bs`` marks the key slots that hold real tokens
    (padding excluded).
    """

    config: DecoderConfig
    kernels: str = XLA

    @nn.compact
    def __call__(self, x_bte, rope, key_mask_bs, cache_index, layer_kv):
        cfg = self.config
        e, h, k, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        dt = cfg.compute_dtype
        b, t = x_bte.shape[:2]
        wq = _weight(self, "q_proj", ("embed", "heads", "head_dim"), (e, h, d))
        wk = _weight(self, "k_proj", ("embed", "kv_heads", "head_dim"), (e, k, d))
        wv = _weight(self, "v_proj", ("embed", "kv_heads", "head_dim"), (e, k, d))
        wo = _weight(self, "o_proj", ("heads", "head_dim", "embed"), (h, d, e), n_in=2)
        q, key, val = linears(self, x_bte, (wq, wk, wv))
        q, key, val = q.reshape(b, t, h, d), key.reshape(b, t, k, d), val.reshape(b, t, k, d)
        if cfg.qkv_bias:
            zeros = nn.initializers.zeros
            q = q + _param(self, "q_bias", ("heads", "head_dim"), (h, d), zeros).astype(dt)
            key = key + _param(self, "k_bias", ("kv_heads", "head_dim"), (k, d), zeros).astype(dt)
            val = val + _param(self, "v_bias", ("kv_heads", "head_dim"), (k, d), zeros).astype(dt)
        if rope is not None:
            q, key = apply_rope(q, rope), apply_rope(key, rope)
        q = _constrain(q, ("batch", "length", "act_heads", "head_dim"))

        one_query_kernel = self.kernels == CPU_PANELS and t == 1 and decode_attention.available()
        if layer_kv is not None and one_query_kernel and layer_kv[0].dtype == jnp.float32:
            out, layer_kv = _attend_one_query_on_cpu(q, key, val, layer_kv, key_mask_bs,
                                                     cache_index)
        else:
            out, layer_kv = _cache_and_attend(q, key, val, layer_kv, key_mask_bs, cache_index,
                                              one_query_kernel)
        out = _constrain(out, ("batch", "length", "act_heads", "head_dim"))
        y = linear(self, out.reshape(b, t, h * d), wo)
        if cfg.out_bias:
            y = y + _param(self, "o_bias", ("embed",), (e,), nn.initializers.zeros).astype(dt)
        return y, layer_kv


def _attend(q_bthd, k_bkds, v_bksd, key_mask_bs, query_slots_t):
    """Masked softmax attention ``softmax(q kᵀ / √d + mask) v``; scores and softmax in float32.

    Keys are ``[batch, kv_heads, head_dim, slots]`` and values ``[batch,
    kv_heads, slots, head_dim]`` (the cache layout), so both products are
    batched matmuls over ``(b, k)`` with no operand transposed; the ``g``
    query heads of a kv head and the ``t`` query positions share one matmul
    row block. A decode step (``t == 1``) has only ``g`` rows per ``(b, k)``:
    there XLA:CPU runs ``b·k`` tiny library matmuls slower than the same sums
    written as elementwise products, which it fuses. Measured for SmolLM2's
    shapes (30 layers, 3 kv heads × 3, 96 slots, best of 11, 2 CPU cores):
    at batch 16 the products take 7.5 ms a step against 9.9 ms as matmuls
    over transposed keys and 14 ms over untransposed ones; at batch 64 39 vs
    48 ms; at batch 1 0.6 vs 0.2 ms (a 25 ms step).
    """
    b, t, h, d = q_bthd.shape
    k, s = k_bkds.shape[1], k_bkds.shape[3]
    g = h // k
    q_bkqd = q_bthd.reshape(b, t, k, g, d).transpose(0, 2, 1, 3, 4).reshape(b, k, t * g, d)
    if t == 1:
        scores = jnp.sum(q_bkqd.astype(jnp.float32)[..., None]
                         * k_bkds.astype(jnp.float32)[:, :, None], axis=-2)
    else:
        scores = jnp.einsum("bkqd,bkds->bkqs", q_bkqd, k_bkds, preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(d)
    causal_ts = jnp.arange(s)[None, :] <= query_slots_t[:, None]
    allowed_tgs = jnp.repeat(causal_ts, g, axis=0)  # rows ordered (t, g)
    allowed = allowed_tgs[None, None] & key_mask_bs.astype(bool)[:, None, None, :]
    scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_bksd.dtype)
    if t == 1:
        out = jnp.sum(probs[..., None] * v_bksd[:, :, None], axis=-2)
    else:
        out = jnp.einsum("bkqs,bksd->bkqd", probs, v_bksd)
    return out.reshape(b, k, t, g, d).transpose(0, 2, 1, 3, 4).reshape(b, t, h, d)


def _cache_and_attend(q_bthd, key_btkd, val_btkd, layer_kv, key_mask_bs, cache_index,
                      one_query_kernel: bool):
    """This call's keys and values written into ``layer_kv`` (if any), then :func:`_attend`.

    ``one_query_kernel`` runs a single query without a cache on the
    decode-attention kernel instead of ``_attend``.
    """
    t = q_bthd.shape[1]
    dt = q_bthd.dtype
    key_bkds = key_btkd.transpose(0, 2, 3, 1)  # cache layout: keys transposed, slots minor
    val_bksd = jnp.swapaxes(val_btkd, 1, 2)
    if layer_kv is None:
        keys, values = key_bkds, val_bksd
        query_slots = jnp.arange(t)
    else:
        k_cache, v_cache = layer_kv
        keys = jax.lax.dynamic_update_slice(
            k_cache, key_bkds.astype(k_cache.dtype), (0, 0, 0, cache_index))
        values = jax.lax.dynamic_update_slice(
            v_cache, val_bksd.astype(v_cache.dtype), (0, 0, cache_index, 0))
        keys = _constrain(keys, ("batch", "act_kv_heads", "head_dim", "cache_length"))
        values = _constrain(values, ("batch", "act_kv_heads", "cache_length", "head_dim"))
        layer_kv = (keys, values)
        query_slots = cache_index + jnp.arange(t)
    if one_query_kernel:
        b, _, h, d = q_bthd.shape
        k, s = keys.shape[1], keys.shape[3]
        allowed_bs = (jnp.arange(s)[None, :] <= query_slots[0]) & key_mask_bs.astype(bool)
        out = decode_attention.decode_attention(q_bthd.reshape(b, k, h // k, d), keys.astype(dt),
                                                values.astype(dt), allowed_bs)
        return out.reshape(b, 1, h, d), layer_kv
    return _attend(q_bthd, keys.astype(dt), values.astype(dt), key_mask_bs, query_slots), layer_kv


def _attend_one_query_on_cpu(q_b1hd, key_b1kd, val_b1kd, layer_kv, key_mask_bs, cache_index):
    """:func:`_cache_and_attend` for a decode step (``t == 1``) as one decode-attention kernel call.

    The kernel writes this step's key and value into the float32 cache in
    place (:func:`rlhf_jax.kernels.decode_attention.decode_attention_updating_cache`):
    XLA's separate cache updates cost ~15 µs each per layer, the transposed key
    column touching a cache line per (row, head, dim).
    """
    b, _, h, d = q_b1hd.shape
    k_cache, v_cache = layer_kv
    k, s = k_cache.shape[1], k_cache.shape[3]
    allowed_bs = (jnp.arange(s)[None, :] <= cache_index) & key_mask_bs.astype(bool)
    out, keys, values = decode_attention.decode_attention_updating_cache(
        q_b1hd.reshape(b, k, h // k, d), key_b1kd.reshape(b, k, d), val_b1kd.reshape(b, k, d),
        cache_index, k_cache, v_cache, allowed_bs)
    return out.reshape(b, 1, h, d), (keys, values)


_ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


class MLP(nn.Module):
    """Gated ``down(act(gate(x)) · up(x))`` (SwiGLU) or plain ``down(act(up(x)))``."""

    config: DecoderConfig
    kernels: str = XLA

    @nn.compact
    def __call__(self, x_bte):
        cfg = self.config
        e, f, dt = cfg.hidden_size, cfg.intermediate_size, cfg.compute_dtype
        act = _ACTIVATIONS[cfg.activation]
        zeros = nn.initializers.zeros

        def bias(name):
            return _param(self, name, ("mlp",), (f,), zeros).astype(dt) if cfg.mlp_bias else 0.0

        w_up, b_up = _weight(self, "up_proj", ("embed", "mlp"), (e, f)), bias("up_bias")
        if cfg.mlp == "gated":
            w_gate, b_gate = _weight(self, "gate_proj", ("embed", "mlp"), (e, f)), bias("gate_bias")
            up, gate = linears(self, x_bte, (w_up, w_gate))  # one kernel call on CPU
            hidden = act(gate + b_gate) * (up + b_up)
        else:
            hidden = act(linear(self, x_bte, w_up) + b_up)
        hidden = _constrain(hidden, ("batch", "length", "act_mlp"))
        y = linear(self, hidden, _weight(self, "down_proj", ("mlp", "embed"), (f, e)))
        if cfg.mlp_bias:
            y = y + _param(self, "down_bias", ("embed",), (e,), zeros).astype(dt)
        return y


class Block(nn.Module):
    """Pre-norm residual block ``x + attn(norm(x))``, then ``x + mlp(norm(x))``.

    Written as a scan body: ``(x, broadcast inputs…, layer_kv) -> (x, layer_kv)``.
    """

    config: DecoderConfig
    kernels: str = XLA

    @nn.compact
    def __call__(self, x_bte, rope, key_mask_bs, cache_index, layer_kv):
        cfg = self.config
        attn_out, layer_kv = Attention(cfg, self.kernels, name="attn")(
            Norm(cfg, name="attn_norm")(x_bte), rope, key_mask_bs, cache_index, layer_kv)
        x_bte = x_bte + attn_out
        x_bte = x_bte + MLP(cfg, self.kernels, name="mlp")(Norm(cfg, name="mlp_norm")(x_bte))
        x_bte = _constrain(x_bte, ("batch", "length", "act_embed"))
        return x_bte, layer_kv
