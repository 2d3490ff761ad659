"""WebGPT comparisons (paper §3): download location, reader and TFDS builder.

The paper's code (``rlhfutils/data.py``, ``load_wgpt``) loads ``openai/webgpt_comparisons``,
shuffles with seed 100, keeps the first 18,000 rows for reward-model training and prefers
``answer_0`` only when ``score_0 > score_1``. :func:`read_webgpt` does the same on a local
copy (the HF schema or OpenAI's raw ``comparisons.jsonl``).
"""

from __future__ import annotations

import logging
import math
from typing import Mapping, Tuple

from rlhf_jax.data.files import (check_empty_option, iter_rows, require_object, responses,
                                 seeded_split)
from rlhf_jax.data.records import DataError, DropCounter, make_pair, require_text, where
from rlhf_jax.data.tfds_pairs import PairsBuilder

log = logging.getLogger(__name__)

WEBGPT_URL = "https://openaipublic.blob.core.windows.net/webgpt-answer-viewer/comparisons.jsonl"
"""WebGPT comparisons as released by OpenAI (WebGPT paper, appendix K; 19,578 rows). The
HF dataset ``openai/webgpt_comparisons`` is a loading script over this same file, in the
same row order (its flat ``answer_0``/``score_0``... columns come from each line's pair of
records), so the seed-100 shuffle selects the same rows."""


def _webgpt_flat(obj, *, file, row_index: int, line) -> Tuple[Mapping, dict]:
    """The HF flat row (``question``, ``answer_0``, ``score_0``, ...) and key labels for errors.

    Accepts the HF schema (an object per row) and OpenAI's raw ``comparisons.jsonl`` (a
    JSON array of the two answer records per line).
    """
    if isinstance(obj, list):
        if len(obj) != 2 or not all(isinstance(x, Mapping) for x in obj):
            raise DataError(f"{where(file, row_index, line)}: row is a list of {len(obj)} "
                            f"items (expected the HF object with answer_0/answer_1, or "
                            f"OpenAI's pair of two answer records)")
        flat, labels = {}, {}
        if "question" in obj[0]:
            flat["question"] = obj[0]["question"]
        labels["question"] = "[0].question"
        for j, item in enumerate(obj):
            for field in ("answer", "score"):
                if field in item:
                    flat[f"{field}_{j}"] = item[field]
                labels[f"{field}_{j}"] = f"[{j}].{field}"
        return flat, labels
    row = require_object(obj, file=file, row_index=row_index, line=line,
                          keys="question, answer_0, score_0, answer_1, score_1")
    return row, {}


def _score(row, key: str, *, file, row_index: int, line, label: str) -> float:
    at = where(file, row_index, line)
    if key not in row:
        raise DataError(f"{at}: key {label!r} is missing (expected a number)")
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{at}: key {label!r} is {type(value).__name__} {value!r} "
                        f"(expected a finite number)")
    return float(value)


def read_webgpt(path, ties: str = "second", *, empty: str = "error", train_size: int = 18000,
                seed: int = 100):
    """WebGPT comparisons (paper §3) from a local ``openai/webgpt_comparisons`` file.

    ``path``: a JSON-lines or Parquet file in the HF schema (per row: ``question``
    {``full_text``, ...}, ``answer_0``, ``score_0``, ``answer_1``, ``score_1``, plus quotes and
    tokens, unused) or OpenAI's raw ``comparisons.jsonl`` (:data:`WEBGPT_URL`; each line the
    pair of answer records). ``prompt`` is ``question.full_text``.

    Preferred answer (as the paper's code): ``answer_0`` if ``score_0 > score_1`` else
    ``answer_1``, so a tie goes to ``answer_1`` (``ties="second"``); ``ties="drop"`` drops
    ties instead (counted). ``empty="drop"`` drops pairs with an empty answer (counted);
    the default raises.

    Split (paper): all rows are shuffled with ``default_rng(seed).permutation`` and the first
    ``train_size`` (18,000) are ``"train"``, the rest ``"eval"``. The shuffle runs over every
    row of the file *before* the optional filters (the paper filtered nothing), so the train
    and eval membership of each row is the paper's whatever ``ties``/``empty`` are; a
    dropped row just leaves its split. ``id`` is ``"webgpt-<row index in the file>"``.
    """
    if ties not in ("second", "drop"):
        raise ValueError(f"ties={ties!r}: expected 'second' (the paper: ties go to answer_1) "
                         f"or 'drop'")
    check_empty_option(empty)
    drops = DropCounter()
    items = []
    for row_index, line, obj in iter_rows(path):
        row, labels = _webgpt_flat(obj, file=path, row_index=row_index, line=line)
        at = dict(file=path, row_index=row_index, line=line)
        question = row.get("question")
        if isinstance(question, Mapping):
            prompt = require_text(question, "full_text", **at,
                                  label=labels.get("question", "question") + ".full_text")
        elif "question" not in row:
            raise DataError(f"{where(path, row_index, line)}: key "
                            f"{labels.get('question', 'question')!r} is missing (expected an "
                            f"object with a non-empty string 'full_text')")
        else:
            prompt = require_text(row, "question", **at, label=labels.get("question"))
        scores = [_score(row, f"score_{j}", **at, label=labels.get(f"score_{j}", f"score_{j}"))
                  for j in (0, 1)]
        answers = responses(row, ("answer_0", "answer_1"), **at, empty=empty, drops=drops,
                             labels=[labels.get(f"answer_{j}", f"answer_{j}") for j in (0, 1)])
        if answers is None:
            items.append(None)
            continue
        if scores[0] == scores[1] and ties == "drop":
            drops.add("tie (score_0 == score_1)")
            items.append(None)
            continue
        first = scores[0] > scores[1]
        items.append(make_pair(f"webgpt-{row_index:05d}", prompt,
                               answers[0] if first else answers[1],
                               answers[1] if first else answers[0]))
    splits = seeded_split(items, train_size=train_size, seed=seed)
    drops.log(log, f"webgpt ({path})")
    return splits, drops


class WebGPTComparisons(PairsBuilder, skip_registration=True):
    """WebGPT comparisons (paper §3): 18,000 train / the rest eval after the seed-100 shuffle.

    Options (see :func:`read_webgpt`): ``ties`` ("second" | "drop"),
    ``empty`` ("error" | "drop"), ``train_size``, ``seed``. Downloads :data:`~rlhf_jax.data.
    WEBGPT_URL` when no ``source_path`` is given.
    """

    name = "webgpt_comparisons"
    SOURCE = "webgpt"
    READER = staticmethod(read_webgpt)
    DESCRIPTION = "WebGPT comparisons as preference pairs (question, preferred, other answer)."
    HOMEPAGE = "https://huggingface.co/datasets/openai/webgpt_comparisons"

    def _read_download(self, dl_manager):
        path = dl_manager.download(WEBGPT_URL)
        return self.READER(path, **self._options())
