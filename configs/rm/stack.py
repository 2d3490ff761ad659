"""Paper reward model: Stack Exchange paired (Singhal et al. 2023 §3, Table 4), with each RM intervention.

Experiment: LLaMA-7B Bradley–Terry reward model on ``lvwerra/stack-exchange-paired``
(response_j ≻ response_k), the ``reward`` folder for training and ``evaluation``
for eval, input "Question: {q}\\n\\nAnswer: {a}", 512 tokens. Variants ``:bal``,
``:rda``, ``:ctr`` as in Table 4.

Command::

    rlhf-jax train-rm --config configs/rm/stack.py[:bal|:rda|:ctr] --workdir runs/rm_stack \\
        --config.model.init=/path/to/llama-7b-hf [--config.data.path=stack-exchange-paired/data]

Sized for: one TPU v4-8 / v5e-8 host or 8×80 GB GPUs (FSDP over 8 chips, float32
master weights, bfloat16 compute, remat).
"""

from rlhf_jax.defaults import INTERVENTIONS, paper_reward_model_config

VARIANTS = INTERVENTIONS


def get_config(intervention: str = "none"):
    config = paper_reward_model_config("stack_exchange", intervention)
    config.data.options = {"folders": ("reward", "evaluation")}
    config.data.train_split = "reward"
    config.data.eval_split = "evaluation"
    config.data.max_eval_pairs = 5000  # the evaluation folder is large; the paper evaluated a sample
    return config
