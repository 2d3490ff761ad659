"""Reward model on the synthetic preference task with a strong length bias (tests, demo).

Experiment: a tiny Llama (2 layers, hidden 64, random init) learns a Bradley–Terry
reward from synthetic pairs labelled with P(a ≻ b) = σ(α·Δquality + β·Δlength),
α = 1, β = 0.3 (a strong length bias). ``:bal``, ``:rda``, ``:ctr`` select the
paper's reward-model interventions (Table 4).

Command::

    rlhf-jax train-rm --config configs/synthetic/rm.py[:bal|:rda|:ctr] --workdir /tmp/rm_synth

Sized for: 2 CPU cores, about a minute per run.
"""

from rlhf_jax.defaults import reward_model_config, with_length_biased_pairs

SYNTHETIC_VOCAB = 192  # ≥ the task tokenizer's 181 tokens
VARIANTS = ("none", "bal", "rda", "ctr")


def get_config(intervention: str = "none"):
    config = reward_model_config("synthetic", init="preset:tiny-llama")
    config.model.overrides = {"vocab_size": SYNTHETIC_VOCAB, "bos_token_id": 3, "eos_token_id": 1,
                              "pad_token_id": 0}
    config.data.template = "{prompt} {response}"
    with_length_biased_pairs(config.data)
    config.rm.lr = 1e-3
    config.rm.warmup_steps = 20
    config.rm.epochs = 2
    config.rm.batch_size = 32
    config.rm.eval_batch_size = 64
    config.rm.eval_every = 60
    # Unlike the paper's LLaMA reward models (no EOS), this tiny random-init model reads its score
    # at an EOS after the response: without it eval accuracy falls 0.80 → 0.77 and BAL's 0.65 → 0.53.
    config.rm.append_eos = True
    config.rm.intervention = intervention
    config.rm.ctr.low = -1e9
    config.rm.ctr.high = 4.0
    return config
