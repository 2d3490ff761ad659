"""Run on 8 simulated CPU devices: the PPO reward model sharded (fsdp=4, tensor=2) vs one device.

Invoked by ``tests/reward/test_scoring.py``. A random tiny reward model exported as PPO loads
it (``rlhf_jax.ppo.rewards.Rewards``): float32 and bfloat16 storage, on the mesh and off it.
Prints one JSON object: score differences, dtypes, and how the params were placed.
"""

import json
import os
import sys
import tempfile

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from rlhf_jax import sharding  # noqa: E402
from rlhf_jax.data.synthetic import SyntheticTask  # noqa: E402
from rlhf_jax.models import ScalarModel, config_from_hf, init_params  # noqa: E402
from rlhf_jax.models.build import save_scalar_model  # noqa: E402
from rlhf_jax.models.presets import preset_config  # noqa: E402
from rlhf_jax.ppo.rewards import Rewards  # noqa: E402


def main():
    task = SyntheticTask()
    tokenizer = task.tokenizer()
    hf = {**preset_config("tiny-llama"), "vocab_size": len(tokenizer), "eos_token_id": 1,
          "pad_token_id": 0}
    model = ScalarModel(config_from_hf(hf))
    path = tempfile.mkdtemp()
    save_scalar_model(model, init_params(model, jax.random.key(0)), path, tokenizer=tokenizer)
    prompts = task.prompts(12, seed=1)  # 12 rows: not a multiple of the 8 batch shards
    responses = [" ".join(["apple"] * (i + 1)) for i in range(12)]
    mesh = sharding.make_mesh(data=1, fsdp=4, tensor=2)
    out = {}
    for dtype in ("float32", "bfloat16"):
        cfg = ml_collections.ConfigDict({
            "kind": "model", "model": path, "function": "", "tokenizer": "",
            "template": "question_answer", "dtype": dtype, "param_dtype": dtype,
            "append_eos": False, "max_length": 64, "buckets": (32, 64)})
        single, _ = Rewards(cfg)(prompts, responses)
        rewards = Rewards(cfg, mesh=mesh)
        sharded, _ = rewards(prompts, responses)
        leaves = jax.tree.leaves(rewards.scorer.params)
        out[dtype] = {
            "max_abs_diff": float(np.max(np.abs(sharded - single))),
            "scale": float(np.max(np.abs(single))),
            "dtypes": sorted({str(x.dtype) for x in leaves}),
            "devices": len(leaves[0].sharding.device_set),
            "sharded_leaves": sum(not x.sharding.is_fully_replicated for x in leaves),
            "replicated_over_1k": sum(x.sharding.is_fully_replicated and x.size > 1024 for x in leaves),
            "n": len(sharded)}
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
