"""NRG and length–reward correlations against independent loops and SciPy."""

import numpy as np
import pytest
from scipy import stats

from rlhf_jax.analysis import length_reward_correlation, weighted_reward_gain


def loop_nrg(la, ra, lb, rb, width=20, top=260, strict=True):
    num, den = 0.0, 0
    for lo in range(0, top, width):
        hi = lo + width
        ok = (lambda n: lo < n < hi) if strict else (lambda n: lo <= n < hi)
        a = [r for n, r in zip(la, ra) if ok(n)]
        b = [r for n, r in zip(lb, rb) if ok(n)]
        if a and b:
            num += (sum(b) / len(b) - sum(a) / len(a)) * (len(a) + len(b))
            den += len(a) + len(b)
    nrg = num / den
    delta = sum(rb) / len(rb) - sum(ra) / len(ra)
    return nrg, delta, nrg / delta


@pytest.mark.parametrize("strict", [True, False])
def test_nrg_matches_a_plain_loop(strict):
    rng = np.random.default_rng(0)
    la, lb = rng.integers(0, 300, 400), rng.integers(20, 300, 400)
    ra, rb = la / 100 + rng.normal(size=400), lb / 100 + 0.3 + rng.normal(size=400)
    got = weighted_reward_gain(la, ra, lb, rb, strict=strict)
    nrg, delta, ratio = loop_nrg(la.tolist(), ra.tolist(), lb.tolist(), rb.tolist(), strict=strict)
    assert got.nrg == pytest.approx(nrg, rel=1e-9)
    assert got.delta_r == pytest.approx(delta, rel=1e-9)
    assert got.ratio == pytest.approx(ratio, rel=1e-9)


def test_gain_from_moving_to_longer_bins_only_has_zero_nrg():
    # Reward depends on the bin only; PPO just samples longer bins.
    reward_of = lambda n: (n // 20) * 1.0  # noqa: E731
    la = np.array([5, 15, 25, 35, 45, 55] * 10)
    lb = np.array([25, 35, 45, 55, 65, 75] * 10)
    got = weighted_reward_gain(la, [reward_of(n) for n in la], lb, [reward_of(n) for n in lb])
    assert got.delta_r == pytest.approx(1.0)
    assert abs(got.nrg) < 1e-12 and abs(got.ratio) < 1e-12


def test_uniform_gain_in_every_bin_has_ratio_one():
    rng = np.random.default_rng(1)
    la = rng.integers(1, 259, 500)
    la = la[la % 20 != 0]
    ra = rng.normal(size=len(la))
    got = weighted_reward_gain(la, ra, la, ra + 0.7)
    assert got.nrg == pytest.approx(0.7) and got.ratio == pytest.approx(1.0)


def test_no_shared_bin_is_an_error():
    with pytest.raises(ValueError, match="no length bin holds samples of both"):
        weighted_reward_gain([5, 6], [1.0, 2.0], [45, 46], [1.0, 2.0])


def test_length_reward_correlation():
    rng = np.random.default_rng(2)
    prompts = np.repeat(np.arange(30), 8)
    lengths = rng.integers(5, 200, len(prompts)).astype(float)
    rewards = 0.01 * lengths + rng.normal(size=len(prompts))
    rewards[prompts == 3] = 1.0  # a constant prompt: NaN, skipped
    got = length_reward_correlation(prompts, lengths, rewards)
    per = [stats.pearsonr(lengths[prompts == p], rewards[prompts == p])[0] for p in range(30) if p != 3]
    assert got["per_prompt_pearson"] == pytest.approx(np.mean(per), rel=1e-9)
    assert got["prompts_used"] == 29
    assert got["pooled_spearman"] == pytest.approx(stats.spearmanr(lengths, rewards)[0], rel=1e-9)
