"""PyTorch (transformers) reference models for parity tests and benchmarks. Needs torch.

Not used by the library itself: this is the independent implementation our
models are checked and timed against.
"""

from __future__ import annotations

import numpy as np

NORM_WEIGHT_SUFFIXES = ("norm.weight", "ln_1.weight", "ln_2.weight", "ln_f.weight")


def random_torch_model(hf_config: dict, seed: int = 0, attn_implementation: str = "eager"):
    """A float32 transformers model with random weights large enough to matter.

    Linear weights ~ N(0, 1/fan_in), norm weights ~ 1 + N(0, 0.1²), biases ~
    N(0, 0.1²): logits spread over several units, so a parity test can fail and
    greedy decoding is not a run of near-ties.
    """
    import torch
    import transformers
    torch.manual_seed(seed)
    config = transformers.AutoConfig.for_model(**hf_config)
    model = transformers.AutoModelForCausalLM.from_config(
        config, attn_implementation=attn_implementation, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.1 if p.ndim == 1 else 1.0 / np.sqrt(p.shape[-1])
            base = 1.0 if name.endswith(NORM_WEIGHT_SUFFIXES) else 0.0
            p.copy_(base + scale * torch.randn_like(p))
    return model


def torch_logits(model, ids, mask) -> np.ndarray:
    """Reference logits with HF-style position ids ``max(cumsum(mask) − 1, 0)`` for left padding."""
    import torch
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions))
    return out.logits.numpy()
