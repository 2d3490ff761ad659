"""PPO's bad-input errors: each says which key or quantity is wrong."""

import os
import re

import numpy as np
import pytest

from rlhf_jax.config import ConfigError, load_config
from rlhf_jax.ppo.trainer import PPOTrainer, check_finite

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "synthetic", "ppo.py")
BASE = ["--config.model.init=preset:tiny-llama", "--config.reward.model="]


def trainer(tmp_path, variant="lppo", extra=()):
    return PPOTrainer(load_config(f"{CONFIG}:{variant}", [*BASE, *extra]), str(tmp_path))


@pytest.mark.parametrize("override,message", [
    ("--config.shaping.shapers=('length_only', 'length_bonus')",
     "'shaping.shapers': unknown shaper(s) ['length_bonus']; registered: ["),
    ("--config.shaping.length_penalty_variant=text", "'shaping.length_penalty_variant' = 'text'"),
    ("--config.ppo.ratio_skip=drop", "'ppo.ratio_skip' = 'drop'"),
    ("--config.shaping.window_groups=3", "window_groups 3 must split ppo.batch_size 32"),
    ("--config.shaping.shapers=()", "needs 'length_only' in shaping.shapers"),
    ("--config.shaping.omit_long=drop", "'shaping.omit_long' = 'drop'"),
    ("--config.ppo.value_model=twin", "'ppo.value_model' = 'twin'"),
    ("--config.ppo.mini_batch_size=5", "not a multiple of ppo.mini_batch_size 5"),
    ("--config.generation.min_new_tokens=50", "min_new_tokens < generation.max_new_tokens"),
])
def test_bad_ppo_settings_name_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        trainer(tmp_path, extra=[override])


def test_reward_model_required_for_model_rewards(tmp_path):
    with pytest.raises(ConfigError, match="'reward.model' is empty"):
        trainer(tmp_path, variant="standard")


def test_empty_prompt_set_after_filtering(tmp_path):
    with pytest.raises(ConfigError, match=r"only 0 prompts of synthetic/train left .*max_prompt_length=1"):
        trainer(tmp_path, extra=["--config.data.max_prompt_length=1"])


def test_non_finite_statistics_are_named():
    check_finite({"loss/value": 1.0})
    with pytest.raises(FloatingPointError, match="non-finite loss/policy, objective/kl"):
        check_finite({"loss/policy": float("nan"), "objective/kl": float("inf"), "ok": 0.0})


def test_reference_that_does_not_match_the_policy(tmp_path):
    t = trainer(tmp_path, extra=["--config.ppo.reference=preset:tiny-llama-tied"])
    with pytest.raises(ConfigError, match=r"reference preset:tiny-llama-tied does not match the "
                                          r"policy: parameter .* has shape"):
        t.build()


def test_rl_prompts_from_real_hh_rlhf_are_distinct_and_length_filtered(tmp_path):
    import gzip
    import json

    from rlhf_jax.data.synthetic import SyntheticTask
    from rlhf_jax.ppo.prompts import prompt_set
    from tests.helpers import real_hh_harmless_test
    path = real_hh_harmless_test()
    config = load_config(f"{CONFIG}:lppo", [*BASE, "--config.data.source=hh_rlhf",
                                            f"--config.data.path={path}",
                                            "--config.data.prompt_split=test",
                                            f"--config.data.data_dir={tmp_path}",
                                            "--config.data.options={'empty': 'drop'}",
                                            "--config.data.max_prompt_length=60"])
    tokenizer = SyntheticTask().tokenizer()
    prompts = prompt_set(config, tokenizer)
    # Independent count: the shared dialogue prefix of each row, deduplicated, < 60 whitespace words
    # (the task's tokenizer splits on whitespace).
    distinct = set()
    with gzip.open(path, "rt") as f:
        for line in f:
            row = json.loads(line)
            chosen, rejected = row["chosen"], row["rejected"]
            cut = chosen.rfind("\n\nAssistant:") + len("\n\nAssistant:")
            if chosen[cut:].strip() and rejected[cut:].strip() and chosen[:cut] == rejected[:cut]:
                distinct.add(chosen[:cut])
    expected = {p for p in distinct if len(p.split()) < 60}  # the paper keeps len < 512
    got = {p["text"] for p in prompts}
    assert len(got & expected) >= len(expected) - 5
    assert abs(len(got) - len(expected)) <= 5  # rows whose two dialogues diverge earlier differ
    assert all(len(p["ids"]) < 60 for p in prompts)


@pytest.mark.parametrize("spec,message", [
    ("no_colon", "expected 'module:function'"),
    ("rlhf_jax.data.synthetic:missing", "has no attribute 'missing'"),
])
def test_bad_reward_function_is_named(tmp_path, spec, message):
    with pytest.raises(ConfigError, match=f"'reward.function' = '{spec}'.*{message}"):
        trainer(tmp_path, variant="standard", extra=["--config.reward.kind=function",
                                                     f"--config.reward.function={spec}"])


@pytest.mark.slow
def test_function_reward_trains_on_the_gold_judge(tmp_path):
    from rlhf_jax.ppo.trainer import train_ppo
    config = load_config(f"{CONFIG}:standard", [
        *BASE, "--config.model.overrides.vocab_size=192", "--config.reward.kind=function",
        "--config.reward.function=rlhf_jax.data.synthetic:gold_reward", "--config.ppo.steps=2"])
    result = train_ppo(config, str(tmp_path))
    assert len(result["history"]) == 2
    assert all(np.isfinite(r["env/reward_raw"]) for r in result["history"])
