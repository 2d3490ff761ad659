"""Paper reward model: Stack Exchange paired (Singhal et al. 2023 §3, Table 4), with each RM intervention.

Experiment: LLaMA-7B Bradley–Terry reward model on ``lvwerra/stack-exchange-paired``
(response_j ≻ response_k), the ``reward`` folder for training and ``evaluation``
for eval, input "Question: {q}\\n\\nAnswer: {a}", 512 tokens. Variants ``:bal``,
``:rda``, ``:ctr`` as in Table 4. ``:odin`` trains ODIN's quality and length heads (Chen et al. 2024); ``:calibrated`` fits the length trend of the standard model's rewards (Huang et al. 2024) into its export.

Command::

    rlhf-jax train-rm --config configs/rm/stack.py[:bal|:rda|:ctr|:odin|:calibrated] --workdir runs/rm_stack[_VARIANT] \\
        --config.model.init=/path/to/llama-7b-hf [--config.data.path=stack-exchange-paired/data]

Sized for (``rlhf-jax fit`` at 12da3a0 on the WebGPT config, whose shapes this one shares;
LLaMA-7B, the paper's LoRA as shipped):
one TPU v5e-8 host, peaking at 2.44 GiB/chip (the eval forward) of 15.75 usable; FSDP over all
chips, a bfloat16 base, bfloat16 compute, remat. Full fine-tuning (``--config.model.lora_rank=0
--config.model.param_dtype=float32``) fits a v5e-8 too: 14.54 GiB/chip for the RM step. Check a
change first::

    rlhf-jax fit --config configs/rm/stack.py --topology v5e-8 \\
        --config.model.init=preset:llama-7b
"""

from rlhf_jax.defaults import RM_VARIANTS, paper_reward_model_config

VARIANTS = RM_VARIANTS


def get_config(intervention: str = "none"):
    config = paper_reward_model_config("stack_exchange", intervention)
    config.data.options = {"folders": ("reward", "evaluation")}
    config.data.train_split = "reward"
    config.data.eval_split = "evaluation"
    config.data.max_eval_pairs = 5000  # the evaluation folder is large; the paper evaluated a sample
    return config
