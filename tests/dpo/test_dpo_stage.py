"""The DPO stage: sequence log-probs against a NumPy log-softmax, the pair tokenisation, and
``rlhf-jax dpo`` end to end on the synthetic task, where the first step has a known loss.

At step 0 the policy is the reference, so every log-ratio is 0: DPO's loss is exactly log 2,
and R-DPO's is mean(−log σ(α(|y_w| − |y_l|))), computed here in NumPy from the tokenised
lengths. With LoRA the reference is the frozen base with the adapters off, which at step 0 is
the policy too: the same log 2 checks that path.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import cli
from rlhf_jax.data import pipeline
from rlhf_jax.dpo.train import pair_logprobs, sequence_logprobs
from rlhf_jax.models import CausalLM, config_from_hf, init_params
from rlhf_jax.models.presets import preset_config

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "configs",
                      "synthetic", "dpo.py")
SMALL = ["--config.model.init=preset:tiny-llama",
         "--config.model.overrides={'vocab_size': 192, 'bos_token_id': 3, 'eos_token_id': 1, "
         "'pad_token_id': 0}",
         "--config.data.synthetic.num_train=128", "--config.data.synthetic.num_eval=64",
         "--config.dpo.batch_size=16", "--config.dpo.eval_batch_size=32",
         "--config.dpo.log_every=1", "--config.dpo.eval_every=4", "--config.dpo.eval_prompts=8",
         "--config.dpo.eval_max_new_tokens=12", "--config.dpo.lr=1e-3"]


def numpy_sequence_logprobs(logits, ids, loss_mask):
    logits = np.asarray(logits, np.float64)[:, :-1]
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, np.asarray(ids)[:, 1:, None], -1)[..., 0]
    counted = np.asarray(loss_mask)[:, 1:]
    return (picked * counted).sum(-1), counted.sum(-1)


@pytest.mark.parametrize("tied", [True, False])
def test_sequence_logprobs_match_a_numpy_log_softmax(tied):
    hf = {**preset_config("tiny-llama"), "tie_word_embeddings": tied}
    model = CausalLM(config_from_hf(hf))
    params = init_params(model, jax.random.key(3))
    rng = np.random.default_rng(0)
    ids = rng.integers(4, model.config.vocab_size, (3, 11)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[2, 8:] = 0  # right padding
    loss_mask = np.zeros_like(ids)
    loss_mask[0, 4:] = 1
    loss_mask[1, 1:] = 1
    loss_mask[2, 5:8] = 1
    got, count = sequence_logprobs(params, jnp.asarray(ids), jnp.asarray(mask),
                                   jnp.asarray(loss_mask), model=model)
    logits = model.apply({"params": params}, ids, attention_mask=mask).logits
    want, want_count = numpy_sequence_logprobs(logits, ids, loss_mask)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_array_equal(count, want_count)
    batch = {"chosen_ids": ids[:2], "chosen_mask": mask[:2], "chosen_loss_mask": loss_mask[:2],
             "rejected_ids": ids[1:], "rejected_mask": mask[1:], "rejected_loss_mask": loss_mask[1:]}
    pc, pr, lc, lr = pair_logprobs(params, batch, model=model)
    np.testing.assert_allclose(np.concatenate([pc, pr]), np.concatenate([want[:2], want[1:]]),
                               rtol=1e-5)
    np.testing.assert_array_equal(np.concatenate([lc, lr]), [7, 10, 10, 3])


class WordTokenizer:
    """Whitespace words → ids (the pipeline only needs these calls)."""
    eos_token_id, pad_token_id, bos_token_id = 1, 0, None

    def __init__(self):
        self.vocab = {}

    def __call__(self, texts, add_special_tokens=False):
        ids = [[self.vocab.setdefault(w, len(self.vocab) + 2) for w in t.split()] for t in texts]
        return {"input_ids": ids}


def test_pairs_are_tokenised_with_response_masks_and_long_ones_dropped():
    pairs = [{"id": "a", "prompt": "tell me", "chosen": "one two three", "rejected": "four"},
             {"id": "b", "prompt": "tell me", "chosen": "x " * 30, "rejected": "y"}]
    out, drops = pipeline.tokenize_preference_responses(pairs, WordTokenizer(), max_length=12)
    assert [e["id"] for e in out] == ["a"] and drops.counts == {
        "longer than max_length=12 tokens": 1}
    (e,) = out
    prompt = len(e["chosen_ids"]) - 4  # three words and EOS
    assert e["chosen_ids"][-1] == 1 and e["rejected_ids"][-1] == 1
    assert e["chosen_loss_mask"].tolist() == [0] * prompt + [1] * 4
    assert e["rejected_loss_mask"].tolist() == [0] * prompt + [1] * 2
    np.testing.assert_array_equal(e["chosen_ids"][:prompt], e["rejected_ids"][:prompt])
    batch = pipeline.collate_preference_responses(out, batch_size=2, width=16, pad_id=0)
    assert batch["chosen_ids"].shape == (2, 16) and batch["weight"].tolist() == [1.0, 0.0]
    assert batch["rejected_loss_mask"][0].sum() == 2


def run_dpo(tmp_path, name, *extra):
    workdir = str(tmp_path / name)
    argv = ["dpo", "--config", CONFIG + (f":{name.split('_')[0]}" if name != "dpo" else ""),
            "--workdir", workdir, *SMALL, *extra]
    assert cli.main(argv) == 0
    with open(os.path.join(workdir, "result.json")) as f:
        result = json.load(f)
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return workdir, result, rows


def first_batch_lengths(workdir):
    """(|y_w|, |y_l|) of the real rows of the stage's first training batch, rebuilt from its
    recorded config as the stage builds it (same pairs, tokenizer, shuffle seed)."""
    import ml_collections

    from rlhf_jax.data.preferences import preference_splits
    from rlhf_jax.stage import experiment_tokenizer
    with open(os.path.join(workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    tokenizer = experiment_tokenizer(config)
    train, _ = preference_splits(config.data)
    out, _ = pipeline.tokenize_preference_responses(
        train, tokenizer, template=config.data.prompt_template, max_length=config.data.max_length)
    first = pipeline.batches(out, pipeline.collate_preference_responses,
                             batch_size=config.dpo.batch_size, buckets=tuple(config.data.buckets),
                             pad_id=pipeline.pad_token_id(tokenizer), seed=config.seed)[0]
    real = first["weight"] > 0
    return (first["chosen_loss_mask"].sum(1)[real], first["rejected_loss_mask"].sum(1)[real])


@pytest.mark.slow
def test_dpo_starts_at_log_2_and_learns_the_pairs(tmp_path):
    workdir, result, rows = run_dpo(tmp_path, "dpo")
    train = [r for r in rows if r["split"] == "train"]
    assert train[0]["loss"] == pytest.approx(np.log(2), abs=1e-6)
    assert train[0]["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert result["reference"] == "batch" and result["steps"] == 8
    evals = [r for r in rows if r["split"] == "eval"]
    assert evals[-1]["reward_margin"] > 0 and evals[-1]["loss"] < np.log(2)
    assert 1 <= evals[-1]["sampled_length"] <= 12
    assert os.path.exists(os.path.join(workdir, "export", "model.safetensors"))


@pytest.mark.slow
def test_lora_dpo_takes_its_reference_from_the_base(tmp_path):
    _, result, rows = run_dpo(tmp_path, "dpo_lora", "--config.model.lora_rank=4")
    assert result["reference"] == "base"
    assert rows[0]["loss"] == pytest.approx(np.log(2), abs=1e-6)


@pytest.mark.slow
def test_rdpo_first_loss_is_the_length_term_alone(tmp_path):
    workdir, result, rows = run_dpo(tmp_path, "rdpo", "--config.dpo.alpha=0.05")
    chosen, rejected = first_batch_lengths(workdir)
    delta = (chosen - rejected).astype(np.float64)
    assert np.any(delta != 0)  # the length term is not trivially log 2
    want = np.mean(np.log1p(np.exp(-0.05 * delta)))
    assert rows[0]["loss"] == pytest.approx(want, rel=1e-5)
    assert result["reference"] == "batch"


@pytest.mark.slow
def test_simpo_runs_without_a_reference(tmp_path):
    _, result, rows = run_dpo(tmp_path, "simpo")
    assert result["reference"] == "none"
    evals = [r for r in rows if r["split"] == "eval"]
    assert evals[-1]["reward_margin"] > evals[0]["reward_margin"]
