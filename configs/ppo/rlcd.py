"""Paper PPO on RLCD (Singhal et al. 2023 §4.1, §5; Tables 1–3) and its PPO-side variants.

The setting of :func:`rlhf_jax.defaults.paper_ppo_config` against the reward model
of ``configs/rm/rlcd.py``; prompts: hh-rlhf helpful-base prompts (the paper's RLCD setting), the paper's "Continue the conversation" Alpaca prompt
(``templates.rlcd_policy_prompt``) and reward-model input (``templates.rlcd_rm_text``). Variants: ``:high_kl``,
``:reward_scaling``, ``:length_penalty``, ``:omit_long``, ``:lppo`` (N = 120),
``:lppo_beta0``; then the debiasing methods since the paper (issue 17): ``:odin`` (PPO on the
quality head of ``configs/rm/rlcd.py:odin``'s export, ``runs/rm_rlcd_odin/export``),
``:calibrated`` (the LOWESS-calibrated reward of ``configs/rm/rlcd.py:calibrated``,
``runs/rm_rlcd_calibrated/export``), ``:grpo`` and ``:dr_grpo`` (8 prompts × 8 responses a
step, no value loss).

Command::

    rlhf-jax ppo --config configs/ppo/rlcd.py[:VARIANT] --workdir runs/ppo_rlcd[_VARIANT] \\
        --config.model.init=/path/to/llama-7b-sft

Sized for (``rlhf-jax fit`` at 12da3a0 on the WebGPT config, whose shapes this one shares;
LLaMA-7B, the paper's LoRA as shipped):
one TPU v5e-8 host; the sampler peaks at 9.94 GiB/chip of 15.75 usable. Full fine-tuning
(``--config.model.lora_rank=0 --config.model.param_dtype=float32``) needs a v5p-8 (37.15
GiB/chip of 93.75) or a v5e-16 (13.75 of 15.75, measured at 965b550); a v5e-8 is
not enough (19.30, fc9cd64). Check a change first::

    rlhf-jax fit --config configs/ppo/rlcd.py --topology v5e-8 \\
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
