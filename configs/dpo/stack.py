"""DPO, R-DPO or SimPO (``:dpo`` default, ``:rdpo``, ``:simpo``) on Stack Exchange paired:
the pairs of ``configs/rm/stack.py``, from the paper's SFT LLaMA-7B with its LoRA
(the setting: ``rlhf_jax.defaults.paper_dpo_config``; beyond the paper).

Command::

    rlhf-jax dpo --config configs/dpo/stack.py[:rdpo|:simpo] --workdir runs/dpo_stack \\
        --config.model.init=/path/to/llama-7b-sft

Sized for one TPU v5e-8 host (``rlhf-jax fit``; docs/dpo.md has the table).
"""

from rlhf_jax.defaults import DPO_LOSS_SETTINGS, paper_dpo_config

VARIANTS = tuple(DPO_LOSS_SETTINGS)


def get_config(loss: str = "dpo"):
    config = paper_dpo_config("stack_exchange", loss, prompt_template="stack")
    config.data.options = {"folders": ("reward", "evaluation")}
    config.data.train_split = "reward"
    config.data.eval_split = "evaluation"
    config.data.max_eval_pairs = 5000
    return config
