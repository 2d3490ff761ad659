"""The length-debiasing methods since the paper, against ground truth, in one command.

Experiment (the synthetic task, whose gold quality is known and whose preference labels are
length-biased: P(a ≻ b) = σ(Δquality + 0.3·Δlength)): SFT of a tiny Llama → the standard
reward model (with its LOWESS length trend fitted on its eval pairs) → one policy per method,
all from the same SFT policy:

- ``standard``: PPO against the standard reward model; ``high_kl``: PPO with the paper's
  intervention that keeps gold quality best in the demo (β₀ 0.12);
- ``odin``: PPO on the quality head of an ODIN reward model (Chen et al. 2024), trained on the
  same pairs;
- ``calibrated``: PPO on the calibrated reward r − b̂(len) (Huang et al. 2024);
- ``grpo`` / ``dr_grpo``: group-relative PPO against the standard reward model, 4 responses
  per prompt (Shao et al. 2024; Liu et al. 2025);
- ``dpo`` / ``rdpo`` / ``simpo``: directly on the reward model's pairs (Rafailov et al. 2023;
  Park et al. 2024; Meng et al. 2024).

→ 4 samples for each of 64 held-out prompts per policy → reward-model and gold scores →
per policy: mean length, gold gain over SFT, gold-judged win rate against SFT with its
paired-bootstrap 95% interval, length-controlled win rate, reward-model-judged win rate,
NRG/ΔR → one plot of gold gain against length gain → the HTML report.

Command::

    rlhf-jax run configs/debias.py --workdir runs/debias

Sized for: 2 CPU cores, under 10 minutes (every stage resumes from its workdir).
"""

import os

import ml_collections

from rlhf_jax.config import load_config

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config():
    config = load_config(os.path.join(HERE, "demo.py"))   # the same SFT, RM, PPO and sampling
    with config.unlocked():
        config.rm.rm.calibration = "lowess"
        config.ppo_variants = ("standard", "high_kl")
        config.methods = ("odin", "calibrated", "grpo", "dr_grpo", "dpo", "rdpo", "simpo")
        config.dpo = load_config(os.path.join(HERE, "synthetic", "dpo.py"))
        config.dpo_losses = {"simpo": {"beta": 2.0}}  # dpo.* of one loss: SimPO's β on mean log-probs
        config.study.with_bal = False
        config.study.group_size = 4
    return config
