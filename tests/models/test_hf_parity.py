"""Logit parity with transformers (PyTorch, float32) and the HF checkpoint round trip.

Reference: ``transformers`` eager attention in float32 on randomly initialised
tiny models. Tolerance: max |Δlogit| ≤ 1e-4 at every real (non-pad) position.
"""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need CPU torch (pip install torch==2.13.0)")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from rlhf_jax.models import (CheckpointError, UnsupportedModelError, load_pretrained,  # noqa: E402
                             save_pretrained)
from rlhf_jax.models.hf import CONFIG_FILE, SAFETENSORS_FILE  # noqa: E402
from rlhf_jax.models.presets import preset_config  # noqa: E402
from tests.helpers import left_padded_batch, torch_logits, torch_model  # noqa: E402

TOL = 1e-4
CASES = {
    "llama-gqa-untied": ("tiny-llama", {}),
    "llama-tied": ("tiny-llama-tied", {}),
    "llama3-rope-scaling": ("tiny-llama", {"rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}}),
    "gpt2": ("tiny-gpt2", {}),
}


def max_diff_on_real_tokens(a, b, mask):
    real = mask.astype(bool)
    return float(np.max(np.abs(a[real] - b[real])))


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    preset, overrides = CASES[request.param]
    hf_config = {**preset_config(preset), **overrides}
    model = torch_model(hf_config)
    path = str(tmp_path_factory.mktemp(request.param))
    model.save_pretrained(path)
    ids, mask = left_padded_batch(np.random.default_rng(1), [11, 4, 7, 1], hf_config["vocab_size"])
    return {"torch": model, "path": path, "ids": ids, "mask": mask, "name": request.param}


def test_logits_match_transformers(case):
    model, params = load_pretrained(case["path"])
    ours = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(case["ids"]),
                                  attention_mask=jnp.asarray(case["mask"])).logits)
    ref = torch_logits(case["torch"], case["ids"], case["mask"])
    assert ours.shape == ref.shape
    assert np.std(ref) > 0.1, "reference logits are too flat to test anything"
    assert max_diff_on_real_tokens(ours, ref, case["mask"]) <= TOL


def test_gradients_match_torch_autograd(case):
    """∂(Σ next-token log-prob over real tokens)/∂θ for every parameter against PyTorch autograd.

    Our model multiplies with :func:`rlhf_jax.models.layers.matmul` (a hand-written VJP), so
    this checks its backward through the whole decoder, the tied head included. The gradients
    are mapped to HF tensor names by the exporter's own ``params_to_tensors``. Tolerance:
    |Δ| ≤ 1e-5 + 1e-3·|ref| per element (float32 sums over ~20 tokens).
    """
    from rlhf_jax.models.hf import params_to_tensors
    model, params = load_pretrained(case["path"])
    ids, mask = case["ids"], case["mask"]
    target = np.roll(ids, -1, axis=1)
    weight = (mask * np.roll(mask, -1, axis=1)).astype(np.float32)
    weight[:, -1] = 0

    def loss(p):
        logits = model.apply({"params": p}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.asarray(target)[..., None], -1)
        return jnp.sum(logp[..., 0] * weight)

    ours = params_to_tensors(model.config, jax.jit(jax.grad(loss))(params))
    ref_model = case["torch"]
    ref_model.zero_grad()
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    logits = ref_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                       position_ids=torch.tensor(positions)).logits
    logp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(target)[..., None])[..., 0]
    (logp * torch.tensor(weight)).sum().backward()
    ref = {name: p.grad.numpy() for name, p in ref_model.named_parameters() if p.grad is not None}
    assert set(ours) <= set(ref) | {"lm_head.weight"}, sorted(set(ours) - set(ref))
    compared = 0
    for name, grad in ours.items():
        if name not in ref:
            continue  # a tied head's weight is the embedding's (one tensor in torch)
        np.testing.assert_allclose(np.asarray(grad), ref[name], rtol=1e-3, atol=1e-5, err_msg=name)
        compared += 1
    assert compared == len(ref), "every torch parameter's gradient was compared"
    assert max(np.abs(g).max() for g in ref.values()) > 1e-3, "gradients too small to test"


def test_left_padding_does_not_change_logits(case):
    """A row's logits are the same padded in a batch as run alone without padding."""
    model, params = load_pretrained(case["path"])
    ids, mask = case["ids"], case["mask"]
    batch = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(ids),
                                   attention_mask=jnp.asarray(mask)).logits)
    n = int(mask[1].sum())
    alone = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(ids[1:2, -n:])).logits)
    np.testing.assert_allclose(batch[1, -n:], alone[0], atol=TOL)


def test_export_reloads_in_transformers(case, tmp_path):
    model, params = load_pretrained(case["path"])
    save_pretrained(model, params, str(tmp_path))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path), attn_implementation="eager", dtype=torch.float32).eval()
    ids, mask = case["ids"], case["mask"]
    ref = torch_logits(case["torch"], ids, mask)
    again = torch_logits(reloaded, ids, mask)
    assert max_diff_on_real_tokens(again, ref, mask) <= 1e-6


# ---------------------------------------------------------------------------- bad input


def test_exporting_a_decoding_view_is_refused_by_name(llama_dir, tmp_path):
    from rlhf_jax.generate import decoding_view
    view, view_params = decoding_view(*load_pretrained(llama_dir))
    with pytest.raises(CheckpointError, match="decoding layout"):
        save_pretrained(view, view_params, str(tmp_path))
    assert not os.listdir(tmp_path)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("llama"))
    torch_model(preset_config("tiny-llama")).save_pretrained(path)
    return path


def _copy_with(src, dst, config=None, tensors=None):
    from safetensors.numpy import load_file, save_file
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, CONFIG_FILE)) as f:
        cfg = json.load(f)
    cfg.update(config or {})
    with open(os.path.join(dst, CONFIG_FILE), "w") as f:
        json.dump(cfg, f)
    arrays = load_file(os.path.join(src, SAFETENSORS_FILE))
    arrays = tensors(arrays) if tensors else arrays
    save_file(arrays, os.path.join(dst, SAFETENSORS_FILE), metadata={"format": "pt"})
    return dst


def test_missing_path_is_named(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="nope"):
        load_pretrained(missing)


def test_unsupported_model_type_is_named(llama_dir, tmp_path):
    bad = _copy_with(llama_dir, str(tmp_path / "bad"), config={"model_type": "mamba"})
    with pytest.raises(UnsupportedModelError, match=r"config\.json.*'mamba'"):
        load_pretrained(bad)


def _rename_gate(arrays):
    arrays["model.layers.1.mlp.gate.weight"] = arrays.pop("model.layers.1.mlp.gate_proj.weight")
    return arrays


def _shrink_k_proj(arrays):
    name = "model.layers.0.self_attn.k_proj.weight"
    arrays[name] = arrays[name][:-1]
    return arrays


def _add_extra(arrays):
    arrays["model.layers.0.extra.weight"] = np.zeros(3, np.float32)
    return arrays


@pytest.mark.parametrize("edit,message", [
    (_rename_gate, r"model\.safetensors.*'model\.layers\.1\.mlp\.gate_proj\.weight'"),
    (_shrink_k_proj, r"k_proj\.weight.*\(31, 64\), expected \(32, 64\)"),
    (_add_extra, r"unexpected tensor 'model\.layers\.0\.extra\.weight'"),
], ids=["renamed", "misshapen", "extra"])
def test_bad_tensor_is_named(llama_dir, tmp_path, edit, message):
    """A renamed (so missing), misshapen or extra tensor is an error naming file and tensor."""
    bad = _copy_with(llama_dir, str(tmp_path / "bad"), tensors=edit)
    with pytest.raises(CheckpointError, match=message):
        load_pretrained(bad)


def test_config_mismatch_names_tensor(llama_dir, tmp_path):
    bad = _copy_with(llama_dir, str(tmp_path / "bad"), config={"intermediate_size": 100})
    with pytest.raises(CheckpointError, match=r"gate_proj\.weight.*expected \(100, 64\)"):
        load_pretrained(bad)


def test_sharded_safetensors_index_loads(tmp_path):
    """A checkpoint split over several files with ``model.safetensors.index.json``."""
    from rlhf_jax.models.hf import SAFETENSORS_INDEX
    reference = torch_model(preset_config("tiny-llama"), seed=5)
    reference.save_pretrained(str(tmp_path), max_shard_size="100KB")
    assert os.path.exists(tmp_path / SAFETENSORS_INDEX)
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    model, params = load_pretrained(str(tmp_path))
    ids, mask = left_padded_batch(np.random.default_rng(3), [5, 8], 256)
    ours = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(ids),
                                            attention_mask=jnp.asarray(mask)).logits)
    assert max_diff_on_real_tokens(ours, torch_logits(reference, ids, mask), mask) <= TOL


def test_missing_shard_is_named(tmp_path):
    from rlhf_jax.models.hf import SAFETENSORS_INDEX
    torch_model(preset_config("tiny-llama"), seed=5).save_pretrained(str(tmp_path), max_shard_size="100KB")
    victim = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"{SAFETENSORS_INDEX}.*{victim.name}.*missing"):
        load_pretrained(str(tmp_path))


def test_bfloat16_checkpoint_loads(tmp_path):
    """Most released checkpoints are stored in bfloat16."""
    reference = torch_model(preset_config("tiny-llama-tied"), seed=6).to(torch.bfloat16)
    reference.save_pretrained(str(tmp_path))
    model, params = load_pretrained(str(tmp_path))
    ids, mask = left_padded_batch(np.random.default_rng(4), [6, 3], 256)
    ours = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(ids),
                                            attention_mask=jnp.asarray(mask)).logits)
    upcast = transformers.AutoModelForCausalLM.from_pretrained(  # the bf16 values, run in float32
        str(tmp_path), dtype=torch.float32, attn_implementation="eager").eval()
    ref = torch_logits(upcast, ids, mask)
    assert max_diff_on_real_tokens(ours, ref, mask) <= TOL
