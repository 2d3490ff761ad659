"""Model internals against plain references: KV-cache decoding, scalar heads, remat, dtypes.

References: the uncached full forward (itself checked against transformers in
``test_hf_parity.py``) and NumPy computations of the scalar head.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.models import CausalLM, ScalarModel, config_from_hf, init_params
from rlhf_jax.models.presets import preset_config
from tests.helpers import left_padded_batch


@pytest.fixture(scope="module")
def llama():
    model = CausalLM(config_from_hf(preset_config("tiny-llama")))
    params = init_params(model, jax.random.key(0))
    params = jax.tree.map(lambda p: p * 10.0 if p.ndim > 1 else p, params)  # non-trivial logits
    ids, mask = left_padded_batch(np.random.default_rng(0), [10, 6, 3], 256)
    return model, params, jnp.asarray(ids), jnp.asarray(mask)


def test_incremental_decoding_with_cache_equals_full_forward(llama):
    model, params, ids, mask = llama
    apply = jax.jit(model.apply)
    full = apply({"params": params}, ids, attention_mask=mask).logits
    cache = model.init_cache(ids.shape[0], ids.shape[1] + 4)
    split = 5
    out = apply({"params": params}, ids[:, :split], attention_mask=mask[:, :split], cache=cache)
    pieces = [out.logits]
    for t in range(split, ids.shape[1]):
        out = apply({"params": params}, ids[:, t:t + 1], attention_mask=mask[:, t:t + 1],
                    cache=out.cache)
        pieces.append(out.logits)
    assert int(out.cache.index) == ids.shape[1]
    stepped = jnp.concatenate(pieces, axis=1)
    real = np.asarray(mask).astype(bool)
    assert np.std(np.asarray(full)[real]) > 1.0
    np.testing.assert_allclose(np.asarray(stepped)[real], np.asarray(full)[real], atol=1e-4)


def test_scalar_head_reads_last_real_token(llama):
    model, _, ids, mask = llama
    # right-padded rows too: the readout must find the last real token either way
    right_ids, right_mask = jnp.roll(ids, 2, axis=1), jnp.roll(mask, 2, axis=1)
    rm = ScalarModel(model.config, readout="last")
    params = init_params(rm, jax.random.key(1))
    vm = ScalarModel(model.config, readout="all")
    rm_apply, vm_apply = jax.jit(rm.apply), jax.jit(vm.apply)
    for batch_ids, batch_mask in ((ids, mask), (right_ids, right_mask)):
        out = rm_apply({"params": params}, batch_ids, attention_mask=batch_mask)
        hidden = np.asarray(out.hidden_states, np.float64)
        w = np.asarray(params["score"]["kernel"], np.float64)
        b = float(params["score"]["bias"])
        last = [int(np.nonzero(row)[0].max()) for row in np.asarray(batch_mask)]
        expected = np.array([hidden[i, j] @ w + b for i, j in enumerate(last)])
        np.testing.assert_allclose(np.asarray(out.values), expected, rtol=1e-5, atol=1e-5)
        per_token = vm_apply({"params": params}, batch_ids, attention_mask=batch_mask).values
        assert per_token.shape == batch_ids.shape
        np.testing.assert_allclose(np.asarray(per_token), hidden @ w + b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch"])
def test_remat_changes_nothing_numerically(llama, policy):
    model, params, ids, mask = llama
    remat = CausalLM(model.config.replace(remat=policy))

    def loss(m, p):
        return jnp.mean(jax.nn.log_softmax(m.apply({"params": p}, ids, attention_mask=mask).logits))

    g0 = jax.jit(jax.grad(lambda p: loss(model, p)))(params)
    g1 = jax.jit(jax.grad(lambda p: loss(remat, p)))(params)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_and_params(llama):
    model, params, ids, mask = llama
    bf16 = CausalLM(model.config.replace(dtype="bfloat16", param_dtype="bfloat16"))
    bf16_params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    assert {p.dtype for p in jax.tree.leaves(init_params(bf16, jax.random.key(0)))} == {jnp.dtype("bfloat16")}
    out = jax.jit(bf16.apply)({"params": bf16_params}, ids, attention_mask=mask).logits
    ref = jax.jit(model.apply)({"params": params}, ids, attention_mask=mask).logits
    assert out.dtype == jnp.bfloat16
    real = np.asarray(mask).astype(bool)
    err = np.abs(np.asarray(out, np.float32) - np.asarray(ref))[real]
    # bfloat16 keeps 8 mantissa bits: a few percent of the logit scale.
    assert err.mean() < 0.05 * np.abs(np.asarray(ref)[real]).mean()


def test_config_rejects_bad_values():
    cfg = config_from_hf(preset_config("tiny-llama"))
    with pytest.raises(ValueError, match="remat"):
        cfg.replace(remat="sometimes")
    with pytest.raises(ValueError, match="num_kv_heads"):
        cfg.replace(num_kv_heads=3)
