"""The PyTorch side of each case: TRL 0.11.4's ``PPOTrainer`` and plain transformers + torch steps.

- ``ppo``: ``trl.PPOTrainer`` with an ``AutoModelForCausalLMWithValueHead`` policy and its own
  reference copy, both from the shared ``policy/`` directory. One iteration is
  ``trainer.generate`` (all prompts in one batch; ``min_new_tokens = max_new_tokens`` so that
  every response has exactly ``new_tokens`` tokens), the scores, and ``trainer.step``. The step's
  first two ``batched_forward_pass`` calls are the old log-probs + values and the reference
  log-probs; the rest of the step (rewards, advantages, the minibatch updates, statistics) is
  *update*. A reward model, when the case has one, is ``AutoModelForSequenceClassification``
  from ``reward/`` over the decoded prompt + response, as the paper's scripts score.
- ``rm``: ``LlamaForSequenceClassification`` from ``reward/``, the Bradley–Terry loss over one
  forward of chosen + rejected, ``clip_grad_norm_(1.0)`` and ``torch.optim.AdamW`` (the step
  TRL's ``RewardTrainer`` wraps).
- ``sft``: ``LlamaForCausalLM`` from ``policy/``, the masked token-mean NLL, the same clipping
  and optimizer.
"""

from __future__ import annotations

import time

import numpy as np

from rlhf_jax.benchmarks.vs_torch.work import (LR, PPO_SETTINGS, Case, peak_rss_bytes, prompt_ids,
                                               random_ids, reward_width, sft_loss_mask)


def _torch(threads: int):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return torch


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


class StepCounter:
    """Counts ``optimizer.step`` calls."""

    def __init__(self, optimizer):
        self.count, self._inner = 0, optimizer.step
        optimizer.step = self

    def __call__(self, *args, **kwargs):
        self.count += 1
        return self._inner(*args, **kwargs)


def run_ppo(case: Case, checkpoints: dict, repeats: int, threads: int) -> dict:
    torch = _torch(threads)
    from transformers import AutoModelForSequenceClassification
    from trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer

    tokenizer = _tokenizer(checkpoints["policy"])
    config = PPOConfig(learning_rate=LR, batch_size=case.batch, mini_batch_size=case.minibatch,
                       ppo_epochs=case.ppo_epochs, gradient_accumulation_steps=1, seed=0,
                       **{trl_key: value for trl_key, value in PPO_SETTINGS.values()})
    load = lambda: AutoModelForCausalLMWithValueHead.from_pretrained(  # noqa: E731
        checkpoints["policy"], dtype=torch.float32)
    trainer = PPOTrainer(config, load(), load(), tokenizer)
    forwards, steps = ForwardPassTimer(trainer), StepCounter(trainer.optimizer)
    queries = [torch.tensor(row, dtype=torch.long) for row in prompt_ids(case, checkpoints["vocab_size"])]
    generation = dict(min_new_tokens=case.new_tokens, max_new_tokens=case.new_tokens, top_k=0,
                      top_p=1.0, temperature=1.0, do_sample=True,
                      # the tokenizer's EOS, which TRL's generate cuts at: min_new_tokens bans it
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if case.reward == "model":
        reward_model = AutoModelForSequenceClassification.from_pretrained(
            checkpoints["reward"], dtype=torch.float32).eval()
        reward_model.config.pad_token_id = tokenizer.pad_token_id
    runs = []
    for i in range(repeats + 1):  # the first is the warm-up
        if i == 1:
            steps.count = 0
        start = time.perf_counter()
        responses = trainer.generate(queries, return_prompt=False, batch_size=case.batch,
                                     **generation)
        generated = time.perf_counter()
        if case.reward == "model":
            texts = [tokenizer.decode(q, skip_special_tokens=True)
                     + tokenizer.decode(r, skip_special_tokens=True)
                     for q, r in zip(queries, responses)]
            with torch.no_grad():
                inputs = tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                   max_length=reward_width(case))
                scores = list(reward_model(**inputs).logits[:, 0].float())
        else:
            scores = [torch.tensor(1.0) for _ in responses]
        scored = time.perf_counter()
        forwards.calls.clear()
        trainer.step(queries, responses, scores)
        done = time.perf_counter()
        policy_values, reference = forwards.calls[0], forwards.calls[1]
        if i:
            runs.append({"generation": generated - start, "scoring": scored - generated,
                         "policy_values": policy_values, "reference": reference,
                         "update": done - scored - policy_values - reference,
                         "iteration": done - start,
                         "sampled_tokens": float(sum(len(r) for r in responses))})
    return {"runs": runs, "optimizer_steps": steps.count / repeats, "peak_rss": peak_rss_bytes()}


def run_supervised(case: Case, checkpoints: dict, repeats: int, threads: int) -> dict:
    torch = _torch(threads)
    import transformers

    vocab = checkpoints["vocab_size"]
    if case.kind == "rm":
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            checkpoints["reward"], dtype=torch.float32)
        chosen = random_ids(case.batch, case.seq_len, vocab, seed=2)
        rejected = random_ids(case.batch, case.seq_len, vocab, seed=3)
        ids = torch.tensor(np.concatenate([chosen, rejected]), dtype=torch.long)

        def loss_fn():
            rewards = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, 0]
            return -torch.nn.functional.logsigmoid(rewards[:case.batch] - rewards[case.batch:]).mean()
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(checkpoints["policy"],
                                                                  dtype=torch.float32)
        ids = torch.tensor(random_ids(case.batch, case.seq_len, vocab, seed=4), dtype=torch.long)
        weights = torch.tensor(sft_loss_mask(case)[:, 1:], dtype=torch.float32)

        def loss_fn():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, :-1]
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                    ids[:, 1:].reshape(-1), reduction="none")
            return (nll * weights.reshape(-1)).sum() / weights.sum()
    model.config._attn_implementation = "sdpa"
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    steps = StepCounter(optimizer)
    runs, first_loss = [], None
    for i in range(repeats + 1):
        if i == 1:
            steps.count = 0
        start = time.perf_counter()
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if i:
            runs.append({"step": time.perf_counter() - start})
        else:
            first_loss = float(loss.detach())
    return {"runs": runs, "optimizer_steps": steps.count / repeats, "peak_rss": peak_rss_bytes(),
            "first_loss": first_loss}


def run(case: Case, checkpoints: dict, repeats: int, threads: int) -> dict:
    return (run_ppo if case.kind == "ppo" else run_supervised)(case, checkpoints, repeats, threads)
