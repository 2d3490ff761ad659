"""Flax decoder models and their checkpoints.

Public API::

    model, params = load_pretrained(path, dtype="float32")   # HF directory or .gguf file
    out = model.apply({"params": params}, input_ids, attention_mask=mask)   # out.logits [b, t, vocab]
    save_pretrained(model, params, out_dir)                   # a directory transformers loads
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.models.config import DecoderConfig
from rlhf_jax.models.errors import CheckpointError, UnsupportedModelError
from rlhf_jax.models.heads import ScalarModel
from rlhf_jax.models.hf import (TensorSource, family_from_config, load_hf_directory,
                                params_from_tensors, save_hf_directory)
from rlhf_jax.models.transformer import CausalLM, KVCache, ModelOutput


def config_from_hf(hf_config: dict, source: str = "config.json") -> DecoderConfig:
    """A :class:`DecoderConfig` from an HF ``config.json`` dict (any registered family)."""
    return family_from_config(hf_config, source).config_from_hf(hf_config, source)


def load_pretrained(path: str, dtype="float32", param_dtype="float32", mesh=None) -> tuple:
    """Load ``(CausalLM, params)`` from an HF model directory or a ``.gguf`` file.

    ``dtype`` is the compute dtype, ``param_dtype`` the storage dtype of the
    parameters (float32 here; bfloat16 is the usual choice on accelerators).
    With a ``mesh`` (``rlhf_jax.sharding.make_mesh``) each parameter goes from
    host memory straight to its shards, so no single device ever holds the
    whole model; without one, params land on the default device.
    """
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file or directory (expected an HF model "
                              "directory or a .gguf file)")
    if path.endswith(".gguf"):
        cfg, params = _load_gguf(path)
    else:
        cfg, params = load_hf_directory(path)
    cfg = cfg.replace(dtype=jnp.dtype(dtype).name, param_dtype=jnp.dtype(param_dtype).name)
    model = CausalLM(cfg)
    params = jax.tree.map(lambda a: np.asarray(a, cfg.params_dtype), params)
    if mesh is None:
        return model, jax.device_put(params)
    from rlhf_jax.sharding import param_shardings
    return model, jax.device_put(params, param_shardings(model, mesh))


def _load_gguf(path: str) -> tuple:
    from rlhf_jax.models.gguf_import import read_gguf
    hf_config, tensors = read_gguf(path)
    family = family_from_config(hf_config, path)
    cfg = family.config_from_hf(hf_config, path)
    return cfg, params_from_tensors(cfg, family, TensorSource.from_arrays(tensors, path))


ADAPTER_DIR = "adapter"
"""Where an export with LoRA adapters also keeps them as a PEFT adapter directory."""


def save_pretrained(model, params, path: str, tokenizer=None, base_model: str = "") -> None:
    """Export ``params`` of ``model`` to an HF directory (config.json + model.safetensors).

    Works for sharded params, across hosts too (gathered; process 0 writes). A ``tokenizer``
    (transformers tokenizer) is saved beside the weights when given. With LoRA adapters the
    weights are merged (``W + (α/r)·A·B``), and the adapters alone are written as well, to
    ``path/adapter`` (``adapter_config.json`` + ``adapter_model.safetensors``, which
    ``peft.PeftModel.from_pretrained(base, path/adapter)`` loads onto ``base_model``; Llama
    family).
    """
    save_hf_directory(model.config, params, path)
    if model.config.lora is not None and model.config.family == "llama":
        from rlhf_jax.models.lora import save_peft_adapter
        save_peft_adapter(model.config, params, os.path.join(path, ADAPTER_DIR), base_model)
    if tokenizer is not None and jax.process_index() == 0:
        tokenizer.save_pretrained(path)


def load_tokenizer(path: str):
    """The transformers tokenizer stored with a checkpoint (HF directory or ``.gguf``)."""
    if path.endswith(".gguf"):
        from rlhf_jax.models.gguf_import import gguf_tokenizer
        return gguf_tokenizer(path)
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: no tokenizer could be loaded ({err})") from err


def init_params(model, key, batch_size: int = 1, seq_len: int = 8):
    """Randomly initialised params (plain arrays, logical-axis metadata removed)."""
    import flax.linen as nn
    ids = jnp.zeros((batch_size, seq_len), jnp.int32)
    return nn.unbox(jax.jit(model.init)(key, ids))["params"]


__all__ = [
    "CausalLM", "ScalarModel", "DecoderConfig", "KVCache", "ModelOutput", "CheckpointError",
    "UnsupportedModelError", "config_from_hf", "load_pretrained", "save_pretrained",
    "load_tokenizer", "init_params",
]
