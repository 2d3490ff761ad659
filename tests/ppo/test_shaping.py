"""PPO-side interventions against the paper code's formulas re-derived in plain Python (§4.1, §5).

The references below follow ``rlhfutils/rl_utils.py::train_loop`` (de0344a): per
process, ``running_means.append(mean(rws)); running_stds.append(stdev(rws))``, then
``meanval = mean(running_means[-10:])``, ``sigma = mean(running_stds[-10:])`` with
``statistics`` (``stdev``: n − 1), the current batch included.
"""

import statistics

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from rlhf_jax.defaults import ppo_config
from rlhf_jax.ppo import shaping


def cfg(**kw):
    base = {"scaling_clip": 0.3, "target_length": 156.0, "length_penalty_variant": "code",
            "eos_penalty": 0.5, "overlong_buffer": 10, "overlong_penalty": 1.0}
    return ml_collections.ConfigDict({**base, **kw})


def window_after(batches, groups=1, size=10):
    window = shaping.RewardWindow.empty(size, groups)
    for b in batches:
        window = window.push(jnp.asarray(b))
    return window


def paper_running_stats(batches):
    """One process's ``(meanval, sigma)`` after these batches (``statistics``, n − 1)."""
    running_means = [statistics.mean(map(float, b)) for b in batches]
    running_stds = [statistics.stdev(map(float, b)) for b in batches]
    return statistics.mean(running_means[-10:]), statistics.mean(running_stds[-10:])


def inputs_for(window, lengths, ended=None, max_length=155):
    b = len(lengths)
    mean, std = window.statistics(b)
    ended = np.ones(b, bool) if ended is None else ended
    return shaping.ShapingInputs(lengths=jnp.asarray(lengths), ended=jnp.asarray(ended),
                                 mean=mean, std=std, max_length=max_length)


def test_window_is_the_papers_running_stats_with_sample_std():
    # Small batches, where n − 1 and n differ by ~15 %.
    rng = np.random.default_rng(0)
    batches = [rng.normal(i, 1 + i / 5, size=4).astype(np.float32) for i in range(13)]
    for k in (1, 5, 13):
        mu, sigma = window_after(batches[:k]).statistics(4)
        ref_mu, ref_sigma = paper_running_stats(batches[:k])
        np.testing.assert_allclose(np.asarray(mu), ref_mu, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(sigma), ref_sigma, rtol=1e-5)
        population = np.mean([np.std(b) for b in batches[:k][-10:]])
        assert abs(float(sigma[0]) - population) > 0.05 * population  # the conventions differ here


def test_window_groups_are_the_papers_processes():
    # Two processes of 4 rows each keep their own windows: rows 0-3 and rows 4-7.
    rng = np.random.default_rng(1)
    batches = [np.concatenate([rng.normal(0, 1, 4), rng.normal(5, 3, 4)]).astype(np.float32)
               for _ in range(12)]
    mu, sigma = window_after(batches, groups=2).statistics(8)
    for process, rows in enumerate((slice(0, 4), slice(4, 8))):
        ref_mu, ref_sigma = paper_running_stats([b[rows] for b in batches])
        np.testing.assert_allclose(np.asarray(mu[rows]), ref_mu, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(sigma[rows]), ref_sigma, rtol=1e-5)
    pooled_mu, _ = window_after(batches, groups=1).statistics(8)
    assert abs(float(pooled_mu[0]) - float(mu[0])) > 1.0


def test_reward_scaling_is_the_papers_clip():
    rng = np.random.default_rng(2)
    batches = [rng.normal(2, 3, 6).astype(np.float32) for _ in range(4)]
    meanval, sigma = paper_running_stats(batches)
    rewards = batches[-1]
    want = [float(np.clip((rw - meanval) / sigma, -0.3, 0.3)) for rw in rewards]
    got = shaping.reward_scaling(jnp.asarray(rewards), inputs_for(window_after(batches),
                                                                    np.ones(6, int)), cfg())
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_length_penalty_default_is_the_code_formula():
    # The code: penalties = [2*sigma*(1 - 0.01*len(r)) for r in response_tensors].
    rng = np.random.default_rng(3)
    scores = rng.normal(size=8).astype(np.float32)
    lengths = rng.integers(1, 156, 8)
    _, sigma = paper_running_stats([scores])
    want = [s + 2 * sigma * (1 - 0.01 * n) for s, n in zip(scores, lengths)]
    window = window_after([scores])
    default = ppo_config().shaping.length_penalty_variant
    got = shaping.length_penalty(jnp.asarray(scores), inputs_for(window, lengths),
                                 cfg(length_penalty_variant=default))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    text = shaping.length_penalty(jnp.asarray(scores), inputs_for(window, lengths),
                                  cfg(length_penalty_variant="paper"))
    np.testing.assert_allclose(np.asarray(text), scores + (1 - lengths / 156) * sigma, atol=1e-5)
    assert np.abs(np.asarray(text) - np.asarray(got)).max() > 0.1  # the two differ on these lengths
    with pytest.raises(ValueError, match="variant 'x'"):
        shaping.length_penalty(jnp.asarray(scores), inputs_for(window, lengths),
                               cfg(length_penalty_variant="x"))


def test_length_only_reward_is_lensco():
    lensco = lambda lval: -1 * abs(lval - 1) + 1  # noqa: E731  the paper code's function
    lengths = np.array([0, 78, 156, 179, 312])
    got = np.asarray(shaping.length_only_reward(jnp.zeros(5), inputs_for(
        window_after([np.arange(5.0)]), lengths), cfg()))
    np.testing.assert_allclose(got, [lensco(n / 156) for n in lengths], atol=1e-6)
    assert got.argmax() == 2


def test_eos_and_overlong_penalties():
    scores = jnp.ones(4)
    window = window_after([np.arange(4.0)])
    ended = np.asarray([True, False, True, False])
    np.testing.assert_allclose(np.asarray(shaping.eos_penalty(
        scores, inputs_for(window, np.ones(4, int), ended), cfg())), [1.0, 0.5, 1.0, 0.5])
    lengths = np.asarray([10, 40, 45, 50])
    expected = [1.0 - min(max((n - 40) / 10, 0), 1) for n in lengths]
    np.testing.assert_allclose(np.asarray(shaping.overlong_penalty(
        scores, inputs_for(window, lengths, max_length=50), cfg())), expected, atol=1e-6)


def test_shapers_apply_in_order_and_unknown_names_are_listed():
    scores = jnp.asarray([1.0, 2.0, 3.0, 4.0])
    inputs = inputs_for(window_after([np.asarray(scores)]), np.asarray([100, 100, 200, 0]))
    both = shaping.shape_scores(("length_penalty", "reward_scaling"), scores, inputs, cfg())
    step = shaping.length_penalty(scores, inputs, cfg())
    np.testing.assert_allclose(np.asarray(both),
                               np.asarray(shaping.reward_scaling(step, inputs, cfg())))
    with pytest.raises(ValueError, match=r"unknown shaper\(s\) \['length_bonus'\]; registered"):
        shaping.check_shapers(("reward_scaling", "length_bonus"))


def test_omit_long_replacement():
    ended = jnp.asarray([True, False, False, True, False])
    for seed in range(20):
        idx = np.asarray(shaping.omit_long_replacement(ended, jax.random.key(seed)))
        assert idx[0] == 0 and idx[3] == 3
        assert set(idx[[1, 2, 4]]) <= {0, 3}
    none_ended = jnp.zeros(3, bool)
    np.testing.assert_array_equal(
        np.asarray(shaping.omit_long_replacement(none_ended, jax.random.key(0))), [0, 1, 2])
