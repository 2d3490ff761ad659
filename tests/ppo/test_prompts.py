"""RL and eval prompts from the reward model's own train/eval sides (``preference:train|eval``)."""

import json
import os

import numpy as np
import pytest

from rlhf_jax.config import ConfigError, load_config
from rlhf_jax.data.sources import load_pairs
from rlhf_jax.data.records import DataError
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

    assert n_eval == 231  # 10 % of the 2,308 non-empty pairs

    sides = {}
    for side in ("preference:train", "preference:eval"):
        with config.ppo.unlocked():
            config.ppo.data.prompt_split = side
        sides[side] = raw_prompts(config.ppo)
        assert len(sides[side]) == len(set(sides[side]))  # distinct
    assert set(sides["preference:train"]) == expected_train
    assert set(sides["preference:eval"]) == expected_eval - expected_train
    assert not set(sides["preference:eval"]) & set(sides["preference:train"])  # held out


def test_eval_side_leaves_out_prompts_shared_with_train(tmp_path, caplog):
    import logging
    rows = [{"chosen": f"\n\nHuman: q{i % 30}\n\nAssistant: yes {i}",
             "rejected": f"\n\nHuman: q{i % 30}\n\nAssistant: no {i}"} for i in range(60)]
    path = tmp_path / "test.jsonl"  # the file name is the split
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = load_config(os.path.join(ROOT, "configs", "hh_harmless", "smollm2.py"),
                         [f"--config.ppo.data.path={path}", f"--config.ppo.data.data_dir={tmp_path}",
                          "--config.ppo.data.eval_fraction=0.5",
                          "--config.ppo.data.prompt_split=preference:eval"])
    with caplog.at_level(logging.INFO):
        held_out = raw_prompts(config.ppo)
    # every prompt heads 2 pairs: a prompt is held out only when both of its pairs were
    order = np.random.default_rng(0).permutation(60)
    eval_rows = set(order[:30].tolist())
    expected = {f"\n\nHuman: q{q}\n\nAssistant:" for q in range(30)
                if q in eval_rows and q + 30 in eval_rows}
    assert set(held_out) == expected
    assert "also a prompt of the train side" in caplog.text


def test_unknown_preference_side_is_a_config_error(tmp_path):
    config = hh_study_config(tmp_path)
    with config.ppo.unlocked():
        config.ppo.data.prompt_split = "preference:test"
    with pytest.raises(ConfigError, match=r"data.prompt_split = 'preference:test'.*preference:eval"):
        raw_prompts(config.ppo)


def test_a_prompt_the_template_cannot_take_is_located(tmp_path, monkeypatch):
    import rlhf_jax.ppo.prompts as prompts
    config = hh_study_config(tmp_path)
    monkeypatch.setattr(prompts, "raw_prompts", lambda _: ["\n\nHuman: ok\n\nAssistant:",
                                                           "stray\n\nHuman: x\n\nAssistant:"])
    with pytest.raises(DataError, match=r"hh_rlhf/preference:train prompt 1: .*'chatml'.*text before"):
        prompt_set(config.ppo, SyntheticTask().tokenizer(), need=1)


def test_study_judge_is_checked_before_any_stage(tmp_path):
    from rlhf_jax.study import run_study
    config = hh_study_config(tmp_path)
    with config.study.unlocked():
        config.study.judge = "gold"
    with pytest.raises(ConfigError, match=r"study.judge = 'gold': expected one of \('score',\)"):
        run_study(config, str(tmp_path / "study"))
    assert not os.path.exists(tmp_path / "study")


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
