"""DPO, R-DPO or SimPO on the synthetic task's length-biased preference pairs (tests, demo).

Experiment: the SFT policy of ``configs/synthetic/sft.py`` (2-layer, 64-wide Llama) trained
directly on the pairs that train ``configs/synthetic/rm.py``'s reward model, labelled with
P(a ≻ b) = σ(α·Δquality + β·Δlength), α = 1, β = 0.3 (a strong length bias). ``:dpo``
(the default), ``:rdpo`` and ``:simpo`` select the loss (``rlhf_jax.dpo.losses``).

Command::

    rlhf-jax sft --config configs/synthetic/sft.py --workdir /tmp/sft
    rlhf-jax dpo --config configs/synthetic/dpo.py[:rdpo|:simpo] --workdir /tmp/dpo \\
        --config.model.init=/tmp/sft/export

Sized for: 2 CPU cores, about a minute.
"""

from rlhf_jax.defaults import dpo_config, with_length_biased_pairs

LOSSES = ("dpo", "rdpo", "simpo")


def get_config(loss: str = "dpo"):
    if loss not in LOSSES:
        raise ValueError(f"configs/synthetic/dpo.py:{loss}: expected one of {LOSSES}")
    config = dpo_config("synthetic", init="/tmp/sft/export")
    with_length_biased_pairs(config.data)
    config.dpo.loss = loss
    config.dpo.beta = 2.0 if loss == "simpo" else 0.1
    config.dpo.alpha = 0.02       # R-DPO: per token of length difference
    config.dpo.gamma = 1.0        # SimPO's target margin
    config.dpo.lr = 3e-4
    config.dpo.warmup_steps = 5
    config.dpo.epochs = 1
    config.dpo.batch_size = 32
    config.dpo.eval_batch_size = 64
    config.dpo.eval_every = 20
    config.dpo.log_every = 5
    config.dpo.eval_prompts = 32
    config.dpo.eval_max_new_tokens = 48
    return config
