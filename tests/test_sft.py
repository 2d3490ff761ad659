"""The SFT stage on the synthetic task, its export in transformers, and bad SFT files."""

import json
import os

import numpy as np
import pytest

from rlhf_jax.data.records import DataError
from rlhf_jax.sft import read_sft_jsonl

@pytest.fixture(scope="module")
def sft_run(demo_study):
    """The demo study's SFT stage (``configs/synthetic/sft.py``)."""
    workdir = os.path.join(demo_study[0], "sft")
    return workdir, json.load(open(os.path.join(workdir, "result.json")))


@pytest.mark.slow
def test_sft_learns_the_demonstrations(sft_run):
    workdir, result = sft_run
    first_eval = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))
                  if '"eval"' in line][0]
    # Uniform over the 192-entry vocabulary would be ln(192) = 5.26 nats; the demonstrations are
    # shuffled bags of ~8 topic words and fillers, so ≈ ln(24) = 3.2 is the floor without memorising.
    assert result["eval"]["loss"] < 3.6 and result["eval"]["loss"] <= first_eval["loss"]
    assert 0 < result["best_step"] <= result["last_step"] == result["steps"]


@pytest.mark.slow
def test_sft_export_matches_transformers(sft_run):
    torch = pytest.importorskip("torch", reason="the transformers reference needs CPU torch")
    import transformers

    from rlhf_jax.models import load_pretrained
    export = os.path.join(sft_run[0], "export")
    model, params = load_pretrained(export)
    tokenizer = transformers.AutoTokenizer.from_pretrained(export)
    enc = tokenizer(["tell me about fruit apple banana", "talk about game"], padding=True,
                    return_tensors="np")
    ours = np.asarray(model.apply({"params": params}, enc["input_ids"],
                                  attention_mask=enc["attention_mask"]).logits)
    hf = transformers.AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(enc["input_ids"]),
                    attention_mask=torch.tensor(enc["attention_mask"])).logits.numpy()
    real = enc["attention_mask"].astype(bool)
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4)


@pytest.mark.parametrize("line,message", [
    ('{"prompt": "q"}', r"\(line 2\): key 'response' is missing"),
    ('{"prompt": "q", "response": 3}', r"\(line 2\): key 'response'"),
    ('{"prompt": "q", "response": "  "}', r"\(line 2\): key 'response'"),
    ('{"prompt": "q", ', r"row 1 \(line 2\): broken JSON"),
    ('["q", "a"]', r"row 1 \(line 2\): expected a JSON object"),
])
def test_bad_sft_rows_name_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "demos.jsonl"
    path.write_text('{"prompt": "p", "response": "r"}\n' + line + "\n")
    with pytest.raises(DataError, match=message):
        read_sft_jsonl(str(path))
    with pytest.raises(DataError, match="demos.jsonl"):
        read_sft_jsonl(str(path))
