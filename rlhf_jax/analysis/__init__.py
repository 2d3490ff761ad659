"""Length analyses of the paper: length–reward correlation and the length-binned reward gain (NRG)."""

from rlhf_jax.analysis.length import (WeightedRewardGain, length_reward_correlation,
                                      weighted_reward_gain)

__all__ = ["WeightedRewardGain", "length_reward_correlation", "weighted_reward_gain"]
