"""The GPT-2 family: LayerNorm, learned positions, GELU MLP, biases everywhere, tied head.

HF reference: ``transformers.GPT2LMHeadModel``. GPT-2 stores its projections as
``Conv1D`` weights ``[in, out]`` (no transpose needed) and fuses q, k and v into
one ``c_attn`` matrix ``[embed, 3·embed]``.
"""

from __future__ import annotations

import numpy as np

from rlhf_jax.models.config import DecoderConfig
from rlhf_jax.models.errors import UnsupportedModelError
from rlhf_jax.models.families.base import Family, TensorMap, require, reshaped, same

_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
                "relu": "relu"}
_ACTIVATIONS_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}


def config_from_hf(hf: dict, source: str) -> DecoderConfig:
    """Translate a GPT-2 ``config.json`` dict."""
    act = hf.get("activation_function", "gelu_new")
    if act not in _ACTIVATIONS:
        raise UnsupportedModelError(
            f"{source}: activation_function {act!r}; supported: {sorted(_ACTIVATIONS)}")
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("scale_attn_weights") is False:
        raise UnsupportedModelError(
            f"{source}: scale_attn_by_inverse_layer_idx / scale_attn_weights=false are not supported")
    e, heads = require(hf, "n_embd", source), require(hf, "n_head", source)
    return DecoderConfig(
        family="gpt2", vocab_size=require(hf, "vocab_size", source), hidden_size=e,
        intermediate_size=hf.get("n_inner") or 4 * e, num_layers=require(hf, "n_layer", source),
        num_heads=heads, num_kv_heads=heads, head_dim=e // heads,
        max_position_embeddings=hf.get("n_positions", 1024),
        norm="layer", norm_eps=hf.get("layer_norm_epsilon", 1e-5), mlp="plain",
        activation=_ACTIVATIONS[act], qkv_bias=True, out_bias=True, mlp_bias=True,
        position="learned", tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
        bos_token_id=hf.get("bos_token_id"), eos_token_id=hf.get("eos_token_id"),
        pad_token_id=hf.get("pad_token_id"),
    )


def config_to_hf(cfg: DecoderConfig) -> dict:
    """A ``config.json`` dict that ``transformers.GPT2LMHeadModel`` loads."""
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg.vocab_size,
        "n_embd": cfg.hidden_size, "n_inner": cfg.intermediate_size, "n_layer": cfg.num_layers,
        "n_head": cfg.num_heads, "n_positions": cfg.max_position_embeddings,
        "layer_norm_epsilon": cfg.norm_eps, "activation_function": _ACTIVATIONS_TO_HF[cfg.activation],
        "tie_word_embeddings": cfg.tie_word_embeddings, "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id,
        "dtype": "float32",  # exports are written in float32
    }


def _fused_qkv(name: str, layer: tuple, e: int, h: int, d: int, bias: bool) -> TensorMap:
    """``c_attn`` ``[e, 3e]`` (or bias ``[3e]``) ↔ separate q, k, v params ``[e, h, d]`` / ``[h, d]``."""
    suffix = "_bias" if bias else "_proj"
    paths = tuple(layer + ("attn", p + suffix) for p in "qkv")
    our_shape = (h, d) if bias else (e, h, d)

    def to_ours(w):
        return tuple(part.reshape(our_shape) for part in np.split(w, 3, axis=-1))

    def to_hf(q, k, v):
        flat = (-1,) if bias else (e, -1)
        return np.concatenate([q.reshape(flat), k.reshape(flat), v.reshape(flat)], axis=-1)

    return TensorMap(name, paths, (3 * e,) if bias else (e, 3 * e), to_ours, to_hf)


def tensor_maps(cfg: DecoderConfig) -> list:
    """HF tensor ↔ parameter entries for a GPT-2 model."""
    e, f, v, p = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings
    h, d = cfg.num_heads, cfg.head_dim
    blk, layer = "transformer.h.{i}.", ("model", "layers")
    maps = [
        same("transformer.wte.weight", ("model", "embed_tokens", "embedding"), (v, e)),
        same("transformer.wpe.weight", ("model", "embed_positions", "embedding"), (p, e)),
        _fused_qkv(blk + "attn.c_attn.weight", layer, e, h, d, bias=False),
        _fused_qkv(blk + "attn.c_attn.bias", layer, e, h, d, bias=True),
        reshaped(blk + "attn.c_proj.weight", layer + ("attn", "o_proj"), (e, e), (h, d, e), False),
        same(blk + "attn.c_proj.bias", layer + ("attn", "o_bias"), (e,)),
        same(blk + "mlp.c_fc.weight", layer + ("mlp", "up_proj"), (e, f)),
        same(blk + "mlp.c_fc.bias", layer + ("mlp", "up_bias"), (f,)),
        same(blk + "mlp.c_proj.weight", layer + ("mlp", "down_proj"), (f, e)),
        same(blk + "mlp.c_proj.bias", layer + ("mlp", "down_bias"), (e,)),
        same(blk + "ln_1.weight", layer + ("attn_norm", "scale"), (e,)),
        same(blk + "ln_1.bias", layer + ("attn_norm", "bias"), (e,)),
        same(blk + "ln_2.weight", layer + ("mlp_norm", "scale"), (e,)),
        same(blk + "ln_2.bias", layer + ("mlp_norm", "bias"), (e,)),
        same("transformer.ln_f.weight", ("model", "norm", "scale"), (e,)),
        same("transformer.ln_f.bias", ("model", "norm", "bias"), (e,)),
    ]
    if not cfg.tie_word_embeddings:
        maps.append(reshaped("lm_head.weight", ("lm_head", "kernel"), (v, e), (e, v), True))
    return maps


def canonical_hf_name(name: str) -> str:
    """Original GPT-2 checkpoints omit the ``transformer.`` prefix; add it."""
    if name.startswith(("transformer.", "lm_head.")):
        return name
    return "transformer." + name


FAMILY = Family(
    name="gpt2", model_types=("gpt2",), config_from_hf=config_from_hf,
    config_to_hf=config_to_hf, tensor_maps=tensor_maps, canonical_hf_name=canonical_hf_name,
    ignored_hf_names=(r"transformer\.h\.\d+\.attn\.(bias|masked_bias)",),
)
