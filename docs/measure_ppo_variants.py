"""Re-measure the README's synthetic PPO table: every variant of configs/synthetic/ppo.py.

Usage (after the demo, whose SFT and reward-model exports it reuses)::

    rlhf-jax run configs/demo.py --workdir runs/demo
    python docs/measure_ppo_variants.py --demo runs/demo --workdir runs/ppo_variants

Prints one Markdown row per variant: the reward-model score and response length as the
mean over the first and the last 4 steps, and the KL and EOS fraction over the last 4.
"""

import argparse
import json
import os
import subprocess
import sys

VARIANTS = ("standard", "high_kl", "reward_scaling", "length_penalty", "omit_long", "lppo",
            "lppo_beta0")


def mean(rows, key):
    return sum(r[key] for r in rows) / len(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", required=True, help="a finished demo workdir (sft/, rm/)")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    print("| variant | RM score | response length (words) | KL at the end | EOS fraction at the end |")
    print("|---|---|---|---|---|")
    for variant in args.variants.split(","):
        out = os.path.join(args.workdir, variant)
        subprocess.run([sys.executable, "-m", "rlhf_jax.cli", "ppo", "--config",
                        f"configs/synthetic/ppo.py:{variant}", "--workdir", out,
                        f"--config.model.init={os.path.join(args.demo, 'sft', 'export')}",
                        f"--config.reward.model={os.path.join(args.demo, 'rm', 'export')}"],
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        first, last = rows[:4], rows[-4:]
        print(f"| {variant} | {mean(first, 'env/rm_score'):.2f} → {mean(last, 'env/rm_score'):.2f} | "
              f"{mean(first, 'env/response_length'):.1f} → {mean(last, 'env/response_length'):.1f} | "
              f"{mean(last, 'objective/kl'):.1f} | {mean(last, 'env/eos_fraction'):.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
