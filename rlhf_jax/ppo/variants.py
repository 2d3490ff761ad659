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


def sibling_run(reward_model: str, suffix: str) -> str:
    """The export of the reward-model run beside ``reward_model``'s: ``runs/rm_webgpt/export`` →
    ``runs/rm_webgpt_<suffix>/export`` (as ``configs/rm/*.py:<suffix>`` is launched)."""
    path = reward_model.rstrip("/")
    run, leaf = (path[:-len("/export")], "/export") if path.endswith("/export") else (path, "")
    return f"{run}_{suffix}{leaf}"


def _odin(config):
    # ODIN (Chen et al. 2024 §4): PPO reads the quality head of configs/rm/*.py:odin's model
    config.reward.model = sibling_run(config.reward.model, "odin")
    config.reward.head = "quality"


def _calibrated(config):
    # post-hoc calibration (Huang et al. 2024): r − b̂(len), the trend fitted by
    # configs/rm/*.py:calibrated and stored with its export
    config.reward.model = sibling_run(config.reward.model, "calibrated")
    config.reward.calibration = "lowess"


GROUP_SIZE = 8
"""Responses per prompt of the group variants: 8 prompts × 8 in the paper configs' 64 rows."""


def _grpo(config):
    # GRPO (Shao et al. 2024 §4.1): β = 0.04 fixed, as DeepSeekMath trained
    config.ppo.advantage_estimator = "grpo"
    config.ppo.group_size = GROUP_SIZE
    config.ppo.init_kl_coef = 0.04
    config.ppo.adaptive_kl = False


def _dr_grpo(config):
    # Dr. GRPO (Liu et al. 2025 §3): no std, no 1/|o_i|, no KL term
    config.ppo.advantage_estimator = "dr_grpo"
    config.ppo.group_size = GROUP_SIZE
    config.ppo.init_kl_coef = 0.0
    config.ppo.adaptive_kl = False


PPO_VARIANTS = {"standard": lambda config: None, "high_kl": _high_kl,
                "reward_scaling": _reward_scaling, "length_penalty": _length_penalty,
                "omit_long": _omit_long, "lppo": _lppo, "lppo_beta0": _lppo_beta0,
                "odin": _odin, "calibrated": _calibrated, "grpo": _grpo, "dr_grpo": _dr_grpo}
"""The paper's PPO-side runs (§4.1, §5; Tables 1–3), then the debiasing methods that followed
it (issue 17: ODIN's quality head, the calibrated reward, GRPO, Dr. GRPO): each a function that
edits a few config lines."""


def with_ppo_variant(config: mlc.ConfigDict, variant: str, target_length: float) -> mlc.ConfigDict:
    """Apply PPO variant ``variant`` (:data:`PPO_VARIANTS`) with LPPO's target length ``N``."""
    if variant not in PPO_VARIANTS:
        raise ValueError(f"unknown PPO variant {variant!r}; expected one of {sorted(PPO_VARIANTS)}")
    config.shaping.target_length = float(target_length)
    PPO_VARIANTS[variant](config)
    return config
