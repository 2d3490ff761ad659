"""DPO, R-DPO or SimPO (``:dpo`` default, ``:rdpo``, ``:simpo``) on WebGPT comparisons:
the pairs of ``configs/rm/webgpt.py``, from the paper's SFT LLaMA-7B with its LoRA
(the setting: ``rlhf_jax.defaults.paper_dpo_config``; beyond the paper).

Command::

    rlhf-jax dpo --config configs/dpo/webgpt.py[:rdpo|:simpo] --workdir runs/dpo_webgpt \\
        --config.model.init=/path/to/llama-7b-sft

Sized for one TPU v5e-8 host (``rlhf-jax fit``; docs/dpo.md has the table).
"""

from rlhf_jax.defaults import DPO_LOSS_SETTINGS, paper_dpo_config

VARIANTS = tuple(DPO_LOSS_SETTINGS)


def get_config(loss: str = "dpo"):
    config = paper_dpo_config("webgpt", loss, prompt_template="alpaca")
    config.data.options = {"ties": "second", "empty": "drop"}
    config.data.eval_split = "eval"
    return config
