"""PPO iteration throughput: generated tokens/s and seconds per phase, for a tiny and a 135M-class policy.

What it measures: :meth:`rlhf_jax.ppo.trainer.PPOTrainer.run_step` — sampling
(``time/generation``), scoring (``time/score``), the reference forward
(``time/ref_logprobs``), the policy/value forward (``time/values``) and the
jitted PPO update (``time/update``: shaping, GAE, ``ppo_epochs`` × minibatches) —
on random-weight policies of the ``tiny-llama`` and ``llama-135m`` presets
(float32), with the value head on the policy trunk (TRL's layout).

How: the synthetic task's prompts, left-padded to ``--prompt-len`` tokens; every
response is sampled to exactly ``--new-tokens`` tokens (random weights almost
never emit EOS; caps drawn from ``[new_tokens, new_tokens + 1)``); the
length-only reward (LPPO), so scoring costs no model forward and the numbers
are the policy's own. One warm-up iteration (compilation), then the median over
``--repeats`` iterations of each phase. *tokens/s* = generated tokens / the
whole iteration. XLA:CPU flags of :mod:`rlhf_jax.xla_cpu` unless
``--xla-defaults``.

Run (on a quiet machine)::

    python -m rlhf_jax.benchmarks.ppo_step --models tiny,llama-135m --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

CASES = {  # name: (preset, prompts per step, minibatch, new tokens)
    "tiny": ("tiny-llama", 32, 16, 64),
    "llama-135m": ("llama-135m", 8, 4, 64),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--xla-defaults", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = set(args.models) - set(CASES)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; known: {list(CASES)}")
    return args


def case_config(name: str, prompt_len: int):
    from rlhf_jax.config import load_config
    import os
    preset, batch, minibatch, new_tokens = CASES[name]
    path = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "synthetic", "ppo.py")
    overrides = [f"--config.model.init=preset:{preset}", "--config.reward.model=",
                 f"--config.ppo.batch_size={batch}", f"--config.ppo.mini_batch_size={minibatch}",
                 "--config.ppo.ppo_epochs=1", f"--config.generation.min_new_tokens={new_tokens}",
                 f"--config.generation.max_new_tokens={new_tokens + 1}",
                 f"--config.generation.prompt_bucket={prompt_len}", "--config.ppo.steps=1000"]
    if preset == "tiny-llama":
        overrides.append("--config.model.overrides.vocab_size=256")
    return load_config(path + ":lppo", overrides)


def measure(name: str, args) -> dict:
    from rlhf_jax.ppo.trainer import PHASES, PPOTrainer
    config = case_config(name, args.prompt_len)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = PPOTrainer(config, tmp)
        state = trainer.build()
        state, _, _ = trainer.run_step(state)  # warm-up: compilation
        runs = []
        for _ in range(args.repeats):
            state, metrics, _ = trainer.run_step(state)
            runs.append(metrics)
    preset, batch, _, new_tokens = CASES[name]
    row = {"model": name, "preset": preset, "prompts": batch, "new_tokens": new_tokens}
    for key in (*PHASES, "time/total", "time/tokens_per_s", "env/response_length"):
        row[key] = statistics.median(r[key] for r in runs)
    return row


def main(argv=None) -> list:
    args = parse_args(argv)
    if not args.xla_defaults:
        from rlhf_jax.xla_cpu import tune_cpu_flags
        tune_cpu_flags()
    import jax
    rows = [measure(name, args) for name in args.models]
    print(f"jax {jax.__version__} ({jax.default_backend()}), float32, prompt {args.prompt_len} "
          f"tokens, median of {args.repeats} iterations after 1 warm-up, length-only reward\n")
    header = ("model", "prompts × new tokens", "generation s", "score s", "ref logprobs s",
              "values s", "update s", "iteration s", "tokens/s")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['model']} | {r['prompts']} × {r['new_tokens']} | {r['time/generation']:.3f} | "
              f"{r['time/score']:.3f} | {r['time/ref_logprobs']:.3f} | {r['time/values']:.3f} | "
              f"{r['time/update']:.3f} | {r['time/total']:.3f} | {r['time/tokens_per_s']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
