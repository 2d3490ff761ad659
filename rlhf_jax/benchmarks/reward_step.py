"""Reward-model training throughput: our sharded step against a PyTorch/transformers step, with MFU.

What it measures: pairs/s of one Bradley–Terry optimizer update (forward over
chosen + rejected, backward, global-norm clipping, AdamW) for a 135M-class Llama
reward model (the ``llama-135m`` preset: SmolLM2-135M's shape, random weights,
float32), and the model FLOPs utilisation (MFU) of each.

How:

- Ours: :func:`rlhf_jax.reward.train.reward_loss` through
  :func:`rlhf_jax.training.make_train_step` (the ``train-rm`` step itself), jitted
  over a mesh of all local devices, with the XLA:CPU flags of
  :mod:`rlhf_jax.xla_cpu` (``--xla-defaults`` keeps XLA's defaults).
- Reference: ``transformers.LlamaForSequenceClassification`` of the same config
  (``sdpa`` attention), the same loss, ``clip_grad_norm_`` and ``torch.optim.AdamW``;
  ``torch.set_num_threads`` = usable cores.
- Each framework runs in its own fresh process (``--worker``); one warm-up step
  (compilation), then the median of ``--repeats`` steps.
- Batch: ``--pairs`` pairs of random token ids, every sequence ``--seq-len``
  tokens (no padding).
- MFU = model FLOPs per second / the machine's float32 matmul rate, measured in
  the same run (a jitted 2048² matmul; the better of XLA's default flags and
  ours). Model FLOPs per step = ``2·pairs`` sequences ×
  (``6·N·L + 12·layers·hidden·L²``), with ``N`` the non-embedding parameters
  (the scalar head is negligible) and ``L`` the sequence length: the usual
  forward + backward count, attention scores included, rematerialisation not.

Run (on a quiet machine)::

    python -m rlhf_jax.benchmarks.reward_step --pairs 4 --seq-len 256 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PRESET = "llama-135m"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="4", help="comma-separated pairs per step")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--xla-defaults", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", choices=("ours", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.pairs = [int(p) for p in args.pairs.split(",") if p]
    from rlhf_jax.benchmarks.decode import num_cores
    args.threads = args.threads or num_cores()
    return args


def model_flops_per_step(hf_config: dict, pairs: int, seq_len: int) -> float:
    """``2·pairs · (6·N·L + 12·layers·hidden·L²)``, N = non-embedding parameters."""
    h, i = hf_config["hidden_size"], hf_config["intermediate_size"]
    layers, heads = hf_config["num_hidden_layers"], hf_config["num_attention_heads"]
    kv, d = hf_config["num_key_value_heads"], hf_config["head_dim"]
    per_layer = h * heads * d * 2 + h * kv * d * 2 + 3 * h * i
    n = layers * per_layer
    return 2 * pairs * (6 * n * seq_len + 12 * layers * heads * d * seq_len ** 2)


def random_batch(pairs: int, seq_len: int, vocab: int, seed: int = 0) -> dict:
    import numpy as np
    rng = np.random.default_rng(seed)
    ids = lambda: rng.integers(3, vocab, (pairs, seq_len)).astype(np.int32)  # noqa: E731
    ones = np.ones((pairs, seq_len), np.int32)
    return {"chosen_ids": ids(), "rejected_ids": ids(), "chosen_mask": ones,
            "rejected_mask": ones, "index": np.arange(pairs, dtype=np.int32),
            "weight": np.ones(pairs, np.float32)}


def time_steps(step, repeats: int) -> float:
    step()  # warm-up: compilation / allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ours_worker(args) -> dict:
    import functools

    import jax

    from rlhf_jax import sharding, training
    from rlhf_jax.models import ScalarModel, config_from_hf, init_params
    from rlhf_jax.models.presets import preset_config
    from rlhf_jax.reward.train import reward_loss

    model = ScalarModel(config_from_hf(preset_config(PRESET)))
    params = init_params(model, jax.random.key(0))
    mesh = sharding.make_mesh()
    tx = training.make_optimizer(lr=1e-5, warmup_steps=0, total_steps=1000, max_grad_norm=1.0)
    shardings = training.state_shardings(model, mesh, tx, params)
    loss = functools.partial(reward_loss, model=model, margin=0.0, center_coef=0.0)
    step_fn = training.make_train_step(loss, tx, shardings=shardings,
                                       batch_sharding=sharding.batch_sharding(mesh))
    out = {}
    with sharding.use_mesh(mesh):
        state = jax.jit(lambda p: training.init_state(p, tx), out_shardings=shardings)(
            jax.device_put(params, shardings.params))
        for pairs in args.pairs:
            batch = sharding.shard_batch(random_batch(pairs, args.seq_len, model.config.vocab_size),
                                         mesh)
            holder = {"state": state}

            def step():
                holder["state"], metrics = step_fn(holder["state"], batch)
                jax.block_until_ready(metrics["loss"])
            out[str(pairs)] = time_steps(step, args.repeats)
            state = holder["state"]
    return out


def torch_worker(args) -> dict:
    import torch
    import transformers

    from rlhf_jax.models.presets import preset_config
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hf = dict(preset_config(PRESET), num_labels=1, architectures=["LlamaForSequenceClassification"])
    config = transformers.LlamaConfig(**hf)
    config._attn_implementation = "sdpa"
    model = transformers.LlamaForSequenceClassification(config).float().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    out = {}
    for pairs in args.pairs:
        batch = random_batch(pairs, args.seq_len, config.vocab_size)
        ids = torch.tensor(batch["chosen_ids"].tolist() + batch["rejected_ids"].tolist())
        mask = torch.ones_like(ids)

        def step():
            rewards = model(input_ids=ids, attention_mask=mask).logits[:, 0]
            loss = -torch.nn.functional.logsigmoid(rewards[:pairs] - rewards[pairs:]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        out[str(pairs)] = time_steps(step, args.repeats)
    return out


def run_worker(worker: str, args, env: dict) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "rlhf_jax.benchmarks.reward_step", "--worker", worker,
               "--out", out.name, "--pairs", ",".join(map(str, args.pairs)),
               "--seq-len", str(args.seq_len), "--repeats", str(args.repeats),
               "--threads", str(args.threads)]
        subprocess.run(cmd, env={**os.environ, **env}, check=True)
        with open(out.name) as f:
            return json.load(f)


def main(argv=None) -> list:
    args = parse_args(argv)
    if args.worker:
        result = ours_worker(args) if args.worker == "ours" else torch_worker(args)
        with open(args.out, "w") as f:
            json.dump(result, f)
        return []
    from rlhf_jax.benchmarks.decode import machine_limits, ours_environment
    from rlhf_jax.models.presets import preset_config
    ours_env = ours_environment(args)
    _, matmul_rate = machine_limits(ours_env)
    ours = run_worker("ours", args, ours_env)
    reference = run_worker("torch", args, {})
    print(f"{PRESET} reward model (float32, seq len {args.seq_len}), {args.threads} cores, "
          f"matmul {matmul_rate / 1e9:.1f} GFLOP/s measured, median of {args.repeats} steps "
          f"after 1 warm-up; XLA_FLAGS for ours: {ours_env['XLA_FLAGS'] or '(defaults)'}\n")
    header = ("pairs/step", "ours s/step", "torch s/step", "ours pairs/s", "torch pairs/s",
              "speed-up", "ours MFU", "torch MFU")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    rows = []
    for pairs in args.pairs:
        flops = model_flops_per_step(preset_config(PRESET), pairs, args.seq_len)
        o, t = ours[str(pairs)], reference[str(pairs)]
        row = {"pairs": pairs, "ours_s": o, "torch_s": t, "ours_pairs_s": pairs / o,
               "torch_pairs_s": pairs / t, "speedup": t / o,
               "ours_mfu": flops / o / matmul_rate, "torch_mfu": flops / t / matmul_rate}
        rows.append(row)
        print(f"| {pairs} | {o:.2f} | {t:.2f} | {row['ours_pairs_s']:.3f} | "
              f"{row['torch_pairs_s']:.3f} | {row['speedup']:.2f}× | {row['ours_mfu']:.2f} | "
              f"{row['torch_mfu']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matmul_flops": matmul_rate, "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
