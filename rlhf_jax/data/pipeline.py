"""Tokenised, padded, bucketed batches through grain.

Pairs (``{id, prompt, chosen, rejected}``) become token arrays once, on the host
(:func:`tokenize_pairs`); SFT examples (``{id, prompt, response}``) likewise
(:func:`tokenize_sft`). Batches come from a grain ``MapDataset``: a seeded
shuffle per epoch, this process's slice of it (``[process_index::process_count]``:
disjoint shards that cover the set), fixed batch size, and padding to the
smallest of a few bucket widths so that compiled steps see only a handful of
shapes. Sequences longer than ``max_length`` tokens are dropped and counted
(paper: 512 tokens).
"""

from __future__ import annotations

import bisect
import logging
from typing import Optional, Sequence

import grain
import numpy as np

from rlhf_jax.data.records import DropCounter
from rlhf_jax.data.templates import policy_prompt, rm_text

log = logging.getLogger(__name__)


def _token_ids(tokenizer, texts: Sequence[str]) -> list:
    if not texts:
        return []
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def policy_prompt_ids(tokenizer, texts: Sequence[str]) -> list:
    """A policy's prompt ids, as the paper's ``mapfilt`` tokenises queries: with the tokenizer's
    own special tokens (LLaMA: BOS; GPT-2/SmolLM2/ChatML prompts: none), the same in SFT, PPO
    and sampling."""
    return tokenizer(list(texts), add_special_tokens=True)["input_ids"] if texts else []


def _with_eos(ids: list, eos_id: Optional[int]) -> np.ndarray:
    return np.asarray(list(ids) + ([eos_id] if eos_id is not None else []), np.int32)


def reward_model_ids(tokenizer, texts: Sequence[str], append_eos: bool = False) -> list:
    """A reward model's input ids of templated texts, the same in training and in scoring.

    As the paper's ``preprocess_function`` and its scoring ``pipeline`` tokenise:
    the tokenizer's own special tokens (LLaMA: BOS; GPT-2/SmolLM2: none), and no
    EOS unless ``append_eos``.
    """
    if append_eos and tokenizer.eos_token_id is None:
        raise ValueError("the reward model's tokenizer has no EOS token, which append_eos needs")
    eos = tokenizer.eos_token_id if append_eos else None
    ids = tokenizer(list(texts), add_special_tokens=True)["input_ids"] if texts else []
    return [_with_eos(x, eos) for x in ids]


def tokenize_pairs(pairs: Sequence[dict], tokenizer, *, template: str = "question_answer",
                   max_length: int = 512, append_eos: bool = False, source: str = "pairs"):
    """Reward-model examples from preference pairs; drops (and counts) over-long pairs.

    Each example: ``index`` (position in ``pairs``), ``id``, ``chosen_ids`` and
    ``rejected_ids`` (:func:`reward_model_ids` of the full reward-model text under
    ``template``), and ``chosen_len``/``rejected_len``: the response alone in
    tokens (what the paper's length statistics count).
    """
    chosen = reward_model_ids(tokenizer, [rm_text(p["prompt"], p["chosen"], template)
                                          for p in pairs], append_eos)
    rejected = reward_model_ids(tokenizer, [rm_text(p["prompt"], p["rejected"], template)
                                            for p in pairs], append_eos)
    chosen_len = _token_ids(tokenizer, [p["chosen"] for p in pairs])
    rejected_len = _token_ids(tokenizer, [p["rejected"] for p in pairs])
    drops, examples = DropCounter(), []
    for i, pair in enumerate(pairs):
        c, r = chosen[i], rejected[i]
        if max(len(c), len(r)) > max_length:
            drops.add(f"longer than max_length={max_length} tokens")
            continue
        examples.append({"index": i, "id": pair["id"], "chosen_ids": c, "rejected_ids": r,
                         "chosen_len": len(chosen_len[i]), "rejected_len": len(rejected_len[i])})
    drops.log(log, source)
    return examples, drops


def _prompt_and_response(prompt_ids, response_ids, eos_id) -> tuple:
    """``(prompt + response + EOS ids, loss mask)``: the mask is 1 on the response and EOS."""
    ids = np.concatenate([np.asarray(prompt_ids, np.int32), _with_eos(response_ids, eos_id)])
    loss_mask = np.zeros(len(ids), np.int32)
    loss_mask[len(prompt_ids):] = 1
    return ids, loss_mask


def tokenize_sft(examples: Sequence[dict], tokenizer, *, template: str = "plain",
                 max_length: int = 512, source: str = "sft"):
    """SFT examples: ``ids`` = prompt + response + EOS, ``loss_mask`` = 1 on response tokens (and EOS)."""
    prompts = policy_prompt_ids(tokenizer, [policy_prompt(e["prompt"], template) for e in examples])
    responses = _token_ids(tokenizer, [e["response"] for e in examples])
    drops, out = DropCounter(), []
    for i, example in enumerate(examples):
        ids, loss_mask = _prompt_and_response(prompts[i], responses[i], tokenizer.eos_token_id)
        if len(ids) > max_length:
            drops.add(f"longer than max_length={max_length} tokens")
            continue
        out.append({"index": i, "id": example["id"], "ids": ids, "loss_mask": loss_mask})
    drops.log(log, source)
    return out, drops


def tokenize_preference_responses(pairs: Sequence[dict], tokenizer, *, template: str = "plain",
                                  max_length: int = 512, source: str = "pairs"):
    """Preference pairs for direct preference losses (DPO and its kin): for each side,
    ``{side}_ids`` = policy prompt + response + EOS and ``{side}_loss_mask`` = 1 on the
    response tokens (and EOS), as :func:`tokenize_sft` makes them. A pair with either side
    longer than ``max_length`` tokens is dropped and counted."""
    prompts = policy_prompt_ids(tokenizer, [policy_prompt(p["prompt"], template) for p in pairs])
    sides = {side: _token_ids(tokenizer, [p[side] for p in pairs])
             for side in ("chosen", "rejected")}
    drops, out = DropCounter(), []
    for i, pair in enumerate(pairs):
        example = {"index": i, "id": pair["id"]}
        for side, responses in sides.items():
            example[f"{side}_ids"], example[f"{side}_loss_mask"] = _prompt_and_response(
                prompts[i], responses[i], tokenizer.eos_token_id)
        if max(len(example["chosen_ids"]), len(example["rejected_ids"])) > max_length:
            drops.add(f"longer than max_length={max_length} tokens")
            continue
        out.append(example)
    drops.log(log, source)
    return out, drops


def bucket_width(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket ≥ ``length`` (buckets sorted ascending)."""
    position = bisect.bisect_left(list(buckets), length)
    if position == len(buckets):
        raise ValueError(f"sequence of {length} tokens exceeds the largest bucket {buckets[-1]}")
    return buckets[position]


def pad_rows(rows: Sequence[np.ndarray], width: int, pad_value: int = 0) -> np.ndarray:
    """Right-pad 1-D int arrays to ``[len(rows), width]``."""
    out = np.full((len(rows), width), pad_value, np.int32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def collate_pairs(examples: Sequence[dict], *, batch_size: int, width: int, pad_id: int) -> dict:
    """Stack pair examples into ``[batch_size, width]`` arrays; filler rows get ``weight`` 0."""
    rows, real = _fill(examples, batch_size)
    batch = {}
    for side in ("chosen", "rejected"):
        ids = [e[f"{side}_ids"] for e in rows]
        batch[f"{side}_ids"] = pad_rows(ids, width, pad_id)
        batch[f"{side}_mask"] = pad_rows([np.ones_like(x) for x in ids], width, 0)
        batch[f"{side}_len"] = np.asarray([e[f"{side}_len"] for e in rows], np.int32)
    batch["index"] = np.asarray([e["index"] for e in rows], np.int32)
    batch["weight"] = real.astype(np.float32)
    return batch


FILLER = "_filler"


def _fill(examples: Sequence[dict], batch_size: int) -> tuple:
    """Rows completed to ``batch_size`` with copies of the first, and which rows are real."""
    rows = list(examples) + [examples[0]] * (batch_size - len(examples))
    real = np.asarray([i < len(examples) and not e.get(FILLER, False) for i, e in enumerate(rows)])
    return rows, real


def collate_sft(examples: Sequence[dict], *, batch_size: int, width: int, pad_id: int) -> dict:
    """Stack SFT examples into ``[batch_size, width]``: ``ids``, ``mask``, ``loss_mask`` (0 on fillers)."""
    rows, real = _fill(examples, batch_size)
    loss_masks = [e["loss_mask"] * int(r) for e, r in zip(rows, real)]
    return {"ids": pad_rows([e["ids"] for e in rows], width, pad_id),
            "mask": pad_rows([np.ones_like(e["ids"]) for e in rows], width, 0),
            "loss_mask": pad_rows(loss_masks, width, 0)}


def collate_preference_responses(examples: Sequence[dict], *, batch_size: int, width: int,
                                 pad_id: int) -> dict:
    """Stack :func:`tokenize_preference_responses` examples into ``[batch_size, width]``
    arrays per side: ``{side}_ids``, ``{side}_mask``, ``{side}_loss_mask``; ``weight`` is 0 on
    filler rows."""
    rows, real = _fill(examples, batch_size)
    batch = {"index": np.asarray([e["index"] for e in rows], np.int32),
             "weight": real.astype(np.float32)}
    for side in ("chosen", "rejected"):
        batch[f"{side}_ids"] = pad_rows([e[f"{side}_ids"] for e in rows], width, pad_id)
        batch[f"{side}_mask"] = pad_rows([np.ones_like(e[f"{side}_ids"]) for e in rows], width, 0)
        batch[f"{side}_loss_mask"] = pad_rows([e[f"{side}_loss_mask"] for e in rows], width, 0)
    return batch


def batches(examples: Sequence[dict], collate, *, batch_size: int, buckets: Sequence[int],
            pad_id: int, seed: Optional[int] = None, epoch: int = 0, train: bool = True,
            process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
    """One epoch of this process's batches as a grain ``MapDataset`` (``batch_size`` per process).

    Global batches of ``batch_size · process_count`` rows are formed first and
    each process keeps its own contiguous ``batch_size`` rows of each: the
    shards are disjoint and cover the set, and every process pads to the same
    bucket width (the global batch's), so the global array has one shape.
    ``train``: shuffled with a seed derived from ``(seed, epoch)``, trimmed to
    whole global batches. Otherwise (eval): no shuffle, every example once;
    zero-weight filler rows complete the last global batch.
    """
    examples = list(examples)
    global_batch = batch_size * process_count
    if not train and examples:
        examples += [{**examples[0], FILLER: True}] * (-len(examples) % global_batch)
    dataset = grain.MapDataset.source(examples)
    if train:
        dataset = dataset.shuffle(seed=epoch_seed(seed, epoch))
        dataset = dataset[:len(dataset) // global_batch * global_batch]

    def local(rows):
        width = bucket_width(max(_longest(r) for r in rows), buckets)
        mine = rows[process_index * batch_size:(process_index + 1) * batch_size]
        return collate(mine, batch_size=batch_size, width=width, pad_id=pad_id)
    return dataset.batch(global_batch, drop_remainder=train, batch_fn=local)


def epoch_seed(seed: int, epoch: int) -> int:
    """A shuffle seed per (seed, epoch) pair that does not collide across seeds."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _longest(example: dict) -> int:
    return max(len(example[k]) for k in ("chosen_ids", "rejected_ids", "ids") if k in example)


def pad_token_id(tokenizer) -> int:
    """The tokenizer's pad id, else its EOS id, else 0 (masks mark padding either way)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def steps_per_epoch(num_examples: int, batch_size: int, process_count: int = 1) -> int:
    """Training steps in one epoch of :func:`batches` (``train=True``)."""
    return num_examples // (batch_size * process_count)
