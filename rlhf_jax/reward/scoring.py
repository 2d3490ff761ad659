"""Scoring (prompt, response) texts with a reward model: the one path PPO and ``rlhf-jax score`` share.

template → tokenise → truncate (+ EOS) → bucket → pad → one jitted forward per
bucket shape. The paper's code scores ``qaform(q, r)`` through a transformers
``pipeline(..., truncation=True)``: the template's text, tokenised with the
reward model's tokenizer (its BOS, no EOS) and cut from the right at the
tokenizer's limit. ``append_eos`` is off by default to match; turn it on for
reward models trained with an EOS after every response.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import numpy as np

from rlhf_jax.data import pipeline
from rlhf_jax.data.templates import rm_text


def sharded_forward(model, mesh):
    """``forward(params, ids, mask) -> scores [b]``, jitted over ``mesh``: params by their logical
    axes (:func:`rlhf_jax.sharding.param_shardings`), rows over the batch axes."""
    from rlhf_jax import sharding
    batch = sharding.batch_sharding(mesh)
    return jax.jit(lambda p, ids, m: model.apply({"params": p}, ids, attention_mask=m).values,
                   in_shardings=(sharding.param_shardings(model, mesh), batch, batch),
                   out_shardings=batch)


class RewardScorer:
    """``scorer(prompts, responses) -> scores [n]`` (float32) of a ``ScalarModel(readout="last")``.

    ``max_length``: tokens kept per input (the start is kept, as with the
    pipeline's right truncation), EOS included when ``append_eos``;
    ``buckets``: the padded widths (a few compiled shapes); ``batch_size``: rows
    per forward (``None``: all rows in one call, e.g. a PPO batch). A short last
    chunk is filled with copies of its first row, which are dropped.
    """

    def __init__(self, model, params, tokenizer, *, template: str, max_length: int,
                 buckets: Sequence[int], append_eos: bool = False,
                 batch_size: Optional[int] = None, mesh=None):
        pipeline.reward_model_ids(tokenizer, [], append_eos)  # no EOS to append: fail now
        self.model, self.tokenizer = model, tokenizer
        self.template, self.append_eos, self.batch_size = template, append_eos, batch_size
        self.max_length = min(max_length, buckets[-1])
        self.buckets = tuple(buckets)
        self.pad_id = pipeline.pad_token_id(tokenizer)
        self.row_multiple = 1
        self.mesh = mesh
        if mesh is None:
            self.params = jax.device_put(params)
            self.forward = jax.jit(lambda p, ids, m: model.apply({"params": p}, ids,
                                                                 attention_mask=m).values)
        else:  # params sharded by their logical axes, rows over the batch axes
            from rlhf_jax import sharding
            self.params = sharding.shard_params(params, sharding.param_shardings(model, mesh))
            self.forward = sharded_forward(model, mesh)
            shards = math.prod(mesh.shape[a] for a in sharding.BATCH_AXES)
            self.row_multiple = max(shards // jax.process_count(), 1)  # this process's shards

    def token_ids(self, prompts: Sequence[str], responses: Sequence[str]) -> list:
        """The reward model's input ids of each pair: template, tokenise (+ EOS), truncate."""
        texts = [rm_text(p, r, self.template) for p, r in zip(prompts, responses, strict=True)]
        ids = pipeline.reward_model_ids(self.tokenizer, texts, self.append_eos)
        if not self.append_eos:
            return [x[:self.max_length] for x in ids]
        return [np.append(x[:-1][:self.max_length - 1], x[-1]) for x in ids]  # EOS stays last

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        ids = self.token_ids(prompts, responses)
        size = self.batch_size or max(len(ids), 1)
        size = -(-size // self.row_multiple) * self.row_multiple  # whole rows per batch shard
        scores = []
        for start in range(0, len(ids), size):
            chunk = ids[start:start + size]
            filled = chunk + [chunk[0]] * (size - len(chunk))
            width = pipeline.bucket_width(max(len(x) for x in filled), self.buckets)
            arr = pipeline.pad_rows(filled, width, self.pad_id)
            mask = pipeline.pad_rows([np.ones(len(x), np.int32) for x in filled], width, 0)
            scores.append(np.asarray(self._forward(arr, mask), np.float32)[:len(chunk)])
        return np.concatenate(scores) if scores else np.zeros(0, np.float32)

    def _forward(self, ids, mask) -> np.ndarray:
        """Scores of this process's rows. With several processes (a mesh over all of them) each
        passes its own rows, padded to the width all agree on, and keeps its own scores."""
        if self.mesh is None or jax.process_count() == 1:
            return np.asarray(self.forward(self.params, ids, mask))
        from rlhf_jax import sharding
        width = int(np.max(sharding.all_processes(np.asarray([ids.shape[1]]))))
        ids = np.pad(ids, ((0, 0), (0, width - ids.shape[1])), constant_values=self.pad_id)
        mask = np.pad(mask, ((0, 0), (0, width - mask.shape[1])))
        ids, mask = sharding.shard_batch((ids, mask), self.mesh)
        return sharding.local_rows(self.forward(self.params, ids, mask))
