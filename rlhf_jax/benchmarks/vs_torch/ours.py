"""Our side of each case: the library's own PPO trainer and supervised steps, as the stages run them.

- ``ppo``: :class:`rlhf_jax.ppo.trainer.PPOTrainer` (``rlhf-jax ppo``'s step) on a config
  built from :func:`rlhf_jax.defaults.ppo_config` with the case's sizes, its prompts replaced by
  the case's token ids, and no stop token (``eos_id = −1``), so that every response has exactly
  ``new_tokens`` tokens. The phases are the trainer's own ``time/*`` metrics; *iteration* is
  the wall time of ``run_step``.
- ``rm`` / ``sft``: :func:`rlhf_jax.stage.supervised_setup` (``rlhf-jax train-rm`` / ``sft``)
  with the stage's loss, on a mesh of this process's devices.

Each returns per-iteration seconds by phase, the work done (tokens, optimizer steps), the
process's peak RSS and, on a GPU, the device's peak bytes in use. ``dtype`` is the compute
dtype of every model (parameters stay float32: ``config.model.dtype``, ``config.reward.dtype``).
"""

from __future__ import annotations

import tempfile
import time

import numpy as np

from rlhf_jax.benchmarks.vs_torch.work import (LR, PPO_SETTINGS, Case, peak_rss_bytes, prompt_ids,
                                               random_ids, reward_width, sft_loss_mask)


def optimizer_count(opt_state) -> int:
    """Adam's step count in an optax state (the largest ``count`` leaf)."""
    import optax
    counts = optax.tree_utils.tree_get_all_with_path(opt_state, "count")
    return max(int(np.asarray(value)) for _, value in counts)


def ppo_config(case: Case, checkpoints: dict, dtype: str = "float32"):
    from rlhf_jax.defaults import ppo_config as base
    config = base("synthetic", init=checkpoints["policy"])
    config.model.dtype = config.reward.dtype = dtype
    config.data.tokenizer = checkpoints["policy"]
    # the trainer's own prompt set is built (and then replaced): it keeps prompts shorter than this
    config.data.max_prompt_length = case.prompt_len + 1
    p, g = config.ppo, config.generation
    p.batch_size, p.mini_batch_size, p.ppo_epochs, p.steps = (case.batch, case.minibatch,
                                                              case.ppo_epochs, 1000)
    p.lr = LR
    for key, (_, value) in PPO_SETTINGS.items():
        p[key] = value
    g.min_new_tokens, g.max_new_tokens = case.new_tokens, case.new_tokens + 1  # caps: exactly n
    g.prompt_bucket = case.prompt_len
    g.top_k, g.top_p, g.temperature = 0, 1.0, 1.0
    r = config.reward
    if case.reward == "model":
        r.kind, r.model, r.template = "model", checkpoints["reward"], "{prompt}{response}"
        r.max_length = reward_width(case)
        r.buckets = (r.max_length,)
    else:
        r.kind, r.model = "function", ""
        r.function = "rlhf_jax.benchmarks.vs_torch.work:constant_reward"
    return config


def device_peak_bytes() -> int:
    """The first device's peak bytes in use (0 where the backend keeps no statistics: CPU)."""
    import jax
    stats = jax.devices()[0].memory_stats() or {}
    return int(stats.get("peak_bytes_in_use", 0))


def run_ppo(case: Case, checkpoints: dict, repeats: int, dtype: str = "float32") -> dict:
    from rlhf_jax.ppo.trainer import PPOTrainer
    config = ppo_config(case, checkpoints, dtype)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = PPOTrainer(config, tmp)
        trainer.eos_id = -1  # before build(): the sampler and the cut never see an EOS
        trainer.prompts = [{"ids": row.tolist(),
                            "text": trainer.tokenizer.decode(row, skip_special_tokens=True)}
                           for row in prompt_ids(case, checkpoints)]
        state = trainer.build()
        runs, steps_before = [], None
        for i in range(repeats + 1):  # the first is the warm-up (compilation)
            if i == 1:
                steps_before = optimizer_count(state.opt_state)
            start = time.perf_counter()
            state, metrics, _ = trainer.run_step(state)
            wall = time.perf_counter() - start
            if i:
                runs.append({
                    "generation": metrics["time/generation"], "scoring": metrics["time/score"],
                    "policy_values": metrics["time/values"],
                    "reference": metrics["time/ref_logprobs"], "update": metrics["time/update"],
                    "iteration": wall,
                    "sampled_tokens": round(metrics["env/response_length"] * case.batch)})
        steps = (optimizer_count(state.opt_state) - steps_before) / repeats
    return {"runs": runs, "optimizer_steps": steps, "peak_rss": peak_rss_bytes(),
            "peak_device": device_peak_bytes()}


def run_supervised(case: Case, checkpoints: dict, repeats: int, dtype: str = "float32") -> dict:
    import jax

    from rlhf_jax import defaults, sharding
    from rlhf_jax.models.build import causal_lm, scalar_model, tokenizer_for
    from rlhf_jax.stage import stage_mesh, supervised_setup

    tokenizer = tokenizer_for("", checkpoints["policy"])
    if case.kind == "rm":
        from rlhf_jax.reward.train import reward_loss_for
        config = defaults.reward_model_config("synthetic", init=checkpoints["reward"])
        config.model.dtype = dtype
        section = config.rm
        model, params = scalar_model(config.model, jax.random.key(0))
        loss_fn = reward_loss_for(section)
        chosen = random_ids(case.batch, case.seq_len, checkpoints, seed=2)
        rejected = random_ids(case.batch, case.seq_len, checkpoints, seed=3)
        batch = {"chosen_ids": chosen, "rejected_ids": rejected,
                 "chosen_mask": np.ones_like(chosen), "rejected_mask": np.ones_like(rejected),
                 "index": np.arange(case.batch, dtype=np.int32),
                 "weight": np.ones(case.batch, np.float32)}
    else:
        from rlhf_jax.sft import response_nll
        config = defaults.sft_config("synthetic", init=checkpoints["policy"])
        config.model.dtype = dtype
        section = config.sft
        model, params = causal_lm(config.model, jax.random.key(0))
        loss_fn = response_nll
        ids = random_ids(case.batch, case.seq_len, checkpoints, seed=4)
        batch = {"ids": ids, "mask": np.ones_like(ids), "loss_mask": sft_loss_mask(case)}
    section.lr, section.lr_schedule = LR, "constant"
    mesh = stage_mesh(config)
    setup = supervised_setup(model, params, tokenizer, section, loss_fn=loss_fn,
                             total_steps=1000, mesh=mesh)
    state, batch = setup.state, sharding.shard_batch(batch, mesh)
    runs, steps_before, first_loss = [], None, None
    for i in range(repeats + 1):
        if i == 1:
            steps_before = optimizer_count(state.opt_state)
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(setup.train_step(state, batch))
        if i:
            runs.append({"step": time.perf_counter() - start})
        else:
            first_loss = float(metrics["loss"])
    steps = (optimizer_count(state.opt_state) - steps_before) / repeats
    return {"runs": runs, "optimizer_steps": steps, "peak_rss": peak_rss_bytes(),
            "peak_device": device_peak_bytes(), "first_loss": first_loss}


def run(case: Case, checkpoints: dict, repeats: int, dtype: str = "float32") -> dict:
    from rlhf_jax.xla_cpu import tune_cpu_flags
    tune_cpu_flags()
    return (run_ppo if case.kind == "ppo" else run_supervised)(case, checkpoints, repeats, dtype)
