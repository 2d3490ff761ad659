"""Paper PPO on RLCD (Singhal et al. 2023 §4.1, §5; Tables 1–3) and its PPO-side variants.

The setting of :func:`rlhf_jax.defaults.paper_ppo_config` against the reward model
of ``configs/rm/rlcd.py``; prompts: hh-rlhf helpful-base prompts (the paper's RLCD setting), the paper's "Continue the conversation" Alpaca prompt
(``templates.rlcd_policy_prompt``) and reward-model input (``templates.rlcd_rm_text``). Variants: ``:high_kl``,
``:reward_scaling``, ``:length_penalty``, ``:omit_long``, ``:lppo`` (N = 120),
``:lppo_beta0``.

Command::

    rlhf-jax ppo --config configs/ppo/rlcd.py[:VARIANT] --workdir runs/ppo_rlcd \\
        --config.model.init=/path/to/llama-7b-sft

Sized for (``rlhf-jax fit`` at fc40c01 on the WebGPT config, whose shapes this one shares;
LLaMA-7B, full fine-tuning): a TPU v5p-8 (the sampler peaks at 37.15 GiB/chip of 93.75
usable). It does not fit a v5e-8 (19.30 GiB/chip for the sampler, 17.98 for the update, of
15.75): the paper's LoRA setup is pending (issue 14). Check a change first::

    rlhf-jax fit --config configs/ppo/rlcd.py --topology v5p-8 \\
        --config.model.init=preset:llama-7b --config.reward.model=preset:llama-7b
"""

from rlhf_jax.defaults import PPO_VARIANTS, paper_ppo_config

VARIANTS = tuple(PPO_VARIANTS)


def get_config(variant: str = "standard"):
    config = paper_ppo_config("hh_rlhf", variant, target_length=120, prompt_split="train",
                              prompt_template="rlcd", reward_model="runs/rm_rlcd/export",
                              options={"subset": "helpful-base", "empty": "drop"})
    config.reward.template = "rlcd"  # "Question: {context}\n\nAnswer: {response}", as the paper
    return config
