"""Paper PPO: Stack Exchange (Singhal et al. 2023 §2.2, §4.1, §5; Tables 1–3), with each PPO-side variant.

Experiment: a LLaMA-7B SFT policy (value head on its trunk, TRL 0.5 defaults:
64 prompts per step, lr 1.4e-5, cliprange 0.2, value clip 0.2, vf_coef 0.1,
γ 1, λ 0.95, β₀ 0.04 adaptive with target 0.1 and horizon 10000, one PPO
epoch; top_k 0, top_p 1, temperature 1, caps drawn from [154, 155)) against the
Stack Exchange reward model of ``configs/rm/stack.py``; prompts: the questions of stack-exchange-paired's rl folder, policy
template ``stack``. Variants: ``:high_kl`` (β₀ 0.12), ``:reward_scaling``,
``:length_penalty``, ``:omit_long``, ``:lppo`` (reward 1 − |len/250 − 1|) and
``:lppo_beta0``.

Command::

    rlhf-jax ppo --config configs/ppo/stack.py[:VARIANT] --workdir runs/ppo_stack \\
        --config.model.init=/path/to/llama-7b-sft --config.reward.model=runs/rm_stack/export

Sized for: one TPU v4-8 / v5e-8 host or 8×80 GB GPUs (FSDP over 8 chips, float32
master weights, bfloat16 compute, remat).
"""

from rlhf_jax.defaults import PPO_VARIANTS, ppo_config, with_ppo_variant

VARIANTS = PPO_VARIANTS
TARGET_LENGTH = 250  # LPPO's N and the length penalty's N (paper)


def get_config(variant: str = "standard"):
    config = ppo_config("stack_exchange", init="checkpoints/llama-7b-sft")
    config.reward.model = "runs/rm_stack/export"
    config.data.prompt_split = "rl"
    config.data.prompt_template = "stack"
    config.data.options = {"folders": ("rl",)}
    config.model.dtype = "bfloat16"
    config.model.remat = "full"
    config.mesh.data, config.mesh.fsdp = 1, -1
    config.ppo.mini_batch_size = 16
    config.ppo.steps = 200
    return with_ppo_variant(config, variant, TARGET_LENGTH)
