"""The paper's PPO-side runs (§4.1, §5; Tables 1–3) as config edits, one function each.

:data:`PPO_VARIANTS` maps a variant name (``configs/ppo/*.py:VARIANT``, the study's
``ppo_variants``) to a function that changes a few lines of a PPO config; a new
variant is one function and one entry.
"""

from __future__ import annotations

import ml_collections as mlc


def _high_kl(config):
    config.ppo.init_kl_coef = 0.12       # the paper's high-KL runs: β₀ 0.12 instead of 0.04


def _reward_scaling(config):
    config.shaping.shapers = ("reward_scaling",)


def _length_penalty(config):
    config.shaping.shapers = ("length_penalty",)


def _omit_long(config):
    config.shaping.omit_long = "replace"  # the paper's code; "mask" is the cleaner alternative


def _lppo(config):
    config.reward.kind = "length_only"
    config.shaping.shapers = ("length_only",)


def _lppo_beta0(config):
    _lppo(config)
    config.ppo.init_kl_coef = 0.0        # the paper's wgptlenonlynokl run
    config.ppo.adaptive_kl = False


PPO_VARIANTS = {"standard": lambda config: None, "high_kl": _high_kl,
                "reward_scaling": _reward_scaling, "length_penalty": _length_penalty,
                "omit_long": _omit_long, "lppo": _lppo, "lppo_beta0": _lppo_beta0}
"""The paper's PPO-side runs (§4.1, §5; Tables 1–3): each a function that edits a few config lines."""


def with_ppo_variant(config: mlc.ConfigDict, variant: str, target_length: float) -> mlc.ConfigDict:
    """Apply PPO variant ``variant`` (:data:`PPO_VARIANTS`) with LPPO's target length ``N``."""
    if variant not in PPO_VARIANTS:
        raise ValueError(f"unknown PPO variant {variant!r}; expected one of {sorted(PPO_VARIANTS)}")
    config.shaping.target_length = float(target_length)
    PPO_VARIANTS[variant](config)
    return config
