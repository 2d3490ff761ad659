"""DPO, R-DPO or SimPO on RLCD, the pairs of ``configs/rm/rlcd.py`` (beyond the paper).

Experiment: the paper's SFT LLaMA-7B trained directly on the reward model's preference pairs
(same splits, 512-token limit), with the paper's LoRA (r 8 on q_proj and v_proj, a bfloat16
base that is also the reference) and the policy prompt template of its PPO runs on this
dataset. ``:dpo`` (default), ``:rdpo`` and ``:simpo`` select the loss
(``rlhf_jax.defaults.DPO_LOSS_SETTINGS`` gives their coefficients).

Command::

    rlhf-jax dpo --config configs/dpo/rlcd.py[:rdpo|:simpo] --workdir runs/dpo_rlcd \\
        --config.model.init=/path/to/llama-7b-sft [--config.data.path=...]

Sized for: one TPU v5e-8 host; check with
``rlhf-jax fit --config configs/dpo/rlcd.py --topology v5e-8 --config.model.init=preset:llama-7b``
(docs/dpo.md has the table for every loss).
"""

from rlhf_jax.defaults import DPO_LOSS_SETTINGS, paper_dpo_config

VARIANTS = tuple(DPO_LOSS_SETTINGS)


def get_config(loss: str = "dpo"):
    config = paper_dpo_config("rlcd", loss, prompt_template="rlcd")
    config.data.eval_split = "eval"
    return config
