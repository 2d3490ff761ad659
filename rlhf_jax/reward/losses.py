"""Bradley–Terry reward-model loss and its evaluation statistics (Singhal et al. 2023, §2.1).

The reward model ``r(x, y)`` is trained on pairs ``(x, y⁺ ≻ y⁻)`` with
``L = −log σ(r(x, y⁺) − r(x, y⁻) − m)``, where the optional margin ``m`` asks the
chosen reward to lead by at least ``m`` (Llama-2-style margins), plus an
optional centering term ``c · E[(r⁺ + r⁻)²]`` that keeps rewards near zero
(the loss itself is shift-invariant). All in float32; ``weights`` zero out
filler rows.
"""

from __future__ import annotations

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

