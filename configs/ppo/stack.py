"""Paper PPO on Stack Exchange (Singhal et al. 2023 §4.1, §5; Tables 1–3) and its PPO-side variants.

The setting of :func:`rlhf_jax.defaults.paper_ppo_config` against the reward model
of ``configs/rm/stack.py``; prompts: the questions of stack-exchange-paired's ``rl``
folder, template "Question: …\\n\\nAnswer: ". Variants: ``:high_kl``,
``:reward_scaling``, ``:length_penalty``, ``:omit_long``, ``:lppo`` (N = 250),
``:lppo_beta0``.

Command::

    rlhf-jax ppo --config configs/ppo/stack.py[:VARIANT] --workdir runs/ppo_stack \\
        --config.model.init=/path/to/llama-7b-sft

Sized for: one TPU v4-8 / v5e-8 host or 8×80 GB GPUs.
"""

from rlhf_jax.defaults import PPO_VARIANTS, paper_ppo_config

VARIANTS = tuple(PPO_VARIANTS)


def get_config(variant: str = "standard"):
    config = paper_ppo_config("stack_exchange", variant, target_length=250, prompt_split="rl",
                              prompt_template="stack", reward_model="runs/rm_stack/export",
                              options={"folders": ("rl",)})
    return config
