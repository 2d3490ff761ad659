"""Paper reward model: RLCD simulated helpfulness preferences (Singhal et al. 2023 §3, Table 4).

Experiment: LLaMA-7B Bradley–Terry reward model on RLCD's
``simulated_preference_data_consolidated_helpful7b.csv`` (rows with a missing
output dropped; "Human: " / "\\n\\nAssistant:" stripped from the instruction;
seed 100, first 40,000 train, the rest eval), input "Question: {q}\\n\\nAnswer: {a}",
512 tokens. Variants ``:bal``, ``:rda``, ``:ctr`` as in Table 4.

Command::

    rlhf-jax train-rm --config configs/rm/rlcd.py[:bal|:rda|:ctr] --workdir runs/rm_rlcd \\
        --config.model.init=/path/to/llama-7b-hf \\
        --config.data.path=simulated_preference_data_consolidated_helpful7b.csv

Sized for: one TPU v4-8 / v5e-8 host or 8×80 GB GPUs (FSDP over 8 chips, float32
master weights, bfloat16 compute, remat).
"""

from rlhf_jax.defaults import INTERVENTIONS, paper_reward_model_config

VARIANTS = INTERVENTIONS


def get_config(intervention: str = "none"):
    config = paper_reward_model_config("rlcd", intervention)
    config.data.eval_split = "eval"
    return config
