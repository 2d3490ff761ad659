"""PPO for language models as pure functions (Singhal et al. 2023 §2.2; TRL 0.5's algorithm).

Arrays are ``[batch, time]`` over the *response* tokens, with ``mask_bt`` = 1 on
real response tokens (right-padded after EOS). Everything here is jittable and
free of host state; the adaptive KL coefficient is carried in the PPO state and
updated by the pure :func:`adaptive_kl_update`.

Per token ``t`` of a response ``y`` to prompt ``x``:

- KL estimate between the policy π and the frozen reference π₀, from the sampled
  token's log-probs ``lp = log π(y_t)``, ``lr = log π₀(y_t)`` (:func:`kl_estimate`):
  ``k1 = lp − lr``; ``abs = |lp − lr|``; ``mse = ½(lp − lr)²``;
  ``k3 = (ρ − 1) − log ρ`` with ``ρ = exp(lr − lp)`` (unbiased, non-negative).
- Reward (:func:`token_rewards`): ``r_t = −β·KL_t``, plus the sequence score at the
  last response token.
- GAE (:func:`gae`): ``δ_t = r_t + γ·V_{t+1} − V_t``, ``A_t = δ_t + γλ·A_{t+1}``, with
  ``V`` and ``A`` beyond the last response token taken as 0; returns ``R_t = A_t + V_t``.
- Policy loss (:func:`policy_loss`): ``mean(max(−A·ρ_t, −A·clip(ρ_t, 1 ± ε)))`` with
  ``ρ_t = exp(lp_new − lp_old)``.
- Value loss (:func:`value_loss`): ``½·mean(max((v − R)², (clip(v, v_old ± c) − R)²))``.
- Group estimators instead of GAE (:data:`ADVANTAGE_ESTIMATORS`): GRPO and Dr. GRPO score a
  group of responses per prompt against each other (:func:`group_advantages`) with no value
  model, and aggregate the clipped objective per response (:func:`group_policy_loss`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlhf_jax.training import masked_mean

KL_ESTIMATORS = ("k1", "k3", "abs", "mse")


def masked_var(x, mask, unbiased: bool = True):
    """Variance over masked positions; ``unbiased`` applies Bessel's correction ``n/(n−1)`` (as TRL)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = jnp.sum(mask)
        var = var * n / jnp.maximum(n - 1.0, 1.0)
    return var


def masked_whiten(x, mask, shift_mean: bool = True, eps: float = 1e-8):
    """``(x − μ)/sqrt(σ² + eps)`` over masked positions; ``shift_mean=False`` adds μ back.

    Advantages are whitened with the mean removed; rewards (when whitened) keep
    their mean (TRL's convention).
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    white = (x - mean) * jax.lax.rsqrt(var + eps)
    return white if shift_mean else white + mean


def kl_estimate(logprobs, ref_logprobs, estimator: str = "k1"):
    """Per-token KL(π‖π₀) estimate from the sampled tokens' log-probs (see the module docstring)."""
    diff = logprobs - ref_logprobs
    if estimator == "k1":
        return diff
    if estimator == "abs":
        return jnp.abs(diff)
    if estimator == "mse":
        return 0.5 * diff ** 2
    if estimator == "k3":
        log_ratio = -diff  # log π₀/π
        return jnp.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")


def last_token_onehot(mask_bt):
    """1 at each row's last masked position (rows with an empty mask: all 0)."""
    t = mask_bt.shape[1]
    last = jnp.max(jnp.where(mask_bt > 0, jnp.arange(t)[None], -1), axis=1)
    return (jnp.arange(t)[None] == last[:, None]).astype(jnp.float32)


def token_rewards(scores_b, kl_bt, mask_bt, beta):
    """``r_t = −β·KL_t`` on response tokens, plus ``score`` at each row's last response token."""
    return (-beta * kl_bt + scores_b[:, None] * last_token_onehot(mask_bt)) * mask_bt


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation over ``[batch, time]``; returns ``(advantages, returns)``.

    A reverse ``lax.scan``; positions with ``mask`` 0 contribute nothing and
    the value after a row's last response token is 0. ``returns = A + V`` on
    masked positions, 0 elsewhere.
    """
    rewards, values, mask = (jnp.asarray(a, jnp.float32) for a in (rewards, values, mask))

    def step(carry, inputs):
        next_value, next_advantage = carry
        r, v, m = inputs
        delta = r + gamma * next_value - v
        advantage = (delta + gamma * lam * next_advantage) * m
        # A padded position passes nothing back: the next real position sees V = A = 0.
        return (v * m, advantage), advantage

    zeros = jnp.zeros(rewards.shape[0], jnp.float32)
    _, advantages = jax.lax.scan(step, (zeros, zeros), (rewards.T, values.T, mask.T), reverse=True)
    advantages = advantages.T
    return advantages, (advantages + values) * mask


def policy_loss(logprobs, old_logprobs, advantages, mask, clip_range: float):
    """Clipped surrogate loss and diagnostics ``(loss, clip_fraction, approx_kl)``."""
    log_ratio = logprobs - old_logprobs
    ratio = jnp.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(jnp.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).astype(jnp.float32), mask)
    approx_kl = 0.5 * masked_mean(log_ratio ** 2, mask)
    return loss, clip_fraction, approx_kl


@dataclasses.dataclass(frozen=True)
class AdvantageEstimator:
    """How a PPO step turns scores into advantages, and how its policy loss is aggregated."""
    group: bool               # from a group of responses to one prompt, no value model
    scale_by_std: bool        # divide by the group's standard deviation (GRPO)
    per_response_mean: bool   # each response's token terms averaged over its length, 1/|o_i|
    kl_in_loss: bool          # β·KL(k3) per token inside the loss (GRPO), not in the reward


ADVANTAGE_ESTIMATORS = {
    # GAE on per-token rewards −β·KL + score, a value model (TRL; the paper)
    "gae": AdvantageEstimator(group=False, scale_by_std=False, per_response_mean=False,
                              kl_in_loss=False),
    # GRPO (Shao et al. 2024, DeepSeekMath eq. 3): Â_i = (r_i − mean_g r) / std_g r
    "grpo": AdvantageEstimator(group=True, scale_by_std=True, per_response_mean=True,
                               kl_in_loss=True),
    # Dr. GRPO (Liu et al. 2025, Understanding R1-Zero-Like Training): Â_i = r_i − mean_g r,
    # token terms summed and divided by a constant, no KL term
    "dr_grpo": AdvantageEstimator(group=True, scale_by_std=False, per_response_mean=False,
                                  kl_in_loss=False),
}
"""``ppo.advantage_estimator``."""

GROUP_STD_EPS = 1e-4  # added to a group's standard deviation (TRL's GRPOTrainer uses the same)


def group_advantages(scores_b, group_size: int, scale_by_std: bool):
    """Per-response advantages relative to the group of ``group_size`` consecutive rows (the
    responses to one prompt): ``r_i − mean_g r``, divided by ``std_g r + ε`` (sample std,
    ``ddof = 1``) when ``scale_by_std``. Shape ``[b]``."""
    groups = scores_b.astype(jnp.float32).reshape(-1, group_size)
    centered = groups - jnp.mean(groups, axis=1, keepdims=True)
    if scale_by_std:
        centered = centered / (jnp.std(groups, axis=1, ddof=1, keepdims=True) + GROUP_STD_EPS)
    return centered.reshape(-1)


def group_policy_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask,
                      clip_range: float, kl_coef, *, per_response_mean: bool, kl_in_loss: bool,
                      max_length: int):
    """GRPO's and Dr. GRPO's clipped objective, negated, and ``(clip_fraction, approx_kl)``.

    Per token: ``s_t = min(ρ_t·Â, clip(ρ_t, 1 ± ε)·Â) − β·KL_t`` (the KL term only with
    ``kl_in_loss``; ``KL_t = exp(lr − lp) − (lr − lp) − 1``, the k3 estimator against the
    reference). Per response: ``Σ_t s_t / |o_i|`` (GRPO: ``per_response_mean``) or
    ``Σ_t s_t / max_length`` (Dr. GRPO: the same constant for every response, which removes
    the 1/|o_i| length bias). Loss: minus the mean over responses with any token.
    """
    log_ratio = logprobs - old_logprobs
    ratio = jnp.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantages
    terms = jnp.minimum(unclipped, clipped)
    if kl_in_loss:
        d = ref_logprobs - logprobs
        terms = terms - kl_coef * (jnp.exp(d) - d - 1.0)
    tokens = jnp.sum(mask, axis=1)
    per_response = jnp.sum(terms * mask, axis=1) / (jnp.maximum(tokens, 1.0) if per_response_mean
                                                    else float(max_length))
    responses = (tokens > 0).astype(jnp.float32)
    loss = -jnp.sum(per_response * responses) / jnp.maximum(jnp.sum(responses), 1.0)
    clip_fraction = masked_mean((clipped < unclipped).astype(jnp.float32), mask)
    return loss, clip_fraction, 0.5 * masked_mean(log_ratio ** 2, mask)


def value_loss(values, old_values, returns, mask, clip_range_value: float):
    """``½·mean(max((v − R)², (clip(v, v_old ± c) − R)²))`` and the clipped fraction."""
    clipped_values = jnp.clip(values, old_values - clip_range_value, old_values + clip_range_value)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(jnp.maximum(unclipped_loss, clipped_loss), mask)
    return loss, masked_mean((clipped_loss > unclipped_loss).astype(jnp.float32), mask)


def adaptive_kl_update(beta, current_kl, n_steps, target: float, horizon: float):
    """``β ← β·(1 + clip(KL/target − 1, −0.2, 0.2)·n/horizon)`` (Ziegler et al. 2019; TRL)."""
    error = jnp.clip(current_kl / target - 1.0, -0.2, 0.2)
    return beta * (1.0 + error * n_steps / horizon)
