"""Run on 8 simulated CPU devices: one PPO update, sharded (data=2, fsdp=2, tensor=2) vs one device.

Invoked by ``tests/ppo/test_sharded_update.py``. The trainer's own jitted update
(shaping, GAE, 2 epochs × 2 minibatches) on a fixed random rollout batch; prints
one JSON object with the differences.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from rlhf_jax import sharding  # noqa: E402
from rlhf_jax.config import load_config  # noqa: E402
from rlhf_jax.ppo.roles import build_roles  # noqa: E402
from rlhf_jax.stage import experiment_tokenizer  # noqa: E402

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "synthetic", "ppo.py")


def rollout_batch(b=16, p=8, t=12, vocab=181):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, t + 1, b)
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
    f = lambda: (rng.normal(size=(b, t)) * mask).astype(np.float32)  # noqa: E731
    return {"prompt_ids": rng.integers(4, vocab, (b, p)).astype(np.int32),
            "prompt_mask": np.ones((b, p), np.int32),
            "response_ids": (rng.integers(4, vocab, (b, t)) * mask).astype(np.int32),
            "mask": mask, "logprobs": f() - 3, "ref_logprobs": f() - 3, "values": f(),
            "raw_scores": rng.normal(size=b).astype(np.float32),
            "lengths": lengths.astype(np.int32), "ended": rng.random(b) > 0.3}


def one_update(mesh):
    config = load_config(CONFIG + ":reward_scaling", [
        "--config.model.init=preset:tiny-llama", "--config.model.overrides.vocab_size=192",
        "--config.reward.model=", "--config.reward.kind=model", "--config.ppo.batch_size=16",
        "--config.ppo.mini_batch_size=8", "--config.shaping.omit_long=mask"])
    config.reward.kind = "length_only"
    config.shaping.shapers = ("length_only", "reward_scaling")
    config.shaping.window_groups = 2
    tokenizer = experiment_tokenizer(config)
    roles, state = build_roles(config, tokenizer, mesh, eos_id=tokenizer.eos_token_id, pad_id=0)
    before = jax.tree.map(np.asarray, state.params)  # the update donates the state
    with sharding.use_mesh(mesh):
        new, metrics = roles.update(state, sharding.shard_batch(rollout_batch(), mesh))
    return before, new, metrics


def main():
    assert jax.device_count() == 8
    before, single, m1 = one_update(sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    _, sharded, m8 = one_update(sharding.make_mesh(2, 2, 2))
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params)))
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(single.params)))
    metric_diff = max(abs(float(m1[k]) - float(m8[k])) for k in m1)
    q = sharded.params["policy"]["model"]["layers"]["attn"]["q_proj"]
    print(json.dumps({"param_diff": diff, "param_update_size": moved, "metric_diff": metric_diff,
                      "loss": float(m1["loss/total"]), "kl_coef": float(single.kl_coef),
                      "q_proj_spec": [str(a) for a in q.sharding.spec]}))


if __name__ == "__main__":
    sys.exit(main())
