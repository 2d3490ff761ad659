"""PPO-side interventions against plain NumPy (Singhal et al. §4.1, §5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.ppo import shaping


def window_after(batches, size=10):
    window = shaping.RewardWindow.empty(size)
    for b in batches:
        window = window.push(jnp.asarray(b))
    return window


def numpy_stats(batches, size=10):
    last = batches[-size:]
    return np.mean([np.mean(b) for b in last]), np.mean([np.std(b) for b in last])


def test_window_keeps_the_last_ten_batches_including_the_current():
    rng = np.random.default_rng(0)
    batches = [rng.normal(i, 1 + i / 5, size=16).astype(np.float32) for i in range(13)]
    for k in (1, 5, 13):
        mu, sigma = window_after(batches[:k]).statistics()
        ref_mu, ref_sigma = numpy_stats(batches[:k])
        assert float(mu) == pytest.approx(ref_mu, abs=1e-5)
        assert float(sigma) == pytest.approx(ref_sigma, abs=1e-5)


def test_reward_scaling():
    rng = np.random.default_rng(1)
    batches = [rng.normal(2, 3, 32).astype(np.float32) for _ in range(4)]
    mu, sigma = numpy_stats(batches)
    got = shaping.reward_scaling(jnp.asarray(batches[-1]), window_after(batches))
    np.testing.assert_allclose(np.asarray(got), np.clip((batches[-1] - mu) / sigma, -0.3, 0.3),
                               atol=1e-5)


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_length_penalty(variant):
    rng = np.random.default_rng(2)
    scores = rng.normal(size=8).astype(np.float32)
    lengths = rng.integers(1, 300, 8)
    window = window_after([scores])
    sigma = np.std(scores)
    expected = (scores + (1 - lengths / 156) * sigma if variant == "paper"
                else scores + 2 * sigma * (1 - 0.01 * lengths))
    got = shaping.length_penalty(jnp.asarray(scores), jnp.asarray(lengths), window, 156, variant)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)
    with pytest.raises(ValueError, match="variant 'x'"):
        shaping.length_penalty(jnp.asarray(scores), jnp.asarray(lengths), window, 156, "x")


def test_length_only_reward_peaks_at_the_target():
    lengths = np.array([0, 78, 156, 234, 312])
    got = np.asarray(shaping.length_only_reward(jnp.asarray(lengths), 156))
    np.testing.assert_allclose(got, [1 - abs(n / 156 - 1) for n in lengths], atol=1e-6)
    assert got.argmax() == 2


def test_eos_and_overlong_penalties():
    scores = jnp.asarray([1.0, 1.0, 1.0, 1.0])
    ended = jnp.asarray([True, False, True, False])
    np.testing.assert_allclose(np.asarray(shaping.eos_penalty(scores, ended, 0.5)),
                               [1.0, 0.5, 1.0, 0.5])
    lengths = jnp.asarray([10, 40, 45, 50])
    expected = [1.0 - min(max((n - 40) / 10, 0), 1) for n in (10, 40, 45, 50)]
    np.testing.assert_allclose(np.asarray(shaping.overlong_penalty(scores, lengths, 50, 10)),
                               expected, atol=1e-6)


def test_omit_long_mask_and_replacement():
    ended = jnp.asarray([True, False, False, True, False])
    np.testing.assert_array_equal(np.asarray(shaping.omit_long_mask(ended)), [1, 0, 0, 1, 0])
    for seed in range(20):
        idx = np.asarray(shaping.omit_long_replacement(ended, jax.random.key(seed)))
        assert idx[0] == 0 and idx[3] == 3
        assert set(idx[[1, 2, 4]]) <= {0, 3}
    none_ended = jnp.zeros(3, bool)
    np.testing.assert_array_equal(
        np.asarray(shaping.omit_long_replacement(none_ended, jax.random.key(0))), [0, 1, 2])
