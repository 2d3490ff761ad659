"""Bradley–Terry loss against a plain NumPy formula."""

import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.reward.losses import bradley_terry_loss


def numpy_bt(r_c, r_r, w, margin, center):
    per_row = np.log1p(np.exp(-(r_c - r_r - margin)))  # −log σ(x) = log(1 + e^{−x})
    loss = np.sum(per_row * w) / np.sum(w)
    return loss + center * np.sum((r_c + r_r) ** 2 * w) / np.sum(w)


@pytest.mark.parametrize("margin,center", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.01), (1.0, 0.1)])
def test_matches_numpy(margin, center):
    rng = np.random.default_rng(0)
    r_c, r_r = rng.normal(size=16), rng.normal(size=16)
    w = (rng.random(16) > 0.2).astype(np.float64)
    loss, diff = bradley_terry_loss(jnp.asarray(r_c), jnp.asarray(r_r), jnp.asarray(w),
                                    margin=margin, center_coef=center)
    assert abs(float(loss) - numpy_bt(r_c, r_r, w, margin, center)) < 1e-5
    np.testing.assert_allclose(np.asarray(diff), r_c - r_r, atol=1e-6)


def test_large_margins_are_finite():
    loss, _ = bradley_terry_loss(jnp.asarray([-100.0, 100.0]), jnp.asarray([100.0, -100.0]))
    assert np.isfinite(float(loss)) and abs(float(loss) - 100.0) < 1e-3
