"""PPO pieces against plain NumPy loops on random inputs with ragged masks (tolerance 1e-5)."""

import numpy as np
import pytest

from rlhf_jax.ppo import algo

B, T = 5, 9


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    lengths = np.array([9, 1, 4, 7, 3])
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
    f = lambda: rng.normal(size=(B, T)).astype(np.float32)  # noqa: E731
    return {"mask": mask, "lengths": lengths, "r": f(), "v": f(), "lp": f() - 2, "ref": f() - 2,
            "old": f() - 2, "adv": f(), "old_v": f(), "ret": f(), "scores": rng.normal(size=B)}


def numpy_gae(r, v, lengths, gamma, lam):
    adv, ret = np.zeros_like(r), np.zeros_like(r)
    for b, n in enumerate(lengths):
        last = 0.0
        for t in reversed(range(n)):
            next_v = v[b, t + 1] if t + 1 < n else 0.0
            delta = r[b, t] + gamma * next_v - v[b, t]
            last = delta + gamma * lam * last
            adv[b, t] = last
            ret[b, t] = last + v[b, t]
    return adv, ret


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae(data, gamma, lam):
    adv, ret = algo.gae(data["r"] * data["mask"], data["v"], data["mask"], gamma, lam)
    ref_adv, ref_ret = numpy_gae(data["r"], data["v"], data["lengths"], gamma, lam)
    np.testing.assert_allclose(np.asarray(adv), ref_adv, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), ref_ret, atol=1e-5)


@pytest.mark.parametrize("shift_mean", [True, False])
def test_whitening(data, shift_mean):
    x, m = data["adv"], data["mask"]
    vals = x[m > 0].astype(np.float64)
    mean, var = vals.mean(), vals.var(ddof=1)
    expected = (x - mean) / np.sqrt(var + 1e-8) + (0 if shift_mean else mean)
    got = np.asarray(algo.masked_whiten(x, m, shift_mean=shift_mean))
    np.testing.assert_allclose(got[m > 0], expected[m > 0], atol=1e-5)


def test_kl_estimators(data):
    lp, ref = data["lp"].astype(np.float64), data["ref"].astype(np.float64)
    expected = {"k1": lp - ref, "abs": np.abs(lp - ref), "mse": 0.5 * (lp - ref) ** 2,
                "k3": np.exp(ref - lp) - 1 - (ref - lp)}
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(algo.kl_estimate(data["lp"], data["ref"], name)),
                                   value, rtol=1e-5, atol=1e-5)
    assert np.all(expected["k3"] >= 0)
    with pytest.raises(ValueError, match="unknown KL estimator 'k2'"):
        algo.kl_estimate(data["lp"], data["ref"], "k2")


def test_token_rewards(data):
    kl = data["lp"] - data["ref"]
    got = np.asarray(algo.token_rewards(data["scores"], kl, data["mask"], 0.1))
    expected = np.zeros((B, T))
    for b, n in enumerate(data["lengths"]):
        for t in range(n):
            expected[b, t] = -0.1 * kl[b, t] + (data["scores"][b] if t == n - 1 else 0.0)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_policy_loss(data):
    eps = 0.2
    total, clipped, count, kl_sum = 0.0, 0, 0, 0.0
    for b, n in enumerate(data["lengths"]):
        for t in range(n):
            ratio = np.exp(data["lp"][b, t] - data["old"][b, t])
            a = data["adv"][b, t]
            u, c = -a * ratio, -a * min(max(ratio, 1 - eps), 1 + eps)
            total += max(u, c)
            clipped += c > u
            kl_sum += 0.5 * (data["lp"][b, t] - data["old"][b, t]) ** 2
            count += 1
    loss, frac, approx_kl = algo.policy_loss(data["lp"], data["old"], data["adv"], data["mask"], eps)
    assert float(loss) == pytest.approx(total / count, abs=1e-5)
    assert float(frac) == pytest.approx(clipped / count, abs=1e-6)
    assert float(approx_kl) == pytest.approx(kl_sum / count, abs=1e-5)


def test_value_loss(data):
    c = 0.2
    total, count = 0.0, 0
    for b, n in enumerate(data["lengths"]):
        for t in range(n):
            v, old, ret = data["v"][b, t], data["old_v"][b, t], data["ret"][b, t]
            clipped = min(max(v, old - c), old + c)
            total += max((v - ret) ** 2, (clipped - ret) ** 2)
            count += 1
    loss, _ = algo.value_loss(data["v"], data["old_v"], data["ret"], data["mask"], c)
    assert float(loss) == pytest.approx(0.5 * total / count, abs=1e-5)


def test_adaptive_kl_update_is_trls_controller():
    # TRL 0.5 AdaptiveKLController.update: value *= 1 + clip(current/target - 1, -0.2, 0.2) * n/horizon
    value, beta = 0.04, np.float32(0.04)
    for kl, n in [(0.5, 64), (0.05, 64), (0.1, 128), (0.0, 64)]:
        value *= 1 + min(max(kl / 0.1 - 1, -0.2), 0.2) * n / 10000
        beta = algo.adaptive_kl_update(beta, np.float32(kl), n, 0.1, 10000.0)
        assert float(beta) == pytest.approx(value, rel=1e-6)
