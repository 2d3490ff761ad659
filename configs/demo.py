"""The study in one command: the paper's pipeline in miniature on the synthetic task.

Experiment: SFT of a tiny Llama (2 layers, 64 wide) → a length-biased reward model
(labels σ(Δquality + 0.3·Δlength)) and its length-balanced (BAL) twin → PPO against
the standard reward model: standard, high KL (β₀ 0.12) and LPPO with β = 0 (reward
1 − |len/30 − 1|) → 4 samples for each of 64 held-out prompts per policy (top_p 0.9,
temperature 0.9, repetition penalty 1.2) → reward-model and gold scores → length
analysis (NRG in 4-word bins) → gold-judge win rates against SFT → report.

Command::

    rlhf-jax run configs/demo.py --workdir runs/demo

Sized for: 2 CPU cores, under 10 minutes (every stage resumes from its workdir).
"""

import os

import ml_collections

from rlhf_jax.config import load_config

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config():
    config = ml_collections.ConfigDict()
    config.sft = load_config(os.path.join(HERE, "synthetic", "sft.py"))
    config.rm = load_config(os.path.join(HERE, "synthetic", "rm.py"))
    config.ppo = load_config(os.path.join(HERE, "synthetic", "ppo.py"))
    config.ppo_variants = ("standard", "high_kl", "lppo_beta0")
    config.study = ml_collections.ConfigDict({
        "with_bal": True, "eval_prompts": 64, "eval_seed": 123, "samples_per_prompt": 4,
        "max_new_tokens": 40, "temperature": 0.9, "top_p": 0.9, "repetition_penalty": 1.2,
        "batch_size": 32, "seed": 0, "rm_template": "{prompt} {response}", "rm_buckets": (48, 96),
        "bin_width": 4, "bin_max_length": 44, "nrg_normalizer": "all_binned", "prompt_bucket": 8, "judge": "gold"})
    return config
