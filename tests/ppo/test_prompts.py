"""RL and eval prompts from the reward model's own train/eval sides (``preference:train|eval``)."""

import os

import numpy as np

from rlhf_jax.config import load_config
from rlhf_jax.data.builders import load_pairs
from rlhf_jax.data.synthetic import SyntheticTask
from rlhf_jax.ppo.prompts import prompt_set, raw_prompts
from tests.helpers import real_hh_harmless_test

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def hh_study_config(tmp_path):
    path = real_hh_harmless_test()
    return load_config(os.path.join(ROOT, "configs", "hh_harmless", "smollm2.py"),
                       [f"--config.ppo.data.path={path}", f"--config.ppo.data.data_dir={tmp_path}"])


def test_preference_sides_follow_the_reward_model_hold_out(tmp_path):
    config = hh_study_config(tmp_path)
    data = config.ppo.data
    # Independent split: a seeded permutation of the reader's rows, the first 10 % held out.
    pairs = list(load_pairs("hh_rlhf", "test", path=data.path, data_dir=str(tmp_path), empty="drop"))
    order = np.random.default_rng(data.seed).permutation(len(pairs))
    n_eval = int(round(data.eval_fraction * len(pairs)))
    expected_eval = {pairs[i]["prompt"] for i in order[:n_eval]}
    expected_train = {pairs[i]["prompt"] for i in order[n_eval:]}

    sides = {}
    for side in ("preference:train", "preference:eval"):
        with config.ppo.unlocked():
            config.ppo.data.prompt_split = side
        sides[side] = raw_prompts(config.ppo)
        assert len(sides[side]) == len(set(sides[side]))  # distinct
    assert set(sides["preference:eval"]) == expected_eval
    assert set(sides["preference:train"]) == expected_train


def test_study_eval_prompts_are_held_out_and_seeded(tmp_path):
    from rlhf_jax.study import eval_prompts
    config = hh_study_config(tmp_path)
    tokenizer = SyntheticTask().tokenizer()  # any tokenizer: only lengths matter here
    first, again = eval_prompts(config, tokenizer), eval_prompts(config, tokenizer)
    assert first == again and len(first) == config.study.eval_prompts
    assert len({p["prompt"] for p in first}) == len(first)
    with config.ppo.unlocked():
        config.ppo.data.prompt_split = "preference:eval"
    held_out = {p["text"] for p in prompt_set(config.ppo, tokenizer, need=1)}
    assert {p["prompt"] for p in first} <= held_out
