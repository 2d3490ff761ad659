"""PPO on the synthetic task with a tiny policy (tests, demo), with the paper's PPO-side variants.

Experiment: the SFT policy of ``configs/synthetic/sft.py`` (2-layer, 64-wide Llama)
optimised with PPO against the length-biased reward model of
``configs/synthetic/rm.py``; the value head shares the policy trunk (TRL's setup).
Responses are capped at 40 words (caps drawn from [40, 41)). ``:high_kl``,
``:reward_scaling``, ``:length_penalty``, ``:omit_long``, ``:lppo`` and
``:lppo_beta0`` select the paper's interventions (Tables 1–3); LPPO's target
length is 30 words.

Command::

    rlhf-jax sft --config configs/synthetic/sft.py --workdir /tmp/sft
    rlhf-jax train-rm --config configs/synthetic/rm.py --workdir /tmp/rm
    rlhf-jax ppo --config configs/synthetic/ppo.py[:VARIANT] --workdir /tmp/ppo \\
        --config.model.init=/tmp/sft/export --config.reward.model=/tmp/rm/export

Sized for: 2 CPU cores, a few minutes.
"""

from rlhf_jax.defaults import PPO_VARIANTS, ppo_config, with_ppo_variant

VARIANTS = tuple(PPO_VARIANTS)
TARGET_WORDS = 30


def get_config(variant: str = "standard"):
    config = ppo_config("synthetic", init="/tmp/sft/export")
    config.reward.model = "/tmp/rm/export"
    config.reward.template = "{prompt} {response}"
    config.reward.max_length = 96
    config.reward.buckets = (48, 96)
    config.reward.append_eos = True  # as configs/synthetic/rm.py trains it
    config.data.max_prompt_length = 8
    config.generation.min_new_tokens = 40
    config.generation.max_new_tokens = 41
    config.generation.prompt_bucket = 8
    config.ppo.steps = 40
    config.ppo.batch_size = 32
    config.ppo.mini_batch_size = 16
    config.ppo.ppo_epochs = 2
    config.ppo.lr = 3e-4
    config.ppo.save_every = 10
    return with_ppo_variant(config, variant, TARGET_WORDS)
