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

