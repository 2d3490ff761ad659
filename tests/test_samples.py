"""Samples JSONL: N samples per prompt, reward-model scores equal to one-at-a-time forwards, bad files."""

import jax
import numpy as np
import pytest

from rlhf_jax.data.records import DataError
from rlhf_jax.data.synthetic import SyntheticTask
from rlhf_jax.models import CausalLM, ScalarModel, config_from_hf, init_params
from rlhf_jax.models.presets import preset_config
from rlhf_jax.samples import (generate_samples, read_jsonl, read_prompts, score_samples,
                              write_jsonl)


@pytest.fixture(scope="module")
def setup():
    hf = {**preset_config("tiny-llama"), "vocab_size": 181, "eos_token_id": 1}
    policy = CausalLM(config_from_hf(hf))
    rm = ScalarModel(config_from_hf(hf))
    return {"policy": policy, "policy_params": init_params(policy, jax.random.key(0)), "rm": rm,
            "rm_params": init_params(rm, jax.random.key(1)), "tok": SyntheticTask().tokenizer()}


def test_generate_and_score(setup, tmp_path):
    tok = setup["tok"]
    prompts = [{"id": "p0", "prompt": "tell me about fruit"}, {"id": "p1", "prompt": "talk about game"},
               {"id": "p2", "prompt": "describe color"}]
    rows = generate_samples(setup["policy"], setup["policy_params"], tok, prompts, samples_per_prompt=3,
                            max_new_tokens=12, temperature=0.9, top_p=0.9, repetition_penalty=1.2,
                            batch_size=4, bucket=8)
    assert [(r["prompt_id"], r["sample_id"]) for r in rows] == [(p["id"], s) for p in prompts
                                                                 for s in range(3)]
    for r in rows:
        ids = tok(r["text"], add_special_tokens=False)["input_ids"]
        # Special tokens a random model may emit are dropped from the text, not from the length.
        assert len(ids) + int(r["eos"]) <= r["length"] <= 12 and r["length"] > 0
    path = str(tmp_path / "s.jsonl")
    write_jsonl(rows, path)
    scored = score_samples(read_jsonl(path), setup["rm"], setup["rm_params"], tok,
                           template="{prompt} {response}", batch_size=4, buckets=(16, 32))
    for r in scored:
        ids = tok(f"{r['prompt']} {r['text']}")["input_ids"]  # no EOS appended, as the paper
        direct = setup["rm"].apply({"params": setup["rm_params"]}, np.asarray([ids], np.int32)).values
        assert r["score"] == pytest.approx(float(direct[0]), abs=1e-5)


def test_bad_files_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": 3}\n')
    with pytest.raises(DataError, match=r"bad.jsonl row 1 \(line 2\): key 'prompt'"):
        read_prompts(str(path))
    path.write_text('{"prompt": "a"}\nnot json\n')
    with pytest.raises(DataError, match=r"bad.jsonl row 1 \(line 2\): broken JSON"):
        read_jsonl(str(path))
