"""Paper PPO on Stack Exchange (Singhal et al. 2023 §4.1, §5; Tables 1–3) and its PPO-side variants.

The setting of :func:`rlhf_jax.defaults.paper_ppo_config` against the reward model
of ``configs/rm/stack.py``; prompts: the questions of stack-exchange-paired's ``rl``
folder, template "Question: …\\n\\nAnswer: ". Variants: ``:high_kl``,
``:reward_scaling``, ``:length_penalty``, ``:omit_long``, ``:lppo`` (N = 250),
``:lppo_beta0``; then the debiasing methods since the paper (issue 17): ``:odin`` (PPO on the
quality head of ``configs/rm/stack.py:odin``'s export, ``runs/rm_stack_odin/export``),
``:calibrated`` (the LOWESS-calibrated reward of ``configs/rm/stack.py:calibrated``,
``runs/rm_stack_calibrated/export``), ``:grpo`` and ``:dr_grpo`` (8 prompts × 8 responses a
step, no value loss).

Command::

    rlhf-jax ppo --config configs/ppo/stack.py[:VARIANT] --workdir runs/ppo_stack[_VARIANT] \\
        --config.model.init=/path/to/llama-7b-sft

Sized for (``rlhf-jax fit`` at 12da3a0 on the WebGPT config, whose shapes this one shares;
LLaMA-7B, the paper's LoRA as shipped):
one TPU v5e-8 host; the sampler peaks at 9.94 GiB/chip of 15.75 usable. Full fine-tuning
(``--config.model.lora_rank=0 --config.model.param_dtype=float32``) needs a v5p-8 (37.15
GiB/chip of 93.75) or a v5e-16 (13.75 of 15.75, measured at 965b550); a v5e-8 is
not enough (19.30, fc9cd64). Check a change first::

    rlhf-jax fit --config configs/ppo/stack.py --topology v5e-8 \\
        --config.model.init=preset:llama-7b --config.reward.model=preset:llama-7b
"""

from rlhf_jax.defaults import PPO_VARIANTS, paper_ppo_config

VARIANTS = tuple(PPO_VARIANTS)


def get_config(variant: str = "standard"):
    config = paper_ppo_config("stack_exchange", variant, target_length=250, prompt_split="rl",
                              prompt_template="stack", reward_model="runs/rm_stack/export",
                              options={"folders": ("rl",)})
    return config
