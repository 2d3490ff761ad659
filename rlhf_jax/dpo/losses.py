"""Direct preference losses on sequence log-probabilities: DPO, R-DPO and SimPO.

The methods that followed the paper's "long way to go" and train the policy on the preference
pairs directly, without a reward model or PPO. Each one is a function of, per pair:

* ``policy_chosen``, ``policy_rejected``: log π_θ(y_w | x) and log π_θ(y_l | x), the policy's
  log-probability of each response summed over its tokens;
* ``ref_chosen``, ``ref_rejected``: the same under the frozen reference π_ref (SimPO ignores
  them);
* ``len_chosen``, ``len_rejected``: the responses' lengths |y_w|, |y_l| in tokens;

and returns ``(losses, chosen_rewards, rejected_rewards)``: the per-pair loss, and each
method's implicit reward of the two responses (what its sigmoid compares), for logging. All
in float32. :data:`PREFERENCE_LOSSES` names them for ``dpo.loss``; :func:`register_loss`
adds one.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Tuple

import jax
import jax.numpy as jnp

from rlhf_jax.config import ConfigError

Losses = Tuple[jax.Array, jax.Array, jax.Array]


@dataclasses.dataclass(frozen=True)
class PreferenceLoss:
    fn: Callable[..., Losses]
    uses_reference: bool  # False: no reference forward is needed (SimPO)
    options: Tuple[str, ...]  # keyword arguments it takes from the config section


PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {}
"""Direct preference losses by name (``dpo.loss``)."""


def register_loss(name: str, *, uses_reference: bool, options: Tuple[str, ...]):
    """Register ``fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, len_chosen,
    len_rejected, **options) -> (losses, chosen_rewards, rejected_rewards)`` as ``name``."""
    def register(fn):
        PREFERENCE_LOSSES[name] = PreferenceLoss(fn, uses_reference, tuple(options))
        return fn
    return register


def _f32(*arrays):
    return [jnp.asarray(a, jnp.float32) for a in arrays]


@register_loss("dpo", uses_reference=True, options=("beta", "label_smoothing"))
def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, len_chosen=None,
             len_rejected=None, *, beta: float, label_smoothing: float = 0.0) -> Losses:
    """DPO (Rafailov et al. 2023, eq. 7), with conservative label smoothing ε (cDPO)::

        h = β[(log π_θ − log π_ref)(y_w) − (log π_θ − log π_ref)(y_l)]
        L = −(1 − ε) log σ(h) − ε log σ(−h)

    Rewards: β(log π_θ − log π_ref)(y). Lengths are not used.
    """
    pc, pr, rc, rr = _f32(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    chosen, rejected = beta * (pc - rc), beta * (pr - rr)
    h = chosen - rejected
    losses = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(h) \
        - label_smoothing * jax.nn.log_sigmoid(-h)
    return losses, chosen, rejected


@register_loss("rdpo", uses_reference=True, options=("beta", "alpha"))
def rdpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, len_chosen,
              len_rejected, *, beta: float, alpha: float) -> Losses:
    """R-DPO (Park et al. 2024, *Disentangling Length from Quality in Direct Preference
    Optimization*, eq. 9): DPO with a length term inside the sigmoid::

        L = −log σ(β(log π_θ − log π_ref)(y_w) − β(log π_θ − log π_ref)(y_l)
                   + (α|y_w| − α|y_l|))

    A longer winner lowers the margin the policy's log-ratios must make up, so longer answers
    are not rewarded for being longer. Rewards are DPO's; α = 0 is DPO.
    """
    pc, pr, rc, rr, lc, lr = _f32(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                                  len_chosen, len_rejected)
    chosen, rejected = beta * (pc - rc), beta * (pr - rr)
    losses = -jax.nn.log_sigmoid(chosen - rejected + alpha * (lc - lr))
    return losses, chosen, rejected


@register_loss("simpo", uses_reference=False, options=("beta", "gamma"))
def simpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, len_chosen,
               len_rejected, *, beta: float, gamma: float) -> Losses:
    """SimPO (Meng et al. 2024, eq. 6): the length-normalised log-likelihood as the reward, a
    target margin γ, and no reference model::

        L = −log σ(β/|y_w| · log π_θ(y_w) − β/|y_l| · log π_θ(y_l) − γ)

    Rewards: β/|y| · log π_θ(y). ``ref_*`` are ignored (pass anything, e.g. zeros).
    """
    pc, pr, lc, lr = _f32(policy_chosen, policy_rejected, len_chosen, len_rejected)
    chosen, rejected = beta * pc / jnp.maximum(lc, 1.0), beta * pr / jnp.maximum(lr, 1.0)
    losses = -jax.nn.log_sigmoid(chosen - rejected - gamma)
    return losses, chosen, rejected


def preference_loss(name: str, section) -> Callable[..., Losses]:
    """The registered loss ``name`` with its options read from ``section`` (a config section
    holding at least those keys)."""
    if name not in PREFERENCE_LOSSES:
        raise ConfigError(f"dpo.loss = {name!r}: unknown; expected one of "
                          f"{sorted(PREFERENCE_LOSSES)}")
    entry = PREFERENCE_LOSSES[name]
    options = {key: section[key] for key in entry.options}
    return lambda *args: entry.fn(*args, **options)
