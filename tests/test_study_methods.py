"""The study's method registry: its config checks, before any stage trains."""

import os

import pytest

from rlhf_jax.config import ConfigError, load_config
from rlhf_jax.study_methods import STUDY_METHODS, check_methods

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def debias_config(methods=None, ppo_variants=None, calibration=None):
    config = load_config(os.path.join(ROOT, "configs", "debias.py"))
    with config.unlocked():
        config.methods = methods or config.methods
        config.ppo_variants = ppo_variants or config.ppo_variants
        config.rm.rm.calibration = calibration or config.rm.rm.calibration
    return config


def test_the_debias_config_names_every_method():
    assert check_methods(debias_config()) == tuple(STUDY_METHODS)


@pytest.mark.parametrize("changes,message", [
    ({"methods": ("odin", "ppo_magic")}, r"names \['ppo_magic'\]"),
    ({"methods": ("grpo",), "ppo_variants": ("standard", "grpo")}, "both a PPO variant and a method"),
    ({"calibration": "none"}, "needs rm.rm.calibration = 'lowess'"),
])
def test_bad_method_configs_are_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        check_methods(debias_config(**changes))


def test_a_dpo_method_needs_the_dpo_section():
    config = debias_config()
    with config.unlocked():
        del config["dpo"]
    with pytest.raises(ConfigError, match="no 'dpo' section"):
        check_methods(config)


def test_the_demo_has_no_methods():
    assert check_methods(load_config(os.path.join(ROOT, "configs", "demo.py"))) == ()


def test_variants_that_need_their_own_reward_model_are_methods_in_a_study():
    with pytest.raises(ConfigError, match=r"ppo_variants \['odin'\] read a reward-model run"):
        check_methods(debias_config(methods=("dpo",), ppo_variants=("standard", "odin")))


def test_group_size_and_dpo_pairs_are_checked_up_front():
    config = debias_config()
    with config.unlocked():
        config.study.group_size = 5          # does not divide the PPO batch of 32
    with pytest.raises(ConfigError, match="study.group_size = 5"):
        check_methods(config)
    config = debias_config()
    with config.unlocked():
        config.dpo.data.synthetic.beta = 0.0  # unbiased pairs: not the reward model's
    with pytest.raises(ConfigError, match=r"differ in \['synthetic'\]"):
        check_methods(config)
