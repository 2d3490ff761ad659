"""Paper PPO on WebGPT (Singhal et al. 2023 §4.1, §5; Tables 1–3) and its PPO-side variants.

The setting of :func:`rlhf_jax.defaults.paper_ppo_config` against the reward model
of ``configs/rm/webgpt.py``; prompts: the WebGPT comparisons' questions, Alpaca template. Variants: ``:high_kl``,
``:reward_scaling``, ``:length_penalty``, ``:omit_long``, ``:lppo`` (N = 156),
``:lppo_beta0``.

Command::

    rlhf-jax ppo --config configs/ppo/webgpt.py[:VARIANT] --workdir runs/ppo_webgpt \\
        --config.model.init=/path/to/llama-7b-sft

Sized for: one TPU v4-8 / v5e-8 host or 8×80 GB GPUs.
"""

from rlhf_jax.defaults import PPO_VARIANTS, paper_ppo_config

VARIANTS = tuple(PPO_VARIANTS)


def get_config(variant: str = "standard"):
    config = paper_ppo_config("webgpt", variant, target_length=156, prompt_split="train",
                              prompt_template="alpaca", reward_model="runs/rm_webgpt/export",
                              options={"ties": "second", "empty": "drop"})
    return config
