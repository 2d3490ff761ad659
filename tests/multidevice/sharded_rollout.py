"""Run on 8 simulated CPU devices: PPO's sampler in the rollout layout vs one device.

Invoked by ``tests/ppo/test_rollout.py``. A random tiny Llama (4 heads, 2 kv heads) samples
from left-padded prompts on one device, then in PPO's rollout layout (``roles.make_rollout``:
tensor groups of 2, data-parallel over 4) and in the training layout (FSDP over 8). Prints one
JSON object: whether the tokens agree, and the all-gathers of weight-sized operands in each
layout's compiled sampler (the decode loop's HLO included).
"""

import json
import os
import re
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from rlhf_jax import sharding  # noqa: E402
from rlhf_jax.generate import _sample_jitted, decoding_kernels, left_pad, sample  # noqa: E402
from rlhf_jax.models import CausalLM, config_from_hf, init_params  # noqa: E402
from rlhf_jax.models.presets import preset_config  # noqa: E402
from rlhf_jax.ppo.roles import make_rollout  # noqa: E402

NEW_TOKENS = 12
SHAPE = re.compile(r"= (\w+)\[([\d,]*)\][^ ]* all-gather\(")


def big_all_gathers(hlo: str, threshold: int) -> list:
    """Result shapes of the all-gathers in ``hlo`` with at least ``threshold`` elements."""
    out = []
    for dtype, dims in SHAPE.findall(hlo):
        n = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
        if n >= threshold:
            out.append(f"{dtype}[{dims}]")
    return out


def run(layout: str, model, params, ids, mask, key, greedy: bool):
    mesh = sharding.make_mesh(data=1, fsdp=8, tensor=1)
    if layout == "training":
        config = ml_collections.ConfigDict({"generation": {"rollout_tensor": -1}})
    else:
        config = ml_collections.ConfigDict({"generation": {"rollout_tensor": 0}})
    rollout = make_rollout(config, model, mesh)
    training_params = jax.device_put(params, sharding.param_shardings(model, mesh))
    r_params = rollout.params(training_params)
    r_ids, r_mask = rollout.batch(ids, mask)
    kw = dict(max_new_tokens=NEW_TOKENS, temperature=0.0 if greedy else 1.0, eos_id=2, pad_id=0)
    with sharding.use_mesh(rollout.mesh, rollout.rules):
        out = sample(model, r_params, r_ids, r_mask, key, **kw)
        hlo = _sample_jitted.lower(
            model, r_params, r_ids, r_mask, key, jnp.float32(1.0), jnp.float32(1.0),
            max_new_tokens=NEW_TOKENS, top_k=0, greedy=greedy, use_top_p=False, eos_ids=(2,),
            pad_id=0, unroll_layers=True, kernels=decoding_kernels(model, r_params),
            penalty=jnp.float32(1.0), use_penalty=False).compile().as_text()
    return np.asarray(out.tokens), hlo, dict(rollout.mesh.shape)


def main():
    cfg = config_from_hf(preset_config("tiny-llama"))
    model = CausalLM(cfg)
    params = init_params(model, jax.random.key(0))
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(3, cfg.vocab_size, n)) for n in (3, 5, 8, 6, 2, 7, 4, 8)]
    ids, mask = left_pad(prompts, 0, 8)
    smallest_weight = cfg.hidden_size * cfg.num_kv_heads * cfg.head_dim  # k_proj / v_proj
    out = {"threshold": smallest_weight}
    for greedy in (True, False):
        key = jax.random.key(7)
        single = np.asarray(sample(model, params, ids, mask, key, max_new_tokens=NEW_TOKENS,
                                   temperature=0.0 if greedy else 1.0, eos_id=2, pad_id=0).tokens)
        for layout in ("rollout", "training"):
            tokens, hlo, shape = run(layout, model, params, ids, mask, key, greedy)
            name = f"{layout}_{'greedy' if greedy else 'sampled'}"
            out[name] = {"equal": bool(np.array_equal(tokens, single)),
                         "big_all_gathers": big_all_gathers(hlo, smallest_weight),
                         "all_gathers": len(SHAPE.findall(hlo)),
                         "has_while": " while(" in hlo, "mesh": shape}
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
