"""Run on 8 simulated CPU devices: the sharded forward and optimizer step equal the single-device ones.

Invoked by ``tests/test_sharding.py`` in a subprocess (JAX fixes its device
count at start-up). Prints one JSON object with the measured differences and
the parameter shardings.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from rlhf_jax import sharding  # noqa: E402
from rlhf_jax.models import CausalLM, config_from_hf, init_params  # noqa: E402
from rlhf_jax.models.presets import preset_config  # noqa: E402


def next_token_loss(model, params, ids, mask):
    """Mean next-token cross-entropy over real target tokens (float32)."""
    logits = model.apply({"params": params}, ids, attention_mask=mask).logits.astype(jnp.float32)
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    nll = -jnp.take_along_axis(logp, ids[:, 1:, None], -1)[..., 0]
    weights = mask[:, 1:].astype(jnp.float32)
    return jnp.sum(nll * weights) / jnp.sum(weights)


def make_step(model, tx):
    def step(params, opt_state, ids, mask):
        loss, grads = jax.value_and_grad(lambda p: next_token_loss(model, p, ids, mask))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads
    return step


def _max_leaf_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main(preset: str):
    assert jax.device_count() == 8, jax.devices()
    model = CausalLM(config_from_hf(preset_config(preset)))
    params = init_params(model, jax.random.key(0))
    rng = np.random.default_rng(0)
    ids = rng.integers(3, model.config.vocab_size, size=(8, 24)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[::2, :5] = 0  # left padding on half the rows
    # Adam's first step is ≈ lr·sign(g): float noise in near-zero gradients would be
    # amplified by 1/eps, so eps is 1e-6 (gradients themselves are compared too).
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, eps=1e-6, weight_decay=0.1))
    step = make_step(model, tx)

    single = jax.devices()[0]
    p1 = jax.device_put(params, single)
    logits1 = jax.jit(lambda p: model.apply({"params": p}, ids, attention_mask=mask).logits)(p1)
    new1, _, loss1, grads1 = jax.jit(step)(p1, tx.init(p1), ids, mask)

    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    p_shard = sharding.param_shardings(model, mesh)
    params8 = sharding.shard_params(params, p_shard)
    batch8 = sharding.shard_batch({"ids": ids, "mask": mask}, mesh)
    opt_shape = jax.eval_shape(tx.init, params)
    o_shard = sharding.optimizer_state_shardings(tx, opt_shape, p_shard, mesh)
    with sharding.use_mesh(mesh):
        forward = jax.jit(lambda p, i, m: model.apply({"params": p}, i, attention_mask=m).logits,
                          in_shardings=(p_shard, sharding.batch_sharding(mesh), sharding.batch_sharding(mesh)))
        logits8 = forward(params8, batch8["ids"], batch8["mask"])
        opt8 = jax.jit(tx.init, in_shardings=(p_shard,), out_shardings=o_shard)(params8)
        step8 = jax.jit(step, in_shardings=(p_shard, o_shard, sharding.batch_sharding(mesh),
                                            sharding.batch_sharding(mesh)),
                        out_shardings=(p_shard, o_shard, sharding.replicated(mesh), p_shard))
        new8, _, loss8, grads8 = step8(params8, opt8, batch8["ids"], batch8["mask"])

    real = mask.astype(bool)
    param_diff = _max_leaf_diff(new1, new8)
    grad_diff = _max_leaf_diff(grads1, grads8)
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(new1)))
    q = new8["model"]["layers"]["attn"]["q_proj"]
    emb = new8["model"]["embed_tokens"]["embedding"]
    print(json.dumps({
        "logit_diff": float(np.max(np.abs(np.asarray(logits1)[real] - np.asarray(logits8)[real]))),
        "loss_diff": abs(float(loss1) - float(loss8)),
        "param_diff": param_diff,
        "grad_diff": grad_diff,
        "param_update_size": moved,
        "q_proj_spec": [str(a) for a in q.sharding.spec],
        "q_proj_shard_shape": list(q.addressable_shards[0].data.shape),
        "q_proj_shape": list(q.shape),
        "embedding_spec": [str(a) for a in emb.sharding.spec],
        "embedding_shard_shape": list(emb.addressable_shards[0].data.shape),
        "logits_spec": [str(a) for a in logits8.sharding.spec],
        "num_devices_with_q_proj": len({s.device for s in q.addressable_shards}),
        "indivisible_kv_heads_k_proj_spec": _k_proj_spec_for("llama-135m", mesh),
        **_export_and_load_with_mesh(model, new8, mesh),
    }))


def _export_and_load_with_mesh(model, sharded_params, mesh):
    """Export sharded params, reload them straight onto the mesh: same values, same shardings."""
    import tempfile
    from rlhf_jax.models import load_pretrained, save_pretrained
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, sharded_params, tmp)
        _, loaded = load_pretrained(tmp, mesh=mesh)
    q = loaded["model"]["layers"]["attn"]["q_proj"]
    return {"reload_diff": _max_leaf_diff(loaded, sharded_params),
            "reload_q_proj_spec": [str(a) for a in q.sharding.spec]}


def _k_proj_spec_for(preset, mesh):
    """Shardings only (no arrays): 3 kv heads cannot split over tensor=2, so that dim is replicated."""
    model = CausalLM(config_from_hf(preset_config(preset)))
    spec = sharding.param_shardings(model, mesh)["model"]["layers"]["attn"]["k_proj"].spec
    return [str(a) for a in spec]


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tiny-llama")
