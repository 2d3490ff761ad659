"""RLCD simulated helpfulness preferences, LLaMA-7B (paper §3): download location, reader, TFDS builder.

As the paper's code (``rlhfutils/data.py``): rows with a missing output dropped before the
seed-100 shuffle, ``"Human: "`` and ``"\\n\\nAssistant:"`` stripped from the instruction,
first 40,000 rows train.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional

from rlhf_jax.data.files import iter_rows, require_object, seeded_split
from rlhf_jax.data.records import (DataError, DropCounter, EmptyTextError, make_pair, require_text,
                                   where)
from rlhf_jax.data.tfds_pairs import PairsBuilder

log = logging.getLogger(__name__)

RLCD_URL = "https://github.com/facebookresearch/rlcd/raw/main/simulated_data.zip"
"""The RLCD authors' release of their simulated preference data (facebookresearch/rlcd,
``simulated_data.zip``). The paper's code read :data:`RLCD_FILE` from a local copy; that
the zip holds a file of this name is not verified here (no network): when it does not,
download the CSV yourself and pass its path."""

RLCD_FILE = "simulated_preference_data_consolidated_helpful7b.csv"

ASSISTANT = "\n\nAssistant:"

HUMAN_PREFIX = "Human: "

PANDAS_NA_STRINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
"""CSV cells that pandas' ``read_csv`` (and so HF ``load_dataset("csv")``, which the paper's
RLCD code used) reads as missing. :func:`read_rlcd` treats them the same way so that it
drops the same rows before the shuffle."""


def _rlcd_output(row, key: str, *, file, row_index: int, line) -> Optional[str]:
    """An output text, or ``None`` when missing the way the paper's filter saw it."""
    if key not in row:
        raise DataError(f"{where(file, row_index, line)}: key {key!r} is missing (expected a "
                        f"column of model outputs)")
    value = row[key]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if not isinstance(value, str):
        raise DataError(f"{where(file, row_index, line)}: key {key!r} is "
                        f"{type(value).__name__} {value!r} (expected a string)")
    if value in PANDAS_NA_STRINGS or not value.strip():
        return None
    return value


def _preference(row, *, file, row_index: int, line) -> int:
    at = where(file, row_index, line)
    if "preference" not in row:
        raise DataError(f"{at}: key 'preference' is missing (expected 1 or 2)")
    value = row["preference"]
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number not in (1, 2):
        raise DataError(f"{at}: key 'preference' is {value!r} (expected 1 or 2: which output "
                        f"is preferred)")
    return int(number)


def rlcd_question(instruction: str) -> str:
    """The RLCD question: ``instruction`` without a leading ``"Human: "`` and a trailing
    ``"\\n\\nAssistant:"`` (each stripped only when present; the paper's code sliced them off
    unconditionally, which is the same on its data)."""
    text = instruction
    if text.startswith(HUMAN_PREFIX):
        text = text[len(HUMAN_PREFIX):]
    if text.endswith(ASSISTANT):
        text = text[: -len(ASSISTANT)]
    return text


def read_rlcd(path, train_size: int = 40000, seed: int = 100):
    """RLCD helpfulness pairs (paper §3) from ``simulated_preference_data_consolidated_helpful7b.csv``.

    Columns: ``instruction``, ``output_1``, ``output_2``, ``preference`` (1 or 2: which
    output is preferred; anything else raises :class:`DataError`); an ``input`` column, if
    any, is ignored as in the paper. ``prompt`` is :func:`rlcd_question` of ``instruction``.

    Rows with a missing output are dropped and counted, *before* the shuffle, as the paper's
    code did (``filter(lambda x: x['output_1'] and x['output_2'])`` after pandas read the
    CSV): missing means an empty cell or one of pandas' NA strings (:data:`PANDAS_NA_STRINGS`).
    Deviation: a whitespace-only output is dropped too (the paper kept it); on data without
    such cells the split is identical.

    Split (paper): the kept rows are shuffled with ``default_rng(seed).permutation``; the
    first ``train_size`` (40,000) are ``"train"``, the rest ``"eval"``. ``id`` is
    ``"rlcd-<row index in the file>"``. The file is not downloaded by this reader; see
    :data:`RLCD_URL`.
    """
    drops = DropCounter()
    kept = []
    for row_index, line, row in iter_rows(path):
        require_object(row, file=path, row_index=row_index, line=line,
                        keys="instruction, output_1, output_2, preference")
        at = dict(file=path, row_index=row_index, line=line)
        instruction = require_text(row, "instruction", **at)
        outputs = [_rlcd_output(row, key, **at) for key in ("output_1", "output_2")]
        preference = _preference(row, **at)
        if outputs[0] is None or outputs[1] is None:
            drops.add("missing output_1" if outputs[0] is None else "missing output_2")
            continue
        question = rlcd_question(instruction)
        if not question.strip():
            raise EmptyTextError(f"{where(path, row_index, line)}: key 'instruction' is empty "
                                 f"once 'Human: ' and '\\n\\nAssistant:' are stripped (expected "
                                 f"a non-empty question)")
        chosen, rejected = (outputs[0], outputs[1]) if preference == 1 else (outputs[1], outputs[0])
        kept.append(make_pair(f"rlcd-{row_index:06d}", question, chosen, rejected))
    splits = seeded_split(kept, train_size=train_size, seed=seed)
    drops.log(log, f"rlcd ({path})")
    return splits, drops


class RLCDHelpful(PairsBuilder, skip_registration=True):
    """RLCD simulated helpfulness preferences, LLaMA-7B (paper §3): 40,000 train / the rest eval.

    Options (see :func:`read_rlcd`): ``train_size``, ``seed``. Without
    ``source_path`` it downloads and extracts :data:`~rlhf_jax.data.RLCD_URL` and
    looks for :data:`~rlhf_jax.data.RLCD_FILE` in it (unverified offline: if the
    archive lacks it, pass the CSV's path).
    """

    name = "rlcd_helpful"
    SOURCE = "rlcd"
    READER = staticmethod(read_rlcd)
    DESCRIPTION = "RLCD simulated helpfulness preference pairs (LLaMA-7B simulation)."
    HOMEPAGE = "https://github.com/facebookresearch/rlcd"

    def _read_download(self, dl_manager):
        root = Path(dl_manager.download_and_extract(RLCD_URL))
        found = sorted(root.rglob(RLCD_FILE)) if root.is_dir() else []
        if not found:
            raise FileNotFoundError(f"{RLCD_URL} (extracted to {root}) has no "
                                    f"{RLCD_FILE}; download that CSV and pass its path "
                                    f"as source_path")
        return self.READER(found[0], **self._options())
