"""Orbax checkpoints: the best step is kept and found even when it is not the latest; restore."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.checkpoint import Checkpoints


@pytest.mark.parametrize("mode,values,best", [("max", (0.9, 0.5, 0.4), 1), ("min", (0.9, 0.3, 0.4), 2)])
def test_best_and_latest_are_kept(tmp_path, mode, values, best):
    ckpt = Checkpoints(str(tmp_path), best_metric="m", best_mode=mode)
    for step, value in enumerate(values, 1):
        ckpt.save(step, {"x": jnp.full((3,), float(step))}, {"m": value})
    assert ckpt.best_step() == best and ckpt.latest_step() == 3
    assert sorted(int(d) for d in os.listdir(tmp_path) if d.isdigit()) == sorted({best, 3})
    restored = ckpt.restore(best, {"x": jnp.zeros((3,))})
    np.testing.assert_array_equal(np.asarray(restored["x"]), float(best))
    ckpt.close()
    again = Checkpoints(str(tmp_path), best_metric="m", best_mode=mode)
    assert again.best_step() == best and again.latest_step() == 3
