"""Reward-model scoring against the paper's path: a transformers text-classification pipeline.

The paper's code scores ``qaform(q, r)`` with ``pipeline("sentiment-analysis",
function_to_apply="none", truncation=True)``: the tokenizer's special tokens (LLaMA:
BOS) and no EOS. The tokenizer here adds a BOS as LLaMA's does, so a convention that
drops or adds special tokens would show.
"""

import copy

import jax
import numpy as np
import pytest
from tokenizers.processors import TemplateProcessing

from rlhf_jax.data.pipeline import reward_model_ids
from rlhf_jax.data.synthetic import SyntheticTask
from rlhf_jax.data.templates import rm_text
from rlhf_jax.models import ScalarModel, config_from_hf, init_params
from rlhf_jax.models.build import save_scalar_model
from rlhf_jax.models.presets import preset_config
from rlhf_jax.reward.scoring import RewardScorer

PROMPTS = ["tell me about fruit", "talk about game", "describe color"]
RESPONSES = ["apple banana apple", "game " * 40, ""]


def bos_tokenizer():
    tok = SyntheticTask().tokenizer()
    bos = tok.convert_tokens_to_ids("<bos>")
    tok = copy.deepcopy(tok)
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)])
    return tok


@pytest.fixture(scope="module")
def rm(tmp_path_factory):
    hf = {**preset_config("tiny-llama"), "vocab_size": 181, "eos_token_id": 1, "pad_token_id": 0}
    model = ScalarModel(config_from_hf(hf))
    params = init_params(model, jax.random.key(3))
    params["score"]["bias"] = np.zeros_like(params["score"]["bias"])  # HF's score has no bias
    path = str(tmp_path_factory.mktemp("rm"))
    save_scalar_model(model, params, path)
    return model, params, path


def test_inputs_and_scores_match_the_transformers_pipeline(rm):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForSequenceClassification, pipeline
    model, params, path = rm
    tok = bos_tokenizer()
    tok.model_max_length = 32  # the pipeline's truncation limit; the second text is longer
    reference = pipeline("text-classification", model=AutoModelForSequenceClassification.from_pretrained(
        path, torch_dtype=torch.float32), tokenizer=tok, function_to_apply="none", top_k=None)
    scorer = RewardScorer(model, params, tok, template="question_answer", max_length=32,
                          buckets=(16, 32), batch_size=2)
    texts = [rm_text(p, r, "question_answer") for p, r in zip(PROMPTS, RESPONSES)]
    want_ids = [reference.preprocess(t, truncation=True)["input_ids"][0].tolist() for t in texts]
    got_ids = [x.tolist() for x in scorer.token_ids(PROMPTS, RESPONSES)]
    assert got_ids == want_ids
    assert got_ids[0][0] == tok.convert_tokens_to_ids("<bos>") and len(got_ids[1]) == 32
    assert all(tok.eos_token_id not in ids for ids in got_ids)
    want = [out[0]["score"] for out in reference(texts, truncation=True)]
    np.testing.assert_allclose(scorer(PROMPTS, RESPONSES), want, atol=1e-4)


def test_append_eos_keeps_eos_last_under_truncation(rm):
    model, params, _ = rm
    tok = bos_tokenizer()
    scorer = RewardScorer(model, params, tok, template="question_answer", max_length=16,
                          buckets=(16,), append_eos=True)
    ids = scorer.token_ids(PROMPTS, RESPONSES)
    assert all(x[-1] == tok.eos_token_id and len(x) <= 16 for x in ids)
    assert len(ids[1]) == 16
    plain = reward_model_ids(tok, [rm_text(PROMPTS[0], RESPONSES[0], "question_answer")])[0]
    assert ids[0].tolist() == plain.tolist() + [tok.eos_token_id]


def test_append_eos_without_an_eos_token_is_an_error(rm):
    model, params, _ = rm
    tok = bos_tokenizer()
    tok.eos_token = None
    with pytest.raises(ValueError, match="has no EOS token, which append_eos needs"):
        RewardScorer(model, params, tok, template="question_answer", max_length=16,
                     buckets=(16,), append_eos=True)


def test_ppo_reward_model_is_sharded_over_the_mesh_and_scores_the_same():
    """PPO's frozen reward model on 8 devices (fsdp 4 × tensor 2): every leaf over 1k values is
    sharded, bfloat16 storage when asked, and the scores equal the one-device scores."""
    from tests.helpers import run_multidevice_script
    out = run_multidevice_script("sharded_scorer.py")
    for dtype, tol in (("float32", 1e-5), ("bfloat16", 2e-2)):
        r = out[dtype]
        assert r["n"] == 12 and r["devices"] == 8
        assert r["dtypes"] == [dtype]
        assert r["sharded_leaves"] > 0 and r["replicated_over_1k"] == 0, r
        assert r["max_abs_diff"] <= tol * max(1.0, r["scale"]), r
