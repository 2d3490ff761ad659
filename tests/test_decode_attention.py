"""The CPU decode-attention kernel against a float64 NumPy softmax attention and ``layers._attend``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.kernels import decode_attention as da
from rlhf_jax.models.layers import _attend

needs_kernel = pytest.mark.skipif(not da.available(), reason=f"attention kernel: {da.unavailable_reason()}")


def numpy_attention(q, keys, values, allowed):
    """Plain loops: softmax over allowed slots (all slots, uniformly, when none is allowed)."""
    b, k, g, d = q.shape
    out = np.zeros((b, k, g, d))
    for bi in range(b):
        for ki in range(k):
            for gi in range(g):
                scores = q[bi, ki, gi].astype(np.float64) @ keys[bi, ki] / np.sqrt(d)
                if allowed[bi].any():
                    scores = np.where(allowed[bi], scores, -np.inf)
                else:
                    scores = np.zeros_like(scores)
                p = np.exp(scores - scores.max())
                out[bi, ki, gi] = (p / p.sum()) @ values[bi, ki]
    return out


def _inputs(rng, b, k, g, d, s):
    q = rng.standard_normal((b, k, g, d)).astype(np.float32)
    keys = rng.standard_normal((b, k, d, s)).astype(np.float32)
    values = rng.standard_normal((b, k, s, d)).astype(np.float32)
    allowed = rng.random((b, s)) < 0.6
    allowed[0, :] = False  # a row with nothing to attend to
    if b > 1:
        allowed[1, :] = True
    return q, keys, values, allowed


@needs_kernel
@pytest.mark.parametrize("b,k,g,d,s", [(1, 1, 1, 8, 1), (3, 2, 3, 16, 17), (16, 3, 3, 64, 96),
                                       (2, 4, 1, 5, 40)])
def test_matches_numpy(b, k, g, d, s):
    q, keys, values, allowed = _inputs(np.random.default_rng(b * 100 + s), b, k, g, d, s)
    ours = jax.jit(da.decode_attention)(q, keys, values, jnp.asarray(allowed))
    np.testing.assert_allclose(np.asarray(ours), numpy_attention(q, keys, values, allowed),
                               rtol=0, atol=1e-5)


@needs_kernel
def test_a_peaked_softmax_whose_small_weights_underflow():
    """Score gaps beyond float32's exp range: those weights are 0, the rest still exact."""
    q, keys, values, allowed = _inputs(np.random.default_rng(5), 4, 2, 3, 16, 40)
    q = q * 40.0
    ours = jax.jit(da.decode_attention)(q, keys, values, jnp.asarray(allowed))
    np.testing.assert_allclose(np.asarray(ours), numpy_attention(q, keys, values, allowed),
                               rtol=0, atol=1e-5)


@needs_kernel
def test_matches_the_xla_path_of_the_model():
    """Same masking as ``layers._attend`` with a cache index: slots after it are never attended."""
    b, k, g, d, s = 4, 2, 2, 16, 24
    q, keys, values, key_mask = _inputs(np.random.default_rng(7), b, k, g, d, s)
    slot = jnp.asarray([10])
    xla = _attend(jnp.asarray(q).reshape(b, 1, k * g, d), keys, values, jnp.asarray(key_mask), slot)
    allowed = (np.arange(s)[None, :] <= 10) & key_mask
    ours = da.decode_attention(q, keys, values, jnp.asarray(allowed))
    np.testing.assert_allclose(np.asarray(ours).reshape(b, 1, k * g, d), np.asarray(xla), atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("slot", [0, 9, 23, 40])  # 40: past the end, clamped like XLA's update
def test_updating_the_cache_equals_an_update_then_attention(slot):
    """In a loop-carried cache (updated in place) as in a decode loop: the same caches as
    ``dynamic_update_slice`` and the same output as attending to the updated caches."""
    b, k, g, d, s = 3, 2, 3, 16, 24
    rng = np.random.default_rng(slot)
    q, keys, values, allowed = _inputs(rng, b, k, g, d, s)
    new_k = rng.standard_normal((b, k, d)).astype(np.float32)
    new_v = rng.standard_normal((b, k, d)).astype(np.float32)

    @jax.jit
    def twice(keys, values):  # two steps through a fori_loop carrying the cache
        def step(i, carry):
            _, keys, values = carry
            return da.decode_attention_updating_cache(q, new_k + i, new_v - i, slot, keys, values,
                                                      allowed)
        return jax.lax.fori_loop(0, 2, step, (jnp.zeros(q.shape), keys, values))

    out, got_k, got_v = twice(jnp.asarray(keys), jnp.asarray(values))
    at = min(slot, s - 1)
    want_k, want_v = keys.copy(), values.copy()
    want_k[:, :, :, at] = new_k + 1
    want_v[:, :, at, :] = new_v - 1
    np.testing.assert_array_equal(np.asarray(got_k), want_k)
    np.testing.assert_array_equal(np.asarray(got_v), want_v)
    np.testing.assert_allclose(np.asarray(out), numpy_attention(q, want_k, want_v, allowed),
                               rtol=0, atol=1e-5)


def test_bad_shapes_and_dtypes_are_named():
    q = jnp.zeros((2, 1, 1, 4), jnp.float32)
    keys = jnp.zeros((2, 1, 4, 6), jnp.float32)
    values = jnp.zeros((2, 1, 6, 4), jnp.float32)
    with pytest.raises(ValueError, match="allowed"):
        da.decode_attention(q, keys, values, jnp.ones((2, 5), bool))
    with pytest.raises(ValueError, match=r"\[b, k, s, d\]"):
        da.decode_attention(q, keys, values[:, :, :5], jnp.ones((2, 6), bool))
    with pytest.raises(TypeError, match="float32"):
        da.decode_attention(q.astype(jnp.bfloat16), keys, values, jnp.ones((2, 6), bool))
    with pytest.raises(ValueError, match=r"new values \(2, 1, 3\)"):
        da.decode_attention_updating_cache(q, jnp.zeros((2, 1, 4)), jnp.zeros((2, 1, 3)), 0, keys,
                                           values, jnp.ones((2, 6), bool))
