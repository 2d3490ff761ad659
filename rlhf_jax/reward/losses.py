"""Reward-model objectives (``rm.loss``, :data:`REWARD_LOSSES`): Bradley–Terry, and ODIN.

``bradley_terry`` (Singhal et al. 2023 §2.1): the reward model ``r(x, y)`` is trained on pairs
``(x, y⁺ ≻ y⁻)`` with ``L = −log σ(r(x, y⁺) − r(x, y⁻) − m)``, where the optional margin ``m``
asks the chosen reward to lead by at least ``m`` (Llama-2-style margins), plus an optional
centering term ``c · E[(r⁺ + r⁻)²]`` that keeps rewards near zero (the loss itself is
shift-invariant).

``odin`` (Chen et al. 2024, *ODIN: Disentangled Reward Mitigates Hacking in RLHF*, §4): two
linear heads on the same trunk, quality ``r^Q`` and length ``r^L``; the Bradley–Terry loss is
taken on their sum ``r = r^Q + r^L``, and two terms split the length signal between them:
:func:`odin_length_loss` and :func:`orthogonality_loss`. PPO then reads the quality head alone
(``reward.head = "quality"``).

All in float32; ``weights`` zero out filler rows (a row of weight 0 is in no mean and no
correlation).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from rlhf_jax.training import masked_mean


def bradley_terry_loss(rewards_chosen, rewards_rejected, weights=None, *, margin=0.0,
                       center_coef: float = 0.0):
    """``mean(−log σ(r⁺ − r⁻ − m)) + c·mean((r⁺ + r⁻)²)`` over rows with weight > 0.

    ``margin`` is a scalar or a per-row array. Returns ``(loss, per_row_margin)``
    where ``per_row_margin = r⁺ − r⁻`` (the quantity dataset cartography logs).
    """
    r_c = rewards_chosen.astype(jnp.float32)
    r_r = rewards_rejected.astype(jnp.float32)
    weights = jnp.ones_like(r_c) if weights is None else weights.astype(jnp.float32)
    diff = r_c - r_r
    loss = masked_mean(-jax.nn.log_sigmoid(diff - margin), weights)
    if center_coef:
        loss = loss + center_coef * masked_mean((r_c + r_r) ** 2, weights)
    return loss, diff


def pearson_correlation(x, y, weights=None, eps: float = 1e-8):
    """Pearson's ``ρ(x, y) = cov(x, y) / (σ_x σ_y)`` over the rows with weight > 0 (0/1 weights:
    the rows kept). ``eps`` under the square root keeps ρ and its gradient finite for a
    constant ``x`` (then ``ρ = 0``); the gradient still grows as ``1/σ_x`` when ``x`` is
    nearly constant, as ρ's own does."""
    x = x.astype(jnp.float32)
    y = y.astype(jnp.float32)
    w = jnp.ones_like(x) if weights is None else weights.astype(jnp.float32)
    dx = x - masked_mean(x, w)
    dy = y - masked_mean(y, w)
    cov = masked_mean(dx * dy, w)
    return cov / jnp.sqrt(masked_mean(dx * dx, w) * masked_mean(dy * dy, w) + eps)


def odin_length_loss(quality, length_reward, lengths, weights=None):
    """ODIN's length loss (Chen et al. 2024 §4): ``L_L = |ρ(r^Q, L)| − ρ(r^L, L)``.

    ``ρ`` is Pearson's correlation over the batch's responses (chosen and rejected alike) and
    ``L`` their lengths in tokens: the quality head is pushed to be uncorrelated with length,
    the length head to correlate with it. Under a sharded jit the batch is the global one;
    with ``rm.accum_steps > 1`` it is each micro-batch (the correlations are then noisier).
    (RLHFlow's release writes the second term ``1 − ρ``: the same gradient.)"""
    return (jnp.abs(pearson_correlation(quality, lengths, weights))
            - pearson_correlation(length_reward, lengths, weights))


def orthogonality_loss(quality_kernel, length_kernel, eps: float = 1e-12):
    """ODIN's orthogonality loss (Chen et al. 2024 §4): ``L_O = |ŵ_Q · ŵ_L|`` with ``ŵ = w/‖w‖``,
    the two heads' projection weights. Deviation named: the paper writes ``|W_Q^T W_L|`` on
    the raw weights; here the penalty normalises them (the heads themselves stay plain linear
    layers), so a head cannot meet the term by shrinking its weights."""
    wq = quality_kernel.astype(jnp.float32)
    wl = length_kernel.astype(jnp.float32)
    cosine = jnp.dot(wq, wl) / jnp.sqrt((jnp.dot(wq, wq) + eps) * (jnp.dot(wl, wl) + eps))
    return jnp.abs(cosine)


def odin_loss(heads_chosen, heads_rejected, len_chosen, len_rejected, quality_kernel,
              length_kernel, weights=None, *, length_coef: float = 1.0, ortho_coef: float = 1.0,
              margin=0.0, center_coef: float = 0.0):
    """ODIN's objective (Chen et al. 2024 §4): ``L_RM(r^Q + r^L) + λ_L·L_L + λ_O·L_O``.

    ``heads_*``: ``[b, 2]`` (quality, length) per response; ``len_*``: response lengths
    ``[b]``. Returns ``(loss, r⁺ − r⁻ of the summed reward, terms)`` with the three terms and
    both heads' correlations with length."""
    w = jnp.ones(heads_chosen.shape[:1], jnp.float32) if weights is None else weights
    r_c = jnp.sum(heads_chosen, axis=-1)
    r_r = jnp.sum(heads_rejected, axis=-1)
    ranking, diff = bradley_terry_loss(r_c, r_r, w, margin=margin, center_coef=center_coef)
    both = jnp.concatenate([heads_chosen, heads_rejected]).astype(jnp.float32)
    lengths = jnp.concatenate([len_chosen, len_rejected]).astype(jnp.float32)
    w2 = jnp.concatenate([w, w])
    length_term = odin_length_loss(both[:, 0], both[:, 1], lengths, w2)
    ortho_term = orthogonality_loss(quality_kernel, length_kernel)
    loss = ranking + length_coef * length_term + ortho_coef * ortho_term
    terms = {"ranking_loss": ranking, "length_loss": length_term, "ortho_loss": ortho_term,
             "quality_length_corr": pearson_correlation(both[:, 0], lengths, w2),
             "length_head_length_corr": pearson_correlation(both[:, 1], lengths, w2)}
    return loss, diff, terms


# ----- the registry: rm.loss ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RewardObjective:
    """A reward-model objective: ``fn(rewards_c, rewards_r, batch, params, *, margin,
    center_coef, **options) -> (loss, r⁺ − r⁻, extra scalars)``; ``options``: the config
    section it reads its own coefficients from (``rm.<name>``, or none); ``length_head``: the
    model carries ODIN's second head and the rewards are ``[b, 2]`` (quality, length)."""

    fn: Callable
    options: str = ""
    length_head: bool = False


def _bradley_terry(rewards_c, rewards_r, batch, params, *, margin, center_coef):
    del params
    loss, diff = bradley_terry_loss(rewards_c, rewards_r, batch["weight"], margin=margin,
                                    center_coef=center_coef)
    return loss, diff, {}


def _odin(heads_c, heads_r, batch, params, *, margin, center_coef, length_coef, ortho_coef):
    return odin_loss(heads_c, heads_r, batch["chosen_len"], batch["rejected_len"],
                     params["score"]["kernel"], params["length_score"]["kernel"],
                     batch["weight"], length_coef=length_coef, ortho_coef=ortho_coef,
                     margin=margin, center_coef=center_coef)


REWARD_LOSSES = {"bradley_terry": RewardObjective(_bradley_terry),
                 "odin": RewardObjective(_odin, options="odin", length_head=True)}
"""``rm.loss`` → its objective: one function and one line each."""


def reward_objective(rm_section) -> RewardObjective:
    """The objective ``rm.loss`` names (a :class:`~rlhf_jax.config.ConfigError` otherwise)."""
    from rlhf_jax.config import ConfigError
    name = rm_section.get("loss", "bradley_terry")
    if name not in REWARD_LOSSES:
        raise ConfigError(f"config key 'rm.loss' = {name!r}; expected one of "
                          f"{sorted(REWARD_LOSSES)}")
    return REWARD_LOSSES[name]
