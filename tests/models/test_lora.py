"""LoRA adapters (rlhf_jax.models.lora) against independent references.

- the adapted forward equals the base forward on weights merged by hand in NumPy
  (``W + (α/r)·A·B`` over the projections' flattened ``[in, out]`` views), max |Δlogit| ≤ 1e-5;
- PEFT (``peft.PeftModel.from_pretrained`` on the transformers base) loading our adapter export
  gives our logits, and transformers loading our merged export does too (≤ 1e-4);
- training steps (reward model with accumulation and dropout; PPO) change only the adapters
  and the scalar heads: the base is bit-identical, the optimizer state covers only those leaves;
- PPO's reference is the base with the adapters off, with no copy of the weights.
"""

import math
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlhf_jax import training
from rlhf_jax.config import load_config
from rlhf_jax.models import CausalLM, ScalarModel, init_params, save_pretrained
from rlhf_jax.models.lora import (PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, LoraConfig, merged,
                                  split_trainable, without_adapters)
from rlhf_jax.models import config_from_hf
from rlhf_jax.models.presets import preset_config
from tests.helpers import left_padded_batch

ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
N_IN = {"o_proj": 2}  # input axes of each projection's logical shape (1 elsewhere)


def flat(tree):
    return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))


def with_random_adapters(params, seed=1, scale=0.2):
    """Adapters with nonzero ``B`` (a fresh one is zero and would test nothing)."""
    rng = np.random.default_rng(seed)
    out = {p: (rng.normal(0, scale, v.shape).astype(np.float32) if str(p[-1]).endswith("_lora_b")
               else np.asarray(v)) for p, v in flat(params).items()}
    return flax.traverse_util.unflatten_dict(out)


def numpy_merge(params, lora: LoraConfig):
    """``W + (α/r)·A·B`` per layer, written out with NumPy reshapes (independent of lora.merged)."""
    f = flat(params)
    out = {}
    for path, w in f.items():
        name = str(path[-1])
        if "_lora_" in name:
            continue
        a = f.get(path[:-1] + (name + "_lora_a",))
        if a is not None:
            b = f[path[:-1] + (name + "_lora_b",)]
            w = np.array(w, np.float64)
            for layer in range(w.shape[0]):
                k = math.prod(w.shape[1:1 + N_IN.get(name, 1)])
                delta = np.asarray(a[layer], np.float64).reshape(k, lora.rank) @ \
                    np.asarray(b[layer], np.float64).reshape(lora.rank, -1)
                w[layer] += lora.scale * delta.reshape(w.shape[1:])
            w = w.astype(np.float32)
        out[path] = np.asarray(w)
    return flax.traverse_util.unflatten_dict(out)


@pytest.fixture(scope="module")
def adapted():
    cfg = config_from_hf(preset_config("tiny-llama"), "tiny-llama")
    lora = LoraConfig(rank=4, alpha=12.0, dropout=0.05, targets=ALL)
    model = CausalLM(cfg.replace(lora=lora))
    params = with_random_adapters(init_params(model, jax.random.key(0)))
    ids, mask = left_padded_batch(np.random.default_rng(0), [9, 5, 12], cfg.vocab_size)
    return model, params, lora, jnp.asarray(ids), jnp.asarray(mask)


def test_lora_forward_equals_the_merged_weight_forward(adapted):
    model, params, lora, ids, mask = adapted
    ours = np.asarray(model.apply({"params": params}, ids, attention_mask=mask).logits)
    base = CausalLM(model.config.replace(lora=None))
    ref = np.asarray(base.apply({"params": numpy_merge(params, lora)}, ids,
                                attention_mask=mask).logits)
    off = np.asarray(base.apply({"params": without_adapters(params)}, ids, attention_mask=mask).logits)
    real = np.asarray(mask, bool)
    assert np.max(np.abs(ours - off)[real]) > 0.05, "the adapters change nothing: no test"
    assert np.max(np.abs(ours - ref)[real]) <= 1e-5
    np.testing.assert_allclose(np.asarray(base.apply({"params": merged(lora, params)}, ids,
                                                     attention_mask=mask).logits)[real],
                               ref[real], atol=1e-5)


def test_dropout_only_where_a_dropout_rng_is_given(adapted):
    model, params, _, ids, mask = adapted
    plain = model.apply({"params": params}, ids, attention_mask=mask).logits
    again = model.apply({"params": params}, ids, attention_mask=mask).logits
    dropped = model.apply({"params": params}, ids, attention_mask=mask,
                          rngs={"dropout": jax.random.key(5)}).logits
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(again))
    assert float(jnp.max(jnp.abs(plain - dropped))) > 1e-3


def test_peft_loads_our_adapter_export_with_our_logits(adapted, tmp_path):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft", reason="the PEFT reference needs `pip install peft`")
    import transformers
    model, params, lora, ids, mask = adapted
    base = CausalLM(model.config.replace(lora=None))
    base_dir, out_dir = str(tmp_path / "base"), str(tmp_path / "policy")
    save_pretrained(base, without_adapters(params), base_dir)
    save_pretrained(model, params, out_dir, base_model=base_dir)
    adapter_dir = os.path.join(out_dir, "adapter")
    assert sorted(os.listdir(adapter_dir)) == sorted([PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE])
    ours = np.asarray(model.apply({"params": params}, ids, attention_mask=mask).logits)
    load = dict(attn_implementation="eager", dtype=torch.float32)
    hf_base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, **load)
    with_adapter = peft.PeftModel.from_pretrained(hf_base, adapter_dir).eval()
    hf_merged = transformers.AutoModelForCausalLM.from_pretrained(out_dir, **load).eval()
    real = np.asarray(mask, bool)
    for reference in (with_adapter, hf_merged):
        with torch.no_grad():
            ref = reference(input_ids=torch.tensor(np.asarray(ids)),
                            attention_mask=torch.tensor(np.asarray(mask))).logits.numpy()
        assert np.max(np.abs(ours - ref)[real]) <= 1e-4


def test_a_base_checkpoint_gains_fresh_adapters_that_change_nothing(tmp_path):
    """``model.lora_rank`` on a checkpoint: adapters appear with ``B = 0`` and PEFT's uniform
    ``A`` (±1/√in); the logits are the checkpoint's."""
    from rlhf_jax.defaults import model_spec
    from rlhf_jax.models.build import causal_lm
    cfg = config_from_hf(preset_config("tiny-llama"), "tiny-llama")
    base = CausalLM(cfg)
    base_params = init_params(base, jax.random.key(3))
    save_pretrained(base, base_params, str(tmp_path))
    spec = model_spec(str(tmp_path))
    spec.lora_rank, spec.lora_targets = 8, "q_proj,o_proj"
    model, params = causal_lm(spec, jax.random.key(0))
    attn = params["model"]["layers"]["attn"]
    assert np.all(np.asarray(attn["q_proj_lora_b"]) == 0)
    a = np.asarray(attn["o_proj_lora_a"])  # [layers, heads, head_dim, r]: fan-in heads·head_dim
    bound = 1 / math.sqrt(cfg.num_heads * cfg.head_dim)
    assert np.max(np.abs(a)) <= bound and np.max(np.abs(a)) > 0.8 * bound
    ids = jnp.asarray([[1, 5, 9, 2]])
    np.testing.assert_allclose(np.asarray(model.apply({"params": params}, ids).logits),
                               np.asarray(base.apply({"params": base_params}, ids).logits),
                               atol=1e-6)


def rm_batch(rng, rows, width, vocab):
    ids = rng.integers(3, vocab, (2, rows, width)).astype(np.int32)
    return {"chosen_ids": ids[0], "rejected_ids": ids[1],
            "chosen_mask": np.ones((rows, width), np.int32),
            "rejected_mask": np.ones((rows, width), np.int32),
            "weight": np.ones(rows, np.float32), "index": np.arange(rows, dtype=np.int32),
            "chosen_len": np.full(rows, width, np.int32),
            "rejected_len": np.full(rows, width, np.int32)}


def test_reward_model_steps_update_only_adapters_and_the_score_head():
    """On a bfloat16 base (the paper configs'), with gradient accumulation and dropout."""
    from rlhf_jax import sharding
    from rlhf_jax.defaults import reward_model_config, with_lora
    from rlhf_jax.reward.train import reward_loss_for
    from rlhf_jax.stage import supervised_steps
    config = with_lora(reward_model_config(), rank=4, alpha=32, dropout=0.1, base_dtype="float32")
    config.rm.accum_steps, config.rm.lr = 2, 1e-2
    cfg = config_from_hf(preset_config("tiny-llama"), "tiny-llama")
    model = ScalarModel(cfg.replace(lora=LoraConfig(4, 32.0, 0.1, ("q_proj", "v_proj")),
                                    param_dtype="bfloat16", dtype="bfloat16"))
    params = init_params(model, jax.random.key(0))
    dtypes = {p: str(v.dtype) for p, v in flat(params).items()}
    assert dtypes[("model", "layers", "attn", "q_proj")] == "bfloat16"  # the frozen base
    assert dtypes[("model", "layers", "attn", "q_proj_lora_a")] == "float32"
    assert dtypes[("score", "kernel")] == "float32"  # trainable heads keep float32 weights
    steps = supervised_steps(model, params, config.rm, loss_fn=reward_loss_for(config.rm),
                             total_steps=10, mesh=sharding.make_mesh(devices=jax.devices()[:1]))
    state = training.init_state(params, steps.tx)
    mu = optax.tree_utils.tree_get(state.opt_state, "mu")
    assert sorted(flat(mu)) == sorted(flat(split_trainable(params)[0])), \
        "the optimizer state must cover the adapters and the score head only"
    before = {p: np.asarray(v) for p, v in flat(params).items()}
    rng = np.random.default_rng(0)
    for _ in range(2):  # B moves on step 1, A only once B ≠ 0
        state, metrics = steps.train_step(state, rm_batch(rng, 4, 6, cfg.vocab_size))
    assert np.isfinite(float(metrics["loss"]))
    for path, value in flat(state.params).items():
        name = str(path[-1])
        moved = not np.array_equal(np.asarray(value), before[path])
        # the score bias trains too, but Bradley–Terry is blind to it (zero gradient)
        trainable = "_lora_" in name or path == ("score", "kernel")
        assert moved == trainable, f"{'/'.join(map(str, path))}: moved={moved}"


def test_ppo_with_lora_trains_adapters_and_value_head_against_the_base_reference(tmp_path):
    from rlhf_jax.models.heads import lm_params
    from rlhf_jax.ppo.trainer import PPOTrainer
    config = load_config(os.path.join(os.path.dirname(__file__), "..", "..", "configs",
                                      "synthetic", "ppo.py:standard"), [
        "--config.model.init=preset:tiny-llama", "--config.model.overrides.vocab_size=192",
        "--config.reward.model=", "--config.reward.kind=function",
        "--config.reward.function=tests.helpers:recording_reward",
        "--config.model.lora_rank=4", "--config.model.lora_dropout=0.05",
        "--config.model.lora_targets=q_proj,v_proj,down_proj",
        "--config.ppo.batch_size=8", "--config.ppo.mini_batch_size=4", "--config.ppo.lr=1e-2"])
    trainer = PPOTrainer(config, str(tmp_path))
    state = trainer.build()
    assert trainer.roles.reference is None  # no second copy: the base with adapters off
    base_ids = {id(x) for x in jax.tree.leaves(without_adapters(lm_params(state.params["policy"])))}
    assert {id(x) for x in jax.tree.leaves(trainer.roles.reference_params(state))} == base_ids
    before = {p: np.asarray(v) for p, v in flat(state.params).items()}
    for _ in range(2):
        state, metrics, _ = trainer.run_step(state)
    assert metrics["objective/kl"] != 0.0  # the policy (with adapters) left the reference
    for path, value in flat(state.params).items():
        moved = not np.array_equal(np.asarray(value), before[path])
        trainable = "_lora_" in str(path[-1]) or path[1] == "value_head"
        assert moved == trainable, f"{'/'.join(map(str, path))}: moved={moved}"
