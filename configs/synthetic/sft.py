"""SFT of a tiny Llama on the synthetic task's demonstrations (the demo's initial policy; tests).

Experiment: next-token loss on the responses of 2,000 synthetic demonstrations
("tell me about fruit" → on-topic words, 8–16 words, EOS), from a random-init
2-layer, 64-wide Llama with the task's word-level tokenizer.

Command::

    rlhf-jax sft --config configs/synthetic/sft.py --workdir /tmp/sft_synth

Sized for: 2 CPU cores, well under a minute.
"""

from rlhf_jax.defaults import sft_config

SYNTHETIC_VOCAB = 192  # ≥ the task tokenizer's 181 tokens


def get_config():
    config = sft_config("synthetic", init="preset:tiny-llama")
    config.model.overrides = {"vocab_size": SYNTHETIC_VOCAB, "bos_token_id": 3, "eos_token_id": 1,
                              "pad_token_id": 0}
    config.data.buckets = (32, 64)
    config.data.max_length = 64
    config.sft.lr = 3e-3
    config.sft.warmup_steps = 20
    config.sft.epochs = 3
    config.sft.batch_size = 32
    config.sft.eval_every = 100
    return config
