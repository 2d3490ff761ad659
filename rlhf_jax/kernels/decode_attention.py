"""One decode step's attention on the KV cache as a CPU kernel (``decode_attention.cc``).

``out[b, k, g] = softmax_s(q[b, k, g] · keys[b, k, :, s] / √d, allowed[b, s]) · values[b, k, s]``:
the single-query case of :func:`rlhf_jax.models.layers._attend`, with the same
cache layouts and the same masking (a disallowed slot scores the lowest
float32). XLA:CPU runs these ``b·k`` tiny products one at a time on one
thread; the kernel streams each pair's keys and values once, only up to the
last allowed slot, on all of XLA's pool threads.
:func:`decode_attention_updating_cache` first stores the step's key and value
in the cache, in place. Used by models with ``kernels="cpu_panels"`` (CPU
decoding, see :func:`rlhf_jax.generate.decoding_view`). Float32; single device.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from rlhf_jax.kernels import build

TARGET = "rlhf_jax_decode_attention"
UPDATING_TARGET = "rlhf_jax_decode_attention_updating_cache"


def decode_attention(q_bkgd, keys_bkds, values_bksd, allowed_bs):
    """Attention of one query per row: ``[b, k, g, d]`` out; ``allowed_bs`` is boolean ``[b, s]``.

    Call :func:`available` first: this emits the custom call unconditionally.
    """
    _check(q_bkgd, keys_bkds, values_bksd, allowed_bs)
    b, k, g, d = q_bkgd.shape
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((b, k, g, d), jnp.float32))
    return call(q_bkgd, keys_bkds, values_bksd, allowed_bs.astype(jnp.int32))


def _check(q_bkgd, keys_bkds, values_bksd, allowed_bs):
    """Raises naming the shapes or dtypes when they do not fit together."""
    b, k, g, d = q_bkgd.shape
    s = keys_bkds.shape[-1]
    if keys_bkds.shape != (b, k, d, s) or values_bksd.shape != (b, k, s, d) or \
            allowed_bs.shape != (b, s):
        raise ValueError(f"decode_attention: q {q_bkgd.shape}, keys {keys_bkds.shape}, values "
                         f"{values_bksd.shape}, allowed {allowed_bs.shape}; expected [b, k, g, d], "
                         "[b, k, d, s], [b, k, s, d], [b, s]")
    dtypes = {q_bkgd.dtype, keys_bkds.dtype, values_bksd.dtype}
    if dtypes != {jnp.dtype(jnp.float32)}:
        raise TypeError(f"decode_attention is float32 only; got {sorted(map(str, dtypes))}")


def decode_attention_updating_cache(q_bkgd, new_keys_bkd, new_values_bkd, slot, keys_bkds,
                                    values_bksd, allowed_bs):
    """``(out, keys, values)``: this step's key and value stored at cache ``slot``, then attention.

    The same as writing ``new_keys_bkd``/``new_values_bkd`` into the caches with
    ``lax.dynamic_update_slice`` (``slot`` clamped the same way) and calling
    :func:`decode_attention`, in one kernel: the returned caches alias the
    input ones, so a decode loop updates them in place, and the slot's key
    column is written by the pass that then reads it. ``slot`` is a scalar
    int32. Call :func:`available` first.
    """
    b, k, g, d = q_bkgd.shape
    for name, new in (("new keys", new_keys_bkd), ("new values", new_values_bkd)):
        if new.shape != (b, k, d) or new.dtype != jnp.float32:
            raise ValueError(f"decode_attention: {name} {new.shape} {new.dtype}; expected float32 "
                             f"{(b, k, d)}")
    _check(q_bkgd, keys_bkds, values_bksd, allowed_bs)
    call = jax.ffi.ffi_call(
        UPDATING_TARGET, (jax.ShapeDtypeStruct((b, k, g, d), jnp.float32),
                          jax.ShapeDtypeStruct(keys_bkds.shape, jnp.float32),
                          jax.ShapeDtypeStruct(values_bksd.shape, jnp.float32)),
        input_output_aliases={4: 1, 5: 2})
    return call(q_bkgd, new_keys_bkd, new_values_bkd, jnp.asarray(slot, jnp.int32).reshape(()),
                keys_bkds, values_bksd, allowed_bs.astype(jnp.int32))


def available() -> bool:
    """Whether :func:`decode_attention` can run here (compiling and registering it on first call)."""
    return unavailable_reason() is None


def unavailable_reason() -> Optional[str]:
    """``None`` when the kernel is registered, else why it is not (see :mod:`.build`)."""
    return build.register("decode_attention", ((TARGET, "RlhfDecodeAttention"),
                                               (UPDATING_TARGET, "RlhfDecodeAttentionUpdatingCache")))
