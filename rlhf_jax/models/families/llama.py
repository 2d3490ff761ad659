"""The Llama family (Llama 1–3, SmolLM, TinyLlama, …): RMSNorm, RoPE, SwiGLU, GQA.

HF reference: ``transformers.LlamaForCausalLM``. Tensor names are
``model.layers.{i}.self_attn.q_proj.weight`` and so on; ``lm_head.weight`` is
absent when embeddings are tied.
"""

from __future__ import annotations

from rlhf_jax.models.config import DecoderConfig
from rlhf_jax.models.errors import UnsupportedModelError
from rlhf_jax.models.families.base import Family, require, reshaped, same, transposed

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


def read_rope(hf: dict, source: str) -> tuple:
    """``(rope_theta, rope_scaling)`` from either config layout.

    transformers ≥ 5 writes ``rope_parameters: {rope_type, rope_theta, …}``;
    older files write ``rope_theta`` and ``rope_scaling: {type|rope_type, …}``.
    """
    params = dict(hf.get("rope_parameters") or {})
    theta = params.pop("rope_theta", hf.get("rope_theta", 10000.0))
    scaling = params or dict(hf.get("rope_scaling") or {})
    kind = scaling.pop("rope_type", scaling.pop("type", "default"))
    if kind not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedModelError(
            f"{source}: rope type {kind!r} (config key rope_parameters/rope_scaling) is not "
            f"supported; supported: {SUPPORTED_ROPE_TYPES}")
    if kind == "default":
        return float(theta), None
    return float(theta), tuple(sorted({"rope_type": kind, **scaling}.items()))


def _token_id(value):
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value) if len(value) > 1 else int(value[0])
    return value


def config_from_hf(hf: dict, source: str) -> DecoderConfig:
    """Translate a Llama ``config.json`` dict."""
    if hf.get("hidden_act", "silu") != "silu":
        raise UnsupportedModelError(f"{source}: hidden_act {hf['hidden_act']!r}; expected 'silu'")
    heads = require(hf, "num_attention_heads", source)
    hidden = require(hf, "hidden_size", source)
    theta, scaling = read_rope(hf, source)
    return DecoderConfig(
        family="llama",
        vocab_size=require(hf, "vocab_size", source),
        hidden_size=hidden,
        intermediate_size=require(hf, "intermediate_size", source),
        num_layers=require(hf, "num_hidden_layers", source),
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hidden // heads,
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        norm="rms", norm_eps=hf.get("rms_norm_eps", 1e-6),
        mlp="gated", activation="silu",
        qkv_bias=bool(hf.get("attention_bias", False)),
        out_bias=bool(hf.get("attention_bias", False)),
        mlp_bias=bool(hf.get("mlp_bias", False)),
        position="rope", rope_theta=theta, rope_scaling=scaling,
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        bos_token_id=_token_id(hf.get("bos_token_id")),
        eos_token_id=_token_id(hf.get("eos_token_id")),
        pad_token_id=_token_id(hf.get("pad_token_id")),
    )


def config_to_hf(cfg: DecoderConfig) -> dict:
    """A ``config.json`` dict that ``transformers.LlamaForCausalLM`` loads."""
    if cfg.qkv_bias != cfg.out_bias:
        raise UnsupportedModelError("Llama configs have one attention_bias for q, k, v and o")
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta, **cfg.rope_scaling_dict}
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim, "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.norm_eps, "hidden_act": "silu", "rope_parameters": rope,
        "attention_bias": cfg.qkv_bias, "mlp_bias": cfg.mlp_bias,
        "tie_word_embeddings": cfg.tie_word_embeddings, "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id,
        "dtype": "float32",  # exports are written in float32
    }


def tensor_maps(cfg: DecoderConfig) -> list:
    """HF tensor ↔ parameter entries for a Llama model."""
    e, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    h, k, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    att, mlp = "model.layers.{i}.self_attn.", "model.layers.{i}.mlp."
    layer = ("model", "layers")
    maps = [
        same("model.embed_tokens.weight", ("model", "embed_tokens", "embedding"), (v, e)),
        reshaped(att + "q_proj.weight", layer + ("attn", "q_proj"), (h * d, e), (e, h, d), True),
        reshaped(att + "k_proj.weight", layer + ("attn", "k_proj"), (k * d, e), (e, k, d), True),
        reshaped(att + "v_proj.weight", layer + ("attn", "v_proj"), (k * d, e), (e, k, d), True),
        reshaped(att + "o_proj.weight", layer + ("attn", "o_proj"), (e, h * d), (h, d, e), True),
        transposed(mlp + "gate_proj.weight", layer + ("mlp", "gate_proj"), (f, e)),
        transposed(mlp + "up_proj.weight", layer + ("mlp", "up_proj"), (f, e)),
        transposed(mlp + "down_proj.weight", layer + ("mlp", "down_proj"), (e, f)),
        same("model.layers.{i}.input_layernorm.weight", layer + ("attn_norm", "scale"), (e,)),
        same("model.layers.{i}.post_attention_layernorm.weight", layer + ("mlp_norm", "scale"), (e,)),
        same("model.norm.weight", ("model", "norm", "scale"), (e,)),
    ]
    if cfg.qkv_bias:
        maps += [
            reshaped(att + "q_proj.bias", layer + ("attn", "q_bias"), (h * d,), (h, d), False),
            reshaped(att + "k_proj.bias", layer + ("attn", "k_bias"), (k * d,), (k, d), False),
            reshaped(att + "v_proj.bias", layer + ("attn", "v_bias"), (k * d,), (k, d), False),
        ]
    if cfg.out_bias:
        maps.append(same(att + "o_proj.bias", layer + ("attn", "o_bias"), (e,)))
    if cfg.mlp_bias:
        maps += [same(mlp + n + "_proj.bias", layer + ("mlp", n + "_bias"), (f if n != "down" else e,))
                 for n in ("gate", "up", "down")]
    if not cfg.tie_word_embeddings:
        maps.append(transposed("lm_head.weight", ("lm_head", "kernel"), (v, e)))
    return maps


FAMILY = Family(
    name="llama", model_types=("llama",), config_from_hf=config_from_hf,
    config_to_hf=config_to_hf, tensor_maps=tensor_maps,
    ignored_hf_names=(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",),
)
