"""A reward model, then PPO against it, on 8 CPU devices: as one process, or as one of two.

``python tests/multidevice/multihost_stages.py OUTDIR DEVICES [REWARD_MODEL]`` runs, in ``OUTDIR``:

1. ``train-rm`` on the synthetic task (tiny Llama, LoRA r 4 on q/v with dropout): 3 steps of a
   global batch of 16 pairs (``rm.batch_size`` is per process: 16 / processes), eval and a
   checkpoint every 2 steps, the best restored at the end;
2. ``ppo`` from a tiny random policy against that reward model's export (or the export
   ``REWARD_MODEL``, so that two runs can score with the same one), 3 steps of 8 prompts, a
   checkpoint every step; it stops after 2 and a new trainer resumes from the checkpoint.

The mesh is data 2 × fsdp 2 × tensor 2 over the 8 devices. With ``RLHF_JAX_COORDINATOR``,
``RLHF_JAX_NUM_PROCESSES=2`` and ``RLHF_JAX_PROCESS_ID`` set, each of two processes has
``DEVICES=4`` of them (``jax.distributed`` over localhost, gloo collectives), reads its own share
of the pairs and the prompts, samples and scores its own rows. ``tests/test_multihost.py``
compares the two runs' metrics and exports.
"""

import json
import os
import sys

OUT, DEVICES = sys.argv[1], int(sys.argv[2])
REWARD_MODEL = sys.argv[3] if len(sys.argv) > 3 else os.path.join(OUT, "rm", "export")
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES}"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

from rlhf_jax import sharding  # noqa: E402
from rlhf_jax.config import load_config  # noqa: E402

MESH = ["--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]


def main():
    sharding.initialize_distributed()
    assert jax.device_count() == 8, jax.devices()
    processes = jax.process_count()
    from rlhf_jax.ppo.trainer import train_ppo
    from rlhf_jax.reward.train import train_reward_model

    rm = load_config("configs/synthetic/rm.py", [
        *MESH, f"--config.rm.batch_size={16 // processes}", "--config.rm.eval_batch_size=16",
        "--config.data.synthetic.num_train=48", "--config.data.synthetic.num_eval=32",
        "--config.rm.epochs=1", "--config.rm.eval_every=2", "--config.rm.log_every=1",
        "--config.rm.warmup_steps=0", "--config.model.lora_rank=4",
        "--config.model.lora_dropout=0.1"])
    rm_result = train_reward_model(rm, os.path.join(OUT, "rm"))

    ppo = load_config("configs/synthetic/ppo.py:standard", [
        *MESH, "--config.model.init=preset:tiny-llama",
        "--config.model.overrides.vocab_size=192", "--config.model.overrides.eos_token_id=1",
        "--config.model.overrides.pad_token_id=0", "--config.model.overrides.bos_token_id=3",
        f"--config.reward.model={REWARD_MODEL}",
        "--config.ppo.steps=3", "--config.ppo.batch_size=8", "--config.ppo.mini_batch_size=4",
        "--config.ppo.save_every=1", "--config.generation.min_new_tokens=6",
        "--config.generation.max_new_tokens=8"])
    workdir = os.path.join(OUT, "ppo")
    first = train_ppo(ppo, workdir, stop_after=2)
    assert first == {"stopped_at": 2, "history": first["history"]}, first
    ppo_result = train_ppo(ppo, workdir)  # a new trainer: resumes from the step-2 checkpoint
    if jax.process_index() == 0:
        print(json.dumps({"processes": processes, "rm_eval": rm_result["eval"],
                          "rm_best_step": rm_result["best_step"],
                          "ppo_steps": ppo_result["steps"]}))
    if processes > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
