"""Paper PPO on RLCD (Singhal et al. 2023 §4.1, §5; Tables 1–3) and its PPO-side variants.

The setting of :func:`rlhf_jax.defaults.paper_ppo_config` against the reward model
of ``configs/rm/rlcd.py``; prompts: hh-rlhf helpful-base prompts (the paper's RLCD setting), the paper's "Continue the conversation" Alpaca prompt
(``templates.rlcd_policy_prompt``) and reward-model input (``templates.rlcd_rm_text``). Variants: ``:high_kl``,
``:reward_scaling``, ``:length_penalty``, ``:omit_long``, ``:lppo`` (N = 120),
``:lppo_beta0``.

Command::

    rlhf-jax ppo --config configs/ppo/rlcd.py[:VARIANT] --workdir runs/ppo_rlcd \\
        --config.model.init=/path/to/llama-7b-sft

Sized for: one TPU v4-8 / v5e-8 host or 8×80 GB GPUs.
"""

from rlhf_jax.defaults import PPO_VARIANTS, paper_ppo_config

VARIANTS = tuple(PPO_VARIANTS)


def get_config(variant: str = "standard"):
    config = paper_ppo_config("hh_rlhf", variant, target_length=120, prompt_split="train",
                              prompt_template="rlcd", reward_model="runs/rm_rlcd/export",
                              options={"subset": "helpful-base", "empty": "drop"})
    config.reward.template = "rlcd"  # "Question: {context}\n\nAnswer: {response}", as the paper
    return config
