"""Gradient accumulation and the LR schedule against direct computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import training


def token_mean_loss(params, batch):
    """A masked token-mean loss whose micro-batches have different token counts."""
    pred = batch["x"] @ params["w"]
    err = (pred - batch["y"]) ** 2
    count = jnp.sum(batch["mask"])
    loss = jnp.sum(err * batch["mask"]) / count
    return loss, ({"weight": count}, {"err": err[:, 0]})


@pytest.mark.parametrize("accum", [2, 4])
def test_accumulation_equals_the_full_batch_token_mean(accum):
    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(8, 3)).astype(np.float32),
             "y": rng.normal(size=(8, 5)).astype(np.float32),
             "mask": (rng.random((8, 5)) > 0.4).astype(np.float32)}
    batch["mask"][:, 0] = 1.0
    params = {"w": rng.normal(size=(3, 5)).astype(np.float32)}
    (full_loss, (_, full_rows)), full_grads = jax.value_and_grad(token_mean_loss, has_aux=True)(
        params, batch)
    loss, grads, scalars, rows = training.accumulated_gradients(token_mean_loss, params, batch, accum)
    assert float(loss) == pytest.approx(float(full_loss), rel=1e-6)
    np.testing.assert_allclose(np.asarray(grads["w"]), np.asarray(full_grads["w"]), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(rows["err"]), np.asarray(full_rows["err"]), rtol=1e-6)
    assert float(scalars["weight"]) == batch["mask"].sum()


def test_microbatches_are_strided_and_merge_back():
    x = jnp.arange(12).reshape(6, 2)
    micro = training.split_microbatches({"x": x}, 3)["x"]
    assert micro[0, :, 0].tolist() == [0, 6]  # rows 0 and 3
    np.testing.assert_array_equal(training.merge_microbatches(micro), x)


def test_schedule_warms_up_then_decays_linearly():
    schedule = training.learning_rate_schedule(1e-3, warmup_steps=10, total_steps=110)
    expected = lambda s: 1e-3 * s / 10 if s < 10 else 1e-3 * (110 - s) / 100  # noqa: E731
    for step in (0, 5, 10, 60, 109, 110):
        assert float(schedule(step)) == pytest.approx(expected(step), abs=1e-9)



def _torch_adam_trajectory(w0, grads, lr, max_grad_norm, weight_decay=0.0):
    """torch.optim.Adam (TRL 0.5's PPO optimizer) / AdamW, optionally after clip_grad_norm_."""
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = (torch.optim.AdamW([w], lr=lr, weight_decay=weight_decay) if weight_decay
           else torch.optim.Adam([w], lr=lr))
    out = []
    for g in grads:
        w.grad = torch.tensor(g, dtype=torch.float64)
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_([w], max_grad_norm)
        opt.step()
        out.append(w.detach().numpy().copy())
    return out


@pytest.mark.parametrize("max_grad_norm", [0.0, -1.0, 0.5])
def test_constant_schedule_matches_torch_adam_with_and_without_clipping(max_grad_norm):
    # max_grad_norm <= 0 means "no clipping" in every stage (it once zeroed every PPO update).
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4,))
    grads = [rng.normal(size=(4,)) * 3.0 for _ in range(5)]
    tx = training.make_optimizer(lr=1e-2, schedule="constant", warmup_steps=0, total_steps=5,
                                 max_grad_norm=max_grad_norm)
    w = jnp.asarray(w0, jnp.float32)
    state = tx.init(w)
    want = _torch_adam_trajectory(w0, grads, 1e-2, max_grad_norm)
    for g, expected in zip(grads, want):
        updates, state = tx.update(jnp.asarray(g, jnp.float32), state, w)
        w = w + updates
        np.testing.assert_allclose(np.asarray(w), expected, rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(w) - w0).max() > 1e-2  # it moved


def test_optimizer_for_reads_a_config_section():
    import ml_collections
    section = ml_collections.ConfigDict({"lr": 1e-2, "lr_schedule": "constant", "warmup_steps": 0,
                                         "weight_decay": 0.0, "max_grad_norm": 0.0})
    tx = training.optimizer_for(section, total_steps=3)
    w = jnp.ones(2)
    updates, _ = tx.update(jnp.asarray([1.0, -1.0]), tx.init(w), w)
    np.testing.assert_allclose(np.asarray(updates), [-1e-2, 1e-2], rtol=1e-4)
    section.lr_schedule = "cosine"
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'cosine'"):
        training.optimizer_for(section, total_steps=3)


def test_bfloat16_params_accumulate_in_float32_and_step():
    """bfloat16 params with accumulation: the scan carry once became float32 and failed to trace."""
    from rlhf_jax.models.build import causal_lm
    import ml_collections as mlc
    spec = mlc.ConfigDict({"init": "preset:tiny-llama", "overrides": {}, "dtype": "bfloat16",
                           "param_dtype": "bfloat16", "remat": "none"})
    model, params = causal_lm(spec, jax.random.key(0))
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    ids = jax.random.randint(jax.random.key(1), (4, 12), 0, model.config.vocab_size)
    batch = {"ids": ids, "mask": jnp.ones_like(ids)}

    def loss_fn(p, b):
        logits = model.apply({"params": p}, b["ids"], b["mask"]).logits.astype(jnp.float32)
        lp = jax.nn.log_softmax(logits[:, :-1])
        nll = -jnp.take_along_axis(lp, b["ids"][:, 1:, None], -1)[..., 0]
        return nll.mean(), ({"weight": jnp.float32(nll.size)}, {})

    tx = training.optimizer_for(mlc.ConfigDict({"lr": 1e-3, "lr_schedule": "constant",
                                                "warmup_steps": 0, "weight_decay": 0.0,
                                                "max_grad_norm": 1.0}), total_steps=1)
    full_loss, full_grads, _, _ = training.accumulated_gradients(loss_fn, params, batch, 1)
    loss, grads, _, _ = training.accumulated_gradients(loss_fn, params, batch, 2)
    assert jax.tree.map(lambda g: g.dtype, grads) == jax.tree.map(lambda p: p.dtype, params)
    assert float(loss) == pytest.approx(float(full_loss), rel=1e-2)  # bf16 forward
    for g, f in zip(jax.tree.leaves(grads), jax.tree.leaves(full_grads)):
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(f, np.float32),
                                   rtol=0.05, atol=0.05 * float(jnp.abs(f.astype(jnp.float32)).max()) + 1e-6)
    step = training.make_train_step(loss_fn, tx, accum_steps=2, donate=False)
    state = training.TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params))
    new_state, metrics = step(state, batch)
    assert jax.tree.map(lambda p: p.dtype, new_state.params) == jax.tree.map(lambda p: p.dtype, params)
    assert np.isfinite(float(metrics["loss"]))
    changed = [not np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
               for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(params))]
    assert any(changed)
