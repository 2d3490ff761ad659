"""The PyTorch side of each case: TRL 0.11.4's ``PPOTrainer`` and plain transformers + torch steps.

- ``ppo``: ``trl.PPOTrainer`` with an ``AutoModelForCausalLMWithValueHead`` policy and its own
  reference copy, both from the shared ``policy/`` directory. One iteration is
  ``trainer.generate`` (all prompts in one batch; ``min_new_tokens = max_new_tokens`` with the
  tokenizer's EOS banned, so that every response has exactly ``new_tokens`` tokens), decoding
  the responses (as TRL's scripts do), the scores, and ``trainer.step``. The step's first two
  ``batched_forward_pass`` calls are the old log-probs + values and the reference log-probs
  (TRL 0.11.4's order); the rest of the step (rewards, advantages, one forward + backward per
  minibatch, statistics) is *update*. A reward model, when the case has one, is
  ``AutoModelForSequenceClassification`` from ``reward/`` over the decoded prompt + response,
  padded to the same width as ours, as the paper's scripts score.
- ``rm``: ``LlamaForSequenceClassification`` from ``reward/``, the Bradley–Terry loss over one
  forward of chosen + rejected stacked (as ours; TRL's ``RewardTrainer`` runs two forwards),
  ``clip_grad_norm_(1.0)`` and ``torch.optim.AdamW``.
- ``sft``: ``LlamaForCausalLM`` from ``policy/``, the masked token-mean NLL, the same clipping
  and optimizer.

``device`` is ``cpu`` or ``cuda`` (models and inputs moved there; each timed phase ends with
``torch.cuda.synchronize``); ``dtype="bfloat16"`` runs every forward under ``torch.autocast``
(TRL: accelerate's ``mixed_precision="bf16"``), with float32 weights as ours.

Where the stacks' own designs differ, each does its own work: TRL's forward passes run the LM
head and its log-softmax over every prompt and response position and keep the logits for the
entropy, ours only over the response positions; TRL forwards in chunks of ``mini_batch_size``
rows, ours the whole batch at once.
"""

from __future__ import annotations

import time

import numpy as np

from rlhf_jax.benchmarks.vs_torch.work import (LR, PPO_SETTINGS, Case, peak_rss_bytes, prompt_ids,
                                               random_ids, reward_width, sft_loss_mask)

TRL_VERSION = "0.11.4"  # the phase split below follows its PPOTrainer.step


def _torch(threads: int):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return torch


def _sync(torch, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _autocast(torch, device: str, dtype: str):
    """``torch.autocast`` to bfloat16 on ``device``, or a no-op context for float32."""
    import contextlib
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=torch.bfloat16)


def device_peak_bytes(torch, device: str) -> int:
    return int(torch.cuda.max_memory_allocated()) if device == "cuda" else 0


def _tokenizer(path: str):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class ForwardPassTimer:
    """Wraps ``PPOTrainer.batched_forward_pass`` and records each call's seconds."""

    def __init__(self, trainer):
        self.calls, self._inner = [], trainer.batched_forward_pass
        trainer.batched_forward_pass = self

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self._inner(*args, **kwargs)
        self.calls.append(time.perf_counter() - start)
        return out


def adam_steps(optimizer) -> int:
    """The optimizer's own step count (its first parameter's ``step``; 0 before the first)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            return int(state["step"]) if "step" in state else 0
    return 0


def run_ppo(case: Case, checkpoints: dict, repeats: int, threads: int, device: str = "cpu",
            dtype: str = "float32") -> dict:
    torch = _torch(threads)
    import trl
    from transformers import AutoModelForSequenceClassification
    from trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
    if trl.__version__ != TRL_VERSION:
        raise SystemExit(f"the PPO comparison needs trl=={TRL_VERSION} (found {trl.__version__}): "
                         "pip install -e '.[bench]'")

    tokenizer = _tokenizer(checkpoints["policy"])
    config = PPOConfig(learning_rate=LR, batch_size=case.batch, mini_batch_size=case.minibatch,
                       ppo_epochs=case.ppo_epochs, gradient_accumulation_steps=1, seed=0,
                       accelerator_kwargs={"mixed_precision": "bf16" if dtype == "bfloat16"
                                           else "no", "cpu": device == "cpu"},
                       **{trl_key: value for trl_key, value in PPO_SETTINGS.values()})

    def load():
        return AutoModelForCausalLMWithValueHead.from_pretrained(checkpoints["policy"],
                                                                 dtype=torch.float32)
    trainer = PPOTrainer(config, load(), load(), tokenizer)
    forwards = ForwardPassTimer(trainer)
    queries = [torch.tensor(row, dtype=torch.long) for row in prompt_ids(case, checkpoints)]
    generation = dict(min_new_tokens=case.new_tokens, max_new_tokens=case.new_tokens, top_k=0,
                      top_p=1.0, temperature=1.0, do_sample=True,
                      # the tokenizer's EOS, which TRL's generate cuts at: min_new_tokens bans it
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if case.reward == "model":
        reward_model = AutoModelForSequenceClassification.from_pretrained(
            checkpoints["reward"], dtype=torch.float32).eval().to(device)
        reward_model.config.pad_token_id = tokenizer.pad_token_id
    runs, steps_before = [], 0
    for i in range(repeats + 1):  # the first is the warm-up
        if i == 1:
            steps_before = adam_steps(trainer.optimizer.optimizer)
        _sync(torch, device)
        start = time.perf_counter()
        responses = trainer.generate(queries, return_prompt=False, batch_size=case.batch,
                                     **generation)
        _sync(torch, device)
        generated = time.perf_counter()
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        if case.reward == "model":
            prompts = tokenizer.batch_decode(queries, skip_special_tokens=True)
            with torch.no_grad(), _autocast(torch, device, dtype):
                inputs = tokenizer([p + r for p, r in zip(prompts, texts)], return_tensors="pt",
                                   padding="max_length", truncation=True,
                                   max_length=reward_width(case)).to(device)
                scores = list(reward_model(**inputs).logits[:, 0].float())
                _sync(torch, device)
        else:
            scores = [torch.tensor(1.0) for _ in texts]
        scored = time.perf_counter()
        forwards.calls.clear()
        trainer.step(queries, responses, scores)
        _sync(torch, device)
        done = time.perf_counter()
        if len(forwards.calls) != 2 + case.optimizer_steps:
            raise RuntimeError(f"TRL's step made {len(forwards.calls)} forward passes; expected "
                               f"2 + {case.optimizer_steps} minibatches")
        policy_values, reference = forwards.calls[0], forwards.calls[1]
        if i:
            runs.append({"generation": generated - start, "scoring": scored - generated,
                         "policy_values": policy_values, "reference": reference,
                         "update": done - scored - policy_values - reference,
                         "iteration": done - start,
                         "sampled_tokens": int(sum(len(r) for r in responses))})
    steps = (adam_steps(trainer.optimizer.optimizer) - steps_before) / repeats
    return {"runs": runs, "optimizer_steps": steps, "peak_rss": peak_rss_bytes(),
            "peak_device": device_peak_bytes(torch, device)}


def run_supervised(case: Case, checkpoints: dict, repeats: int, threads: int, device: str = "cpu",
                   dtype: str = "float32") -> dict:
    torch = _torch(threads)
    import transformers

    options = dict(dtype=torch.float32, attn_implementation="sdpa")
    if case.kind == "rm":
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            checkpoints["reward"], **options)
        model.config.pad_token_id = checkpoints["pad_id"]  # ids never take it: the last pools
        chosen = random_ids(case.batch, case.seq_len, checkpoints, seed=2)
        rejected = random_ids(case.batch, case.seq_len, checkpoints, seed=3)
        ids = torch.tensor(np.concatenate([chosen, rejected]), dtype=torch.long, device=device)

        def loss_fn():
            rewards = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, 0]
            margin = rewards[:case.batch] - rewards[case.batch:]
            return -torch.nn.functional.logsigmoid(margin).mean()
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(checkpoints["policy"], **options)
        ids = torch.tensor(random_ids(case.batch, case.seq_len, checkpoints, seed=4),
                           dtype=torch.long, device=device)
        weights = torch.tensor(sft_loss_mask(case)[:, 1:], dtype=torch.float32, device=device)

        def loss_fn():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, :-1]
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                    ids[:, 1:].reshape(-1), reduction="none")
            return (nll * weights.reshape(-1)).sum() / weights.sum()
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    runs, first_loss, steps_before = [], None, 0
    for i in range(repeats + 1):
        if i == 1:
            steps_before = adam_steps(optimizer)
        _sync(torch, device)
        start = time.perf_counter()
        with _autocast(torch, device, dtype):
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        _sync(torch, device)
        if i:
            runs.append({"step": time.perf_counter() - start})
        else:
            first_loss = float(loss.detach())
    return {"runs": runs, "optimizer_steps": (adam_steps(optimizer) - steps_before) / repeats,
            "peak_rss": peak_rss_bytes(), "peak_device": device_peak_bytes(torch, device),
            "first_loss": first_loss}


def run(case: Case, checkpoints: dict, repeats: int, threads: int, device: str = "cpu",
        dtype: str = "float32") -> dict:
    runner = run_ppo if case.kind == "ppo" else run_supervised
    return runner(case, checkpoints, repeats, threads, device, dtype)
