"""GRPO and Dr. GRPO (``ppo.advantage_estimator``) against a float64 NumPy loop over groups and
responses: the advantages, the loss, and the per-token gradient that carries GRPO's length bias
(1/|o_i|) and Dr. GRPO's constant. End to end, a PPO run samples one group per prompt."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.ppo import algo

RTOL = 1e-5


def numpy_group_advantages(scores, group, scale):
    out = []
    for g in range(0, len(scores), group):
        x = np.asarray(scores[g:g + group], np.float64)
        a = x - x.mean()
        if scale:
            a = a / (x.std(ddof=1) + algo.GROUP_STD_EPS)
        out += a.tolist()
    return np.array(out)


@pytest.mark.parametrize("scale", [True, False], ids=["grpo", "dr_grpo"])
def test_group_advantages_match_a_loop_over_groups(scale):
    scores = np.array([1.0, 2.0, 4.0, 1.0, -3.0, -3.0, -3.0, 5.0, 0.5, 0.25, 0.0, 2.0])
    got = algo.group_advantages(jnp.asarray(scores, jnp.float32), 4, scale)
    np.testing.assert_allclose(got, numpy_group_advantages(scores, 4, scale), rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got).reshape(3, 4).sum(1), 0.0, atol=1e-5)


def batch(seed=0, b=6, t=9):
    rng = np.random.default_rng(seed)
    lengths = np.array([9, 2, 5, 7, 1, 0])[:b]  # unequal, and an empty row (omitted)
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
    old = rng.normal(-2.0, 0.5, (b, t))
    new = old + rng.normal(0.0, 0.3, (b, t))  # ratios well outside 1 ± 0.2: clipping active
    ref = old + rng.normal(0.0, 0.2, (b, t))
    adv = np.repeat(rng.normal(size=b)[:, None], t, axis=1) * mask
    return new, old, ref, adv, mask, lengths


def numpy_group_loss(new, old, ref, adv, mask, eps, beta, per_response_mean, kl_in_loss, max_len):
    total, count = 0.0, 0
    for i in range(new.shape[0]):
        n = int(mask[i].sum())
        if n == 0:
            continue
        s = 0.0
        for t in range(n):
            ratio = np.exp(new[i, t] - old[i, t])
            term = min(ratio * adv[i, t], np.clip(ratio, 1 - eps, 1 + eps) * adv[i, t])
            if kl_in_loss:
                d = ref[i, t] - new[i, t]
                term -= beta * (np.exp(d) - d - 1)
            s += term
        total += s / (n if per_response_mean else max_len)
        count += 1
    return -total / count


@pytest.mark.parametrize("name", ["grpo", "dr_grpo"])
def test_group_loss_matches_a_loop_over_responses(name):
    est = algo.ADVANTAGE_ESTIMATORS[name]
    new, old, ref, adv, mask, _ = batch()
    loss, clip_fraction, _ = algo.group_policy_loss(
        *[jnp.asarray(x, jnp.float32) for x in (new, old, ref, adv, mask)], 0.2, 0.04,
        per_response_mean=est.per_response_mean, kl_in_loss=est.kl_in_loss, max_length=12)
    want = numpy_group_loss(new, old, ref, adv, mask, 0.2, 0.04, est.per_response_mean,
                            est.kl_in_loss, 12)
    assert float(loss) == pytest.approx(want, rel=RTOL)
    assert 0.0 < float(clip_fraction) < 1.0


def test_grpo_scales_each_token_by_one_over_its_length_and_dr_grpo_does_not():
    """At ρ = 1 (the first minibatch), ∂loss/∂log π(o_{i,t}) = −Â_i / (|o_i| · n) for GRPO and
    −Â_i / (L · n) for Dr. GRPO (n responses, L the constant): GRPO's per-token push on a long
    response is weaker, the length bias Liu et al. remove."""
    _, old, _, adv, mask, lengths = batch()
    rows = lengths > 0
    for name in ("grpo", "dr_grpo"):
        est = algo.ADVANTAGE_ESTIMATORS[name]

        def loss(new):
            return algo.group_policy_loss(new, jnp.asarray(old, jnp.float32),
                                          jnp.asarray(old, jnp.float32),
                                          jnp.asarray(adv, jnp.float32),
                                          jnp.asarray(mask, jnp.float32), 0.2, 0.04,
                                          per_response_mean=est.per_response_mean,
                                          kl_in_loss=est.kl_in_loss, max_length=12)[0]
        grad = np.asarray(jax.grad(loss)(jnp.asarray(old, jnp.float32)))
        scale = np.where(rows, lengths, 1) if est.per_response_mean else np.full(len(lengths), 12)
        want = -adv / (scale[:, None] * rows.sum()) * mask
        np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-8)


def test_the_registry_and_the_config_checks():
    from rlhf_jax.config import ConfigError
    from rlhf_jax.config import load_config
    from rlhf_jax.ppo.trainer import validate
    assert tuple(algo.ADVANTAGE_ESTIMATORS) == ("gae", "grpo", "dr_grpo")
    config = load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        __file__))), "configs", "synthetic", "ppo.py"))
    config.ppo.advantage_estimator = "grpo"
    config.ppo.group_size = 5
    with pytest.raises(ConfigError, match="needs ppo.group_size ≥ 2 responses per prompt "
                                          "dividing ppo.batch_size 32; got 5"):
        validate(config)
    config.ppo.group_size = 4
    config.ppo.value_model = "separate"
    with pytest.raises(ConfigError, match="uses no value model: keep ppo.value_model='shared'"):
        validate(config)
    config.ppo.advantage_estimator = "rloo"
    with pytest.raises(ConfigError, match="'ppo.advantage_estimator' = 'rloo'"):
        validate(config)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["grpo", "dr_grpo"])
def test_a_group_run_samples_each_prompt_group_size_times(tmp_path, name):
    from rlhf_jax import cli
    from rlhf_jax.ppo.trainer import PPOTrainer
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    config_path = os.path.join(root, "configs", "synthetic", "ppo.py")
    overrides = ["--config.model.init=preset:tiny-llama",
                 "--config.model.overrides={'vocab_size': 192, 'bos_token_id': 3, "
                 "'eos_token_id': 1, 'pad_token_id': 0}",
                 "--config.reward.kind=function", "--config.reward.model=",
                 "--config.reward.function=rlhf_jax.data.synthetic:gold_reward",
                 f"--config.ppo.advantage_estimator={name}", "--config.ppo.group_size=4",
                 "--config.ppo.batch_size=16", "--config.ppo.mini_batch_size=8",
                 "--config.ppo.steps=2", "--config.ppo.ppo_epochs=1",
                 "--config.generation.min_new_tokens=6", "--config.generation.max_new_tokens=8"]
    workdir = str(tmp_path / name)
    assert cli.main(["ppo", "--config", config_path, "--workdir", workdir, *overrides]) == 0
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2]
    assert all(r["loss/value"] == 0.0 for r in rows if "loss/value" in r)
    from rlhf_jax.config import load_config
    from rlhf_jax.config import overrides_from_argv
    config = load_config(config_path, overrides_from_argv(overrides)[0])
    trainer = PPOTrainer.__new__(PPOTrainer)
    trainer.config, trainer.prompts = config, list(range(100))
    first = trainer.step_prompts(0)
    assert len(first) == 16 and len(set(first)) == 4
    assert all(first[i] == first[i // 4 * 4] for i in range(16))  # groups of consecutive rows
