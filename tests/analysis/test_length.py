"""NRG and length–reward correlations against independent loops and SciPy."""

import numpy as np
import pytest
from scipy import stats

from rlhf_jax.analysis import length_reward_correlation, weighted_reward_gain


def paper_fancyscatter_nrg(la, ra, lb, rb, binsize=20, top=260):
    """The paper's ``plot_utils.binscatter`` + ``fancyscatter`` (de0344a), re-derived over lists.

    Bins ``(i, i + binsize)`` with both bounds strict; ``tval`` counts every binned
    sample of both policies; the sum runs over bins holding both.
    """
    def binscatter(lengths, rewards):
        means, counts = [], []
        for i in range(0, top, binsize):
            inside = [r for n, r in zip(lengths, rewards) if i < n < i + binsize]
            means.append(np.mean(inside) if inside else None)
            counts.append(len(inside) if inside else None)
        return means, counts
    sft, scv = binscatter(la, ra)
    ppo, pcv = binscatter(lb, rb)
    tval = sum(c for c in scv if c is not None) + sum(c for c in pcv if c is not None)
    diffs = [(ppo[i] - sft[i]) * ((scv[i] + pcv[i]) / tval)
             for i in range(len(sft)) if sft[i] is not None and ppo[i] is not None]
    sp = np.mean(rb) - np.mean(ra)
    return sum(diffs), sp, sum(diffs) / sp


def test_nrg_default_is_the_paper_normaliser_on_mostly_disjoint_bins():
    # PPO moved most samples into bins SFT never reaches: only two bins are shared.
    rng = np.random.default_rng(3)
    la = rng.integers(1, 60, 300)
    lb = np.concatenate([rng.integers(41, 60, 40), rng.integers(61, 259, 260)])
    ra, rb = la / 50 + rng.normal(size=300), lb / 50 + 0.5 + rng.normal(size=300)
    got = weighted_reward_gain(la, ra, lb, rb)
    nrg, delta, ratio = paper_fancyscatter_nrg(la.tolist(), ra.tolist(), lb.tolist(), rb.tolist())
    assert got.nrg == pytest.approx(nrg, rel=1e-9)
    assert got.delta_r == pytest.approx(delta, rel=1e-9)
    assert got.ratio == pytest.approx(ratio, rel=1e-9)
    # The shared-bins normaliser is the other convention: here it is several times larger.
    shared = weighted_reward_gain(la, ra, lb, rb, normalizer="shared_bins")
    nrg_shared, _, _ = loop_nrg(la.tolist(), ra.tolist(), lb.tolist(), rb.tolist())
    assert shared.nrg == pytest.approx(nrg_shared, rel=1e-9)
    assert abs(shared.nrg) > 2 * abs(got.nrg)


def test_unknown_nrg_normalizer_is_named():
    with pytest.raises(ValueError, match="unknown NRG normalizer 'tval'"):
        weighted_reward_gain([5], [1.0], [5], [2.0], normalizer="tval")


def loop_nrg(la, ra, lb, rb, width=20, top=260, strict=True):
    """NRG normalised by the samples of the shared bins only (``normalizer="shared_bins"``)."""
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
def test_shared_bins_nrg_matches_a_plain_loop(strict):
    rng = np.random.default_rng(0)
    la, lb = rng.integers(0, 300, 400), rng.integers(20, 300, 400)
    ra, rb = la / 100 + rng.normal(size=400), lb / 100 + 0.3 + rng.normal(size=400)
    got = weighted_reward_gain(la, ra, lb, rb, strict=strict, normalizer="shared_bins")
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
