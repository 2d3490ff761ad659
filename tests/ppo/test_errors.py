"""PPO's bad-input errors: each says which key or quantity is wrong."""

import os

import pytest

from rlhf_jax.config import ConfigError, load_config
from rlhf_jax.ppo.trainer import PPOTrainer, check_finite

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "synthetic", "ppo.py")
BASE = ["--config.model.init=preset:tiny-llama", "--config.reward.model="]


def trainer(tmp_path, variant="lppo", extra=()):
    return PPOTrainer(load_config(f"{CONFIG}:{variant}", [*BASE, *extra]), str(tmp_path))


@pytest.mark.parametrize("override,message", [
    ("--config.shaping.name=length_bonus", "'shaping.name' = 'length_bonus'"),
    ("--config.shaping.omit_long=drop", "'shaping.omit_long' = 'drop'"),
    ("--config.ppo.value_model=twin", "'ppo.value_model' = 'twin'"),
    ("--config.ppo.mini_batch_size=5", "not a multiple of ppo.mini_batch_size 5"),
    ("--config.generation.min_new_tokens=50", "min_new_tokens < generation.max_new_tokens"),
])
def test_bad_ppo_settings_name_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        trainer(tmp_path, extra=[override])


def test_reward_model_required_for_model_rewards(tmp_path):
    with pytest.raises(ConfigError, match="'reward.model' is empty"):
        trainer(tmp_path, variant="standard")


def test_empty_prompt_set_after_filtering(tmp_path):
    with pytest.raises(ConfigError, match=r"only 0 RL prompts left .*max_prompt_length=1"):
        trainer(tmp_path, extra=["--config.data.max_prompt_length=1"])


def test_non_finite_statistics_are_named():
    check_finite({"loss/value": 1.0})
    with pytest.raises(FloatingPointError, match="non-finite loss/policy, objective/kl"):
        check_finite({"loss/policy": float("nan"), "objective/kl": float("inf"), "ok": 0.0})
