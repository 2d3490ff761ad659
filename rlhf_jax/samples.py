"""Policy samples as JSONL: N samples per prompt from a checkpoint, and reward-model scores for them.

The paper's evaluation (Singhal et al. 2023 §3) samples 8 outputs per eval prompt
with top_p 0.9, temperature 0.9, max_new_tokens 256 and repetition penalty 1.2,
then scores them with a reward model. :func:`generate_samples` writes one row per
sample::

    {"prompt_id", "sample_id", "prompt", "text", "length" (tokens), "eos" (bool)}

and :func:`score_samples` adds ``"score"``. Rows are batched through one
compiled sampler (the last batch is completed with repeats of its first row and
trimmed); files are written atomically.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from rlhf_jax.data import pipeline
from rlhf_jax.data.files import iter_rows
from rlhf_jax.data.records import DataError, require_text, where
from rlhf_jax.data.templates import policy_prompt
from rlhf_jax.generate import left_pad, sample
from rlhf_jax.reward.scoring import RewardScorer

PAPER_EVAL_SAMPLING = {"temperature": 0.9, "top_p": 0.9, "top_k": 0, "max_new_tokens": 256,
                       "repetition_penalty": 1.2, "samples_per_prompt": 8}


def read_prompts(path: str) -> list:
    """``[{"id", "prompt"}]`` from a JSONL file (``prompt``, optional ``id``) or a text file (one per line)."""
    if path.endswith(".jsonl"):
        return [{"id": str(row.get("id", row["_line"])), "prompt": require_text(
            row, "prompt", file=path, row_index=row["_line"] - 1, line=row["_line"])}
            for row in read_jsonl(path)]
    with open(path) as f:
        return [{"id": str(i), "prompt": line.rstrip("\n")} for i, line in enumerate(f) if line.strip()]


def read_jsonl(path: str) -> list:
    """Rows of a JSONL file, each with ``_line`` (1-based). A missing file and a line that is
    not UTF-8, not JSON or not an object raise :class:`DataError`, naming the file, row and
    line (:func:`rlhf_jax.data.files.iter_rows` reads the lines)."""
    rows = []
    for row_index, line, row in iter_rows(path, fmt="jsonl"):
        if not isinstance(row, dict):
            raise DataError(f"{where(path, row_index, line)}: expected a JSON object, got "
                            f"{type(row).__name__}")
        rows.append({**row, "_line": line})
    return rows


def require_keys(rows: Sequence[dict], keys: Sequence[str], path: str,
                 numeric: Sequence[str] = ()) -> None:
    """Every row has ``keys`` (those in ``numeric`` as numbers); else a :class:`DataError`
    naming the file, the line and the key."""
    for i, row in enumerate(rows):
        at = where(path, i, row.get("_line"))
        for key in keys:
            if key not in row:
                raise DataError(f"{at}: key {key!r} is missing (expected {', '.join(keys)})")
        for key in numeric:
            value = row[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DataError(f"{at}: key {key!r} is {type(value).__name__} {value!r} "
                                "(expected a number)")


def write_jsonl(rows: Iterable[dict], path: str) -> None:
    """Write rows (without ``_line``) to ``path`` atomically."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps({k: v for k, v in row.items() if k != "_line"}) + "\n")
    os.replace(tmp, path)


def generate_samples(model, params, tokenizer, prompts: Sequence[dict], *, samples_per_prompt: int,
                     max_new_tokens: int, temperature: float, top_p: float, top_k: int = 0,
                     repetition_penalty: float = 1.0, template: str = "plain", batch_size: int = 16,
                     seed: int = 0, bucket: int = 32, desc: str = "generate") -> list:
    """``samples_per_prompt`` samples of each prompt (``{"id", "prompt"}``) as JSONL-ready rows;
    ``desc`` labels the progress bar (the study names the policy)."""
    eos = tokenizer.eos_token_id
    pad = pipeline.pad_token_id(tokenizer)
    jobs = [(p, s) for p in prompts for s in range(samples_per_prompt)]
    encoded = dict(zip([p["id"] for p in prompts], pipeline.policy_prompt_ids(
        tokenizer, [policy_prompt(p["prompt"], template) for p in prompts])))
    rows = []
    for start in tqdm(range(0, len(jobs), batch_size), desc=desc,
                      disable=jax.process_index() != 0):
        chunk = jobs[start:start + batch_size]
        filled = chunk + [chunk[0]] * (batch_size - len(chunk))
        ids, mask = left_pad([encoded[p["id"]] for p, _ in filled], pad, bucket)
        out = sample(model, params, ids, mask, jax.random.fold_in(jax.random.key(seed), start),
                     max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                     top_p=top_p, eos_id=eos, pad_id=pad, repetition_penalty=repetition_penalty)
        tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        for (prompt, sample_id), row, n in zip(chunk, tokens, lengths):
            ended = bool(n > 0 and eos is not None and row[n - 1] == eos)
            text = tokenizer.decode(row[:n], skip_special_tokens=True)
            rows.append({"prompt_id": prompt["id"], "sample_id": sample_id, "prompt": prompt["prompt"],
                         "text": text, "length": int(n), "eos": ended})
    return rows


def score_samples(rows: Sequence[dict], model, params, tokenizer, *, template: str,
                  batch_size: int = 16, buckets: Sequence[int] = (128, 256, 512),
                  append_eos: bool = False, source: str = "samples") -> list:
    """Rows with ``"score"``: the reward model's value of ``rm_text(prompt, text, template)``
    (:class:`rlhf_jax.reward.scoring.RewardScorer`, inputs cut at the largest bucket)."""
    for i, row in enumerate(rows):
        for key in ("prompt", "text"):
            require_text(row, key, file=source, row_index=i, line=row.get("_line"), allow_empty=True)
    scorer = RewardScorer(model, params, tokenizer, template=template, max_length=buckets[-1],
                          buckets=buckets, append_eos=append_eos, batch_size=batch_size)
    scores = scorer([r["prompt"] for r in rows], [r["text"] for r in rows])
    return [{**r, "score": float(s)} for r, s in zip(rows, scores)]
