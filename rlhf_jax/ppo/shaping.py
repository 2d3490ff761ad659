"""Reward shaping: the paper's PPO-side interventions and the length-only reward (Singhal et al. 2023 §4.1, §5).

Each intervention is one function of the batch's sequence scores ``r [b]``,
response lengths ``len(y) [b]`` (tokens) and EOS flags, selected by name in the
config (:data:`SHAPERS`). Functions are pure and jittable; the one piece of
state, the reward-statistics window of reward scaling and the length penalty,
is a :class:`RewardWindow` carried (and checkpointed) by the PPO loop.

- ``high_kl``: no function — a larger initial KL coefficient (paper: 0.12 vs 0.04).
- ``reward_scaling``: ``r' = clip((r − μ)/σ, −0.3, 0.3)``.
- ``length_penalty``: ``r' = r + (1 − len/N)·σ`` (as the paper states it) or the
  paper code's ``r + 2σ·(1 − 0.01·len)`` (``variant="code"``).
- ``omit_long``: responses that did not emit EOS within the cap take no part in
  the update (``mode="mask"``) or are replaced by a random terminated response of
  the same batch (``mode="replace"``, the paper's code).
- ``length_only`` (LPPO): ``r = 1 − |len/N − 1|``, the reward model unused.
- beyond the paper: ``eos_penalty`` (``r − p`` without EOS) and ``overlong_penalty``
  (a soft linear penalty over the last ``buffer`` tokens before the cap).

``μ`` and ``σ`` are the means of the last 10 batches' reward means and standard
deviations, the current batch included (the paper's running statistics).
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

SHAPERS = ("none", "reward_scaling", "length_penalty", "length_only")
"""Score transforms; ``omit_long``, ``eos_penalty`` and ``overlong_penalty`` combine with any of them."""


@flax.struct.dataclass
class RewardWindow:
    """The last ``size`` batches' reward means and standard deviations (a ring buffer)."""

    means: jax.Array
    stds: jax.Array
    count: jax.Array

    @classmethod
    def empty(cls, size: int = 10) -> "RewardWindow":
        return cls(means=jnp.zeros(size, jnp.float32), stds=jnp.zeros(size, jnp.float32),
                   count=jnp.zeros((), jnp.int32))

    def push(self, scores, weights=None) -> "RewardWindow":
        """Add this batch's mean and (population) standard deviation of ``scores``."""
        weights = jnp.ones_like(scores) if weights is None else weights
        n = jnp.maximum(jnp.sum(weights), 1.0)
        mean = jnp.sum(scores * weights) / n
        std = jnp.sqrt(jnp.sum(weights * (scores - mean) ** 2) / n)
        slot = self.count % self.means.shape[0]
        return RewardWindow(means=self.means.at[slot].set(mean), stds=self.stds.at[slot].set(std),
                            count=self.count + 1)

    def statistics(self):
        """``(μ, σ)``: the means over the filled slots."""
        filled = (jnp.arange(self.means.shape[0]) < self.count).astype(jnp.float32)
        n = jnp.maximum(jnp.sum(filled), 1.0)
        return jnp.sum(self.means * filled) / n, jnp.sum(self.stds * filled) / n


def reward_scaling(scores, window: RewardWindow, clip: float = 0.3):
    """``clip((r − μ)/σ, −clip, clip)`` with the window's ``μ, σ`` (push the batch first)."""
    mean, std = window.statistics()
    return jnp.clip((scores - mean) / jnp.maximum(std, 1e-8), -clip, clip)


def length_penalty(scores, lengths, window: RewardWindow, target_length: float,
                   variant: str = "paper"):
    """``r + (1 − len/N)·σ`` (``"paper"``) or ``r + 2σ·(1 − 0.01·len)`` (``"code"``)."""
    _, std = window.statistics()
    lengths = lengths.astype(jnp.float32)
    if variant == "paper":
        return scores + (1.0 - lengths / target_length) * std
    if variant == "code":
        return scores + 2.0 * std * (1.0 - 0.01 * lengths)
    raise ValueError(f"unknown length_penalty variant {variant!r}; expected 'paper' or 'code'")


def length_only_reward(lengths, target_length: float):
    """LPPO (§5): ``r = 1 − |len/N − 1|``, highest at ``len = N``."""
    return 1.0 - jnp.abs(lengths.astype(jnp.float32) / target_length - 1.0)


def eos_penalty(scores, ended, penalty: float):
    """``r − penalty`` for responses that did not emit EOS (beyond the paper)."""
    return scores - penalty * (1.0 - ended.astype(jnp.float32))


def overlong_penalty(scores, lengths, max_length: int, buffer: int, penalty: float = 1.0):
    """Soft overlong penalty (beyond the paper): linear from 0 at ``max_length − buffer`` to ``−penalty`` at the cap."""
    excess = jnp.clip((lengths.astype(jnp.float32) - (max_length - buffer)) / max(buffer, 1), 0.0, 1.0)
    return scores - penalty * excess


def omit_long_mask(ended):
    """``mode="mask"``: per-sample weight 1 for responses that ended with EOS, else 0."""
    return ended.astype(jnp.float32)


def omit_long_replacement(ended, key):
    """``mode="replace"`` (the paper's code): for each row, the index of the row to use instead.

    Rows that ended keep their index; the others take a uniformly drawn row that
    ended. If none ended, every row keeps its own index (nothing to replace with).
    """
    b = ended.shape[0]
    logits = jnp.where(ended, 0.0, -jnp.inf)
    draws = jax.random.categorical(key, logits, shape=(b,))
    own = jnp.arange(b)
    return jnp.where(ended | ~jnp.any(ended), own, draws)
