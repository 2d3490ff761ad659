"""One of two processes (4 simulated CPU devices each) joined by ``jax.distributed`` over localhost.

Each process feeds only its own half of the batch through
``sharding.shard_batch`` (``jax.make_array_from_process_local_data``); the
global forward over the 8-device mesh must equal a single-device forward of the
whole batch. Process 0 prints one JSON line. Launched by ``tests/test_sharding.py``
with ``RLHF_JAX_COORDINATOR``, ``RLHF_JAX_NUM_PROCESSES`` and ``RLHF_JAX_PROCESS_ID`` set.
"""

import json
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from rlhf_jax import sharding  # noqa: E402
from rlhf_jax.models import CausalLM, config_from_hf, init_params  # noqa: E402
from rlhf_jax.models.presets import preset_config  # noqa: E402


def main():
    assert sharding.initialize_distributed(), "expected the RLHF_JAX_* variables to be set"
    assert jax.process_count() == 2 and jax.device_count() == 8, (jax.process_count(), jax.devices())
    model = CausalLM(config_from_hf(preset_config("tiny-llama")))
    params = init_params(model, jax.random.key(0))  # same seed on both processes
    rng = np.random.default_rng(0)
    ids = rng.integers(3, model.config.vocab_size, size=(8, 16)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1::2, :4] = 0

    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    p_shard = sharding.param_shardings(model, mesh)
    params_global = sharding.shard_params(params, p_shard)
    half = slice(4 * jax.process_index(), 4 * (jax.process_index() + 1))
    batch = sharding.shard_batch({"ids": ids[half], "mask": mask[half]}, mesh)
    with sharding.use_mesh(mesh):
        logits = jax.jit(lambda p, i, m: model.apply({"params": p}, i, attention_mask=m).logits)(
            params_global, batch["ids"], batch["mask"])
    logits = multihost_utils.process_allgather(logits, tiled=True)
    local = jax.jit(lambda p: model.apply({"params": p}, ids, attention_mask=mask).logits)(
        jax.device_put(params, jax.local_devices()[0]))
    real = mask.astype(bool)
    diff = float(np.max(np.abs(np.asarray(local)[real] - np.asarray(logits)[real])))
    if jax.process_index() == 0:
        print(json.dumps({"processes": jax.process_count(), "devices": jax.device_count(),
                          "global_batch_shape": list(batch["ids"].shape), "logit_diff": diff}))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
