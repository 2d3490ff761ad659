"""Named HF-style configs for tests, benchmarks and demos (random weights).

``preset_config("tiny-llama")`` returns a ``config.json`` dict that both
``transformers`` and :func:`rlhf_jax.models.config_from_hf` read.
"""

from __future__ import annotations

import copy

def _llama2(*, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int) -> dict:
    return {"model_type": "llama", "vocab_size": 32000, "hidden_size": hidden,
            "intermediate_size": intermediate, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "head_dim": hidden // heads, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "tie_word_embeddings": False, "hidden_act": "silu",
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


_PRESETS = {
    # Grouped-query attention (4 query heads share 2 kv heads), untied head, non-default theta.
    "tiny-llama": {
        "model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
        "rope_theta": 50000.0, "tie_word_embeddings": False, "hidden_act": "silu",
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
    },
    "tiny-llama-tied": {
        "model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 3, "num_attention_heads": 8, "num_key_value_heads": 2,
        "head_dim": 8, "max_position_embeddings": 512, "rms_norm_eps": 1e-6,
        "rope_theta": 100000.0, "tie_word_embeddings": True, "hidden_act": "silu",
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
    },
    "tiny-gpt2": {
        "model_type": "gpt2", "vocab_size": 256, "n_embd": 64, "n_layer": 2, "n_head": 4,
        "n_positions": 512, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
    },
    # The shape of LLaMA-7B (the paper's policy and reward models), for sizing and AOT compiles.
    "llama-7b": {
        "model_type": "llama", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "head_dim": 128, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "tie_word_embeddings": False, "hidden_act": "silu",
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
    },
    # Llama-2 shapes (meta-llama/Llama-2-{7b,13b,70b}-hf config.json), for `rlhf-jax fit`.
    "llama-2-7b": _llama2(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32),
    "llama-2-13b": _llama2(hidden=5120, intermediate=13824, layers=40, heads=40, kv_heads=40),
    "llama-2-70b": _llama2(hidden=8192, intermediate=28672, layers=80, heads=64, kv_heads=8),
    # The shape of SmolLM2-135M: a 135M-class Llama for benchmarks.
    "llama-135m": {
        "model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "head_dim": 64, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0, "tie_word_embeddings": True, "hidden_act": "silu",
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
    },
}


def preset_names() -> list:
    return sorted(_PRESETS)


def preset_config(name: str) -> dict:
    """A fresh copy of the named HF config dict."""
    if name not in _PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {preset_names()}")
    return copy.deepcopy(_PRESETS[name])
