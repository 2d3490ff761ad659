"""The reward-model stage end to end on the synthetic task (Singhal et al. Table 4's direction).

With a strong length bias in the labels (β = 0.3 per word against α = 1 per
quality point), a tiny reward model's eval accuracy is well above chance and
its reward tracks length; trained on BAL-balanced pairs, the reward–length
correlation drops (the paper's Table 4 direction), asserted with a margin.
The export loads in transformers (``LlamaForSequenceClassification``) and gives
the same scores; a rerun in a finished workdir returns its result.
"""

import json
import os

import numpy as np
import pytest

from rlhf_jax.config import load_config
from rlhf_jax.reward.train import train_reward_model

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "synthetic", "rm.py")


@pytest.fixture(scope="module")
def runs(demo_study):
    """The demo study's standard and BAL reward models (``configs/synthetic/rm.py:none|bal``)."""
    workdir, _ = demo_study
    return {variant: (os.path.join(workdir, sub), json.load(open(os.path.join(workdir, sub,
                                                                             "result.json"))))
            for variant, sub in (("none", "rm"), ("bal", "rm_bal"))}


@pytest.mark.slow
def test_length_biased_reward_model_and_bal(runs):
    standard, balanced = runs["none"][1], runs["bal"][1]
    assert standard["data"]["train"]["length_heuristic"] > 0.7  # the labels favour length
    assert standard["eval"]["accuracy"] > 0.7
    assert standard["eval"]["reward_length_corr"] > 0.6
    assert balanced["data"]["train"]["length_heuristic"] <= 0.5
    assert balanced["eval"]["reward_length_corr"] < standard["eval"]["reward_length_corr"] - 0.2


@pytest.mark.slow
def test_workdir_contents_and_rerun(runs):
    workdir, result = runs["none"]
    for name in ("config.json", "metrics.jsonl", "result.json", "export/config.json",
                 "export/model.safetensors", "export/tokenizer.json"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    assert os.listdir(os.path.join(workdir, "checkpoints"))
    assert train_reward_model(load_config(f"{CONFIG}:none"), workdir) == result


@pytest.mark.slow
def test_export_matches_transformers_sequence_classifier(runs):
    torch = pytest.importorskip("torch", reason="the transformers reference needs CPU torch")
    import transformers

    from rlhf_jax.data.synthetic import SyntheticTask
    from rlhf_jax.models.build import load_scalar_model
    export = os.path.join(runs["none"][0], "export")
    model, params = load_scalar_model(export)
    tokenizer = transformers.AutoTokenizer.from_pretrained(export)
    texts = [f"{p['prompt']} {p['chosen']}" for p in
             SyntheticTask().preference_pairs(4, alpha=1.0, beta=0.3, seed=9)]
    enc = tokenizer(texts, padding=True, return_tensors="np")
    ours = np.asarray(model.apply({"params": params}, enc["input_ids"],
                                  attention_mask=enc["attention_mask"]).values)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        export, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(enc["input_ids"]),
                    attention_mask=torch.tensor(enc["attention_mask"])).logits[:, 0].numpy()
    bias = float(params["score"]["bias"])  # transformers' score layer has no bias
    np.testing.assert_allclose(ours - bias, theirs, atol=1e-4)


@pytest.mark.slow
def test_confidence_truncation_runs_cartography_then_retrains(tmp_path):
    overrides = ["--config.data.synthetic.num_train=640", "--config.data.synthetic.num_eval=128",
                 "--config.rm.eval_every=1000", "--config.rm.ctr.high=1.0"]
    result = train_reward_model(load_config(f"{CONFIG}:ctr", overrides), str(tmp_path))
    first = os.path.join(tmp_path, "cartography")
    assert os.path.exists(os.path.join(first, "cartography.jsonl"))
    assert os.path.exists(os.path.join(first, "cartography.png"))
    kept = result["data"]["train"]["pairs"]
    assert 0 < kept < result["data"]["train_before_intervention"]["pairs"]
    from rlhf_jax.reward import cartography
    stats = cartography.confidence_and_variability(
        cartography.read_passes(os.path.join(first, "cartography.jsonl")))
    assert kept == sum(c <= 1.0 for c, _ in stats.values())
    assert np.isfinite(result["eval"]["accuracy"])
