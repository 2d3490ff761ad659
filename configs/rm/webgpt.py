"""Paper reward model: WebGPT comparisons (Singhal et al. 2023 §3, Table 4), with each RM intervention.

Experiment: LLaMA-7B Bradley–Terry reward model on ``openai/webgpt_comparisons``
(preferred = higher score, ties to answer_1 as the paper's code; shuffled with
seed 100, first 18,000 train, the rest eval), input "Question: {q}\\n\\nAnswer: {a}",
512 tokens. Variants ``:bal``, ``:rda``, ``:ctr`` select length balancing, random
data augmentation and confidence-based truncation (Table 4). ``:odin`` trains ODIN's quality and length heads (Chen et al. 2024); ``:calibrated`` fits the length trend of the standard model's rewards (Huang et al. 2024) into its export.

Command::

    rlhf-jax train-rm --config configs/rm/webgpt.py[:bal|:rda|:ctr|:odin|:calibrated] --workdir runs/rm_webgpt[_VARIANT] \\
        --config.model.init=/path/to/llama-7b-hf [--config.data.path=comparisons.jsonl]

Sized for (``rlhf-jax fit`` at 12da3a0, LLaMA-7B shapes, the paper's LoRA as shipped): one
TPU v5e-8 host, peaking at 2.44 GiB/chip (the eval forward) of 15.75 usable; FSDP over all
chips, a bfloat16 base, bfloat16 compute, remat. Full fine-tuning (``--config.model.lora_rank=0
--config.model.param_dtype=float32``) fits a v5e-8 too: 14.54 GiB/chip for the RM step. Check a
change first::

    rlhf-jax fit --config configs/rm/webgpt.py --topology v5e-8 \\
        --config.model.init=preset:llama-7b
"""

from rlhf_jax.defaults import RM_VARIANTS, paper_reward_model_config

VARIANTS = RM_VARIANTS


def get_config(intervention: str = "none"):
    config = paper_reward_model_config("webgpt", intervention)
    config.data.options = {"ties": "second", "empty": "drop"}
    config.data.eval_split = "eval"
    return config
