"""Run on 8 simulated CPU devices: one reward-model train step, sharded vs single device.

Invoked by ``tests/reward/test_sharded_step.py`` in a subprocess. Uses the stage's
own pieces (``reward_loss``, ``training.make_train_step`` with explicit shardings,
gradient accumulation over 2 micro-batches) on a (data=2, fsdp=2, tensor=2) mesh
and on a 1-device mesh; prints one JSON object with the differences.
"""

import functools
import json
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from rlhf_jax import sharding, training  # noqa: E402
from rlhf_jax.models import ScalarModel, config_from_hf, init_params  # noqa: E402
from rlhf_jax.models.presets import preset_config  # noqa: E402
from rlhf_jax.reward.train import reward_loss  # noqa: E402


def batch(rng, rows=8, width=16, vocab=256):
    out = {"index": np.arange(rows, dtype=np.int32), "weight": np.ones(rows, np.float32)}
    for side in ("chosen", "rejected"):
        lengths = rng.integers(5, width + 1, rows)
        mask = (np.arange(width)[None] < lengths[:, None]).astype(np.int32)
        out[f"{side}_ids"] = (rng.integers(3, vocab, (rows, width)) * mask).astype(np.int32)
        out[f"{side}_mask"] = mask
    return out


def one_step(model, params, data, mesh):
    tx = training.make_optimizer(lr=1e-3, warmup_steps=0, total_steps=10, weight_decay=0.01,
                                 max_grad_norm=1.0, eps=1e-6)
    shardings = training.state_shardings(model, mesh, tx, params)
    loss = functools.partial(reward_loss, model=model, margin=0.1, center_coef=0.01)
    step = training.make_train_step(loss, tx, accum_steps=2, shardings=shardings,
                                    batch_sharding=sharding.batch_sharding(mesh), donate=False)
    with sharding.use_mesh(mesh):
        state = jax.jit(lambda p: training.init_state(p, tx), out_shardings=shardings)(
            jax.device_put(params, shardings.params))
        new, metrics = step(state, sharding.shard_batch(data, mesh))
    return new, metrics


def main():
    assert jax.device_count() == 8
    model = ScalarModel(config_from_hf(preset_config("tiny-llama")))
    params = init_params(model, jax.random.key(0))
    data = batch(np.random.default_rng(0))
    single, m1 = one_step(model, params, data, sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    sharded, m8 = one_step(model, params, data, sharding.make_mesh(2, 2, 2))
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params)))
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(single.params)))
    q = sharded.params["model"]["layers"]["attn"]["q_proj"]
    print(json.dumps({
        "loss_diff": abs(float(m1["loss"]) - float(m8["loss"])),
        "margin_diff": float(np.max(np.abs(np.asarray(m1["per_example"]["margin"])
                                           - np.asarray(m8["per_example"]["margin"])))),
        "param_diff": diff, "param_update_size": moved,
        "q_proj_spec": [str(a) for a in q.sharding.spec],
    }))


if __name__ == "__main__":
    main()
