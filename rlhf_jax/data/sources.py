"""Readers for the paper's preference sets (§3) from local files: plain Python, no tfds.

Every reader returns ``(splits, drops)``: ``splits`` maps a split name to a list of pairs
(dicts with ``id``, ``prompt``, ``chosen``, ``rejected``, see :mod:`rlhf_jax.data.records`)
and ``drops`` is the :class:`~rlhf_jax.data.records.DropCounter` of the rows it filtered.
Readers never apply a template: ``prompt`` is the raw question or dialogue prefix.

Errors: a row with a missing key, a null or non-string value, an empty response, or a
line of broken JSON raises :class:`~rlhf_jax.data.records.DataError` naming the file, the
row (0-based data row; JSON-lines also give the 1-based line) and the key. Readers that
take ``empty="drop"`` drop (and count) rows whose response is empty or whitespace-only
instead; the default everywhere is ``empty="error"``. Real data that needs it: hh-rlhf
(``harmless-base/test`` has 4 pairs with a blank chosen response) and WebGPT.

Splits and shuffles reproduce the paper's code (``rlhfutils/data.py`` in
PrasannS/rlhf-length-biases): HF ``datasets``' ``Dataset.shuffle(seed=100)`` orders rows as
``np.random.default_rng(100).permutation(n)`` (checked against ``datasets``'
``arrow_dataset.py``: ``generator = np.random.default_rng(seed)``;
``permutation = generator.permutation(len(self))``), then the first ``train_size`` rows
are ``train`` and the rest ``eval``.

Public download locations (the builders in :mod:`rlhf_jax.data.builders` fetch these when
no local copy is given; nothing here touches the network): :data:`WEBGPT_URL`,
:data:`STACK_EXCHANGE_TREE_URL` / :data:`STACK_EXCHANGE_FILE_URL`, :data:`RLCD_URL` and
:data:`HH_RLHF_URL`.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np

from rlhf_jax.data.records import (DataError, DropCounter, EmptyTextError, make_pair,
                                   require_text, where)

log = logging.getLogger(__name__)

WEBGPT_URL = "https://openaipublic.blob.core.windows.net/webgpt-answer-viewer/comparisons.jsonl"
"""WebGPT comparisons as released by OpenAI (WebGPT paper, appendix K; 19,578 rows). The
HF dataset ``openai/webgpt_comparisons`` is a loading script over this same file, in the
same row order (its flat ``answer_0``/``score_0``... columns come from each line's pair of
records), so the seed-100 shuffle selects the same rows."""

STACK_EXCHANGE_TREE_URL = ("https://huggingface.co/api/datasets/lvwerra/stack-exchange-paired/"
                           "tree/main/data/{folder}")
"""HF API listing of one folder of ``lvwerra/stack-exchange-paired`` (its Parquet file names
vary, so they are listed first)."""

STACK_EXCHANGE_FILE_URL = ("https://huggingface.co/datasets/lvwerra/stack-exchange-paired/"
                           "resolve/main/{path}")
"""One file of ``lvwerra/stack-exchange-paired``; ``path`` as the listing gives it
(``data/reward/....parquet``)."""

STACK_EXCHANGE_FOLDERS = ("reward", "evaluation", "rl", "finetune")

RLCD_URL = "https://github.com/facebookresearch/rlcd/raw/main/simulated_data.zip"
"""The RLCD authors' release of their simulated preference data (facebookresearch/rlcd,
``simulated_data.zip``). The paper's code read :data:`RLCD_FILE` from a local copy; that
the zip holds a file of this name is not verified here (no network): when it does not,
download the CSV yourself and pass its path."""

RLCD_FILE = "simulated_preference_data_consolidated_helpful7b.csv"

HH_RLHF_URL = "https://huggingface.co/datasets/Anthropic/hh-rlhf/resolve/main/{subset}/{split}.jsonl.gz"
HH_RLHF_SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
"""hh-rlhf subsets with ``chosen``/``rejected`` dialogues (``red-team-attempts`` has another
schema and is not a preference set)."""

HH_RLHF_SPLITS = ("train", "test")

ASSISTANT = "\n\nAssistant:"
HUMAN_PREFIX = "Human: "

PANDAS_NA_STRINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
"""CSV cells that pandas' ``read_csv`` (and so HF ``load_dataset("csv")``, which the paper's
RLCD code used) reads as missing. :func:`read_rlcd` treats them the same way so that it
drops the same rows before the shuffle."""

_EMPTY_CHOICES = ("error", "drop")
_SPLIT_NAME = re.compile(r"^\w+$")


# ----------------------------------------------------------------------------- file reading

def _format_of(path: Path) -> str:
    name = path.name.lower()
    compressed = name.endswith(".gz")
    if compressed:
        name = name[:-3]
    for ext, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"),
                     (".csv", "csv"), (".parquet", "parquet")):
        if name.endswith(ext):
            if fmt == "parquet" and compressed:
                break
            return fmt
    if compressed:
        return "jsonl"  # tfds names downloads '<url digest>.gz': hh-rlhf's .jsonl.gz files
    raise ValueError(f"{path}: unsupported file type (expected .jsonl, .jsonl.gz, .json, .csv, "
                     f".csv.gz or .parquet)")


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, "r", encoding="utf-8", newline="")


def _iter_json_lines(path: Path) -> Iterator[Tuple[int, int, Any]]:
    row = 0
    with _open_text(path) as f:
        line_no = 0
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError as e:
                raise DataError(f"{where(path, row, line_no + 1)}: not UTF-8 text ({e.reason}); "
                                f"expected one JSON object per line") from None
            if not line:
                return
            line_no += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where(path, row, line_no)}: broken JSON ({e.msg} at column "
                                f"{e.colno}); expected one JSON object per line") from None
            yield row, line_no, obj
            row += 1


def _iter_json_array(path: Path) -> Iterator[Tuple[int, Optional[int], Any]]:
    with _open_text(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several JSON values: it is JSON lines after all
            yield from _iter_json_lines(path)
            return
        raise DataError(f"{path} line {e.lineno}: broken JSON ({e.msg} at column {e.colno}); "
                        f"expected a JSON array of objects or JSON lines") from None
    if isinstance(data, dict):
        yield 0, None, data
        return
    if not isinstance(data, list):
        raise DataError(f"{path}: top-level JSON is {type(data).__name__} (expected an array of "
                        f"objects)")
    for i, obj in enumerate(data):
        yield i, None, obj


def _iter_csv(path: Path) -> Iterator[Tuple[int, Optional[int], Any]]:
    old_limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # model outputs can exceed the 128 KiB default
    try:
        with _open_text(path) as f:
            reader = csv.DictReader(f)
            try:
                for i, row in enumerate(reader):
                    yield i, None, row
            except csv.Error as e:
                raise DataError(f"{path} line {reader.line_num}: broken CSV ({e})") from None
            if reader.fieldnames is None:
                raise DataError(f"{path}: empty CSV file (expected a header row)")
    finally:
        csv.field_size_limit(old_limit)


def _iter_parquet(path: Path) -> Iterator[Tuple[int, Optional[int], Any]]:
    import pyarrow.parquet as pq  # a tensorflow-datasets dependency
    i = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            yield i, None, row
            i += 1


def iter_rows(path, fmt: Optional[str] = None) -> Iterator[Tuple[int, Optional[int], Any]]:
    """Yields ``(row_index, line, row)`` for each data row of a JSON-lines, JSON, CSV or Parquet file.

    ``row_index`` is 0-based among data rows; ``line`` is the 1-based line for JSON lines
    (else ``None``). ``fmt`` (``"jsonl"``, ``"json"``, ``"csv"``, ``"parquet"``) overrides the
    format the file name implies (``.jsonl[.gz]``, ``.json``, ``.csv[.gz]``, ``.parquet``; a
    bare ``.gz`` is read as JSON lines). Broken JSON raises :class:`DataError` naming the file
    and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    fmt = fmt or _format_of(path)
    readers = {"jsonl": _iter_json_lines, "json": _iter_json_array, "csv": _iter_csv,
               "parquet": _iter_parquet}
    if fmt not in readers:
        raise ValueError(f"{path}: unknown format {fmt!r} (expected one of {sorted(readers)})")
    return readers[fmt](path)


def _data_files(directory: Path) -> list:
    files = []
    for p in sorted(directory.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        try:
            _format_of(p)
        except ValueError:
            continue
        files.append(p)
    return files


# ----------------------------------------------------------------------------- shared pieces

def _check_empty_option(empty: str) -> None:
    if empty not in _EMPTY_CHOICES:
        raise ValueError(f"empty={empty!r}: expected one of {_EMPTY_CHOICES}")


def _responses(row, keys: Sequence[str], *, file, row_index: int, line, empty: str,
               drops: DropCounter, labels: Optional[Sequence[str]] = None) -> Optional[list]:
    """The response texts under ``keys``, or ``None`` when one is empty and ``empty == "drop"``.

    A missing, null or non-string value raises :class:`DataError` whatever ``empty`` says
    (every key is checked before emptiness); an empty or whitespace-only one raises
    :class:`EmptyTextError` unless ``empty == "drop"``, which drops the row and counts it
    once, under the first empty key.
    """
    labels = list(labels) if labels is not None else list(keys)
    at = dict(file=file, row_index=row_index, line=line)
    texts = [require_text(row, key, **at, allow_empty=True, label=label)
             for key, label in zip(keys, labels)]
    for key, label in zip(keys, labels):
        try:
            require_text(row, key, **at, label=label)
        except EmptyTextError as e:
            if empty == "drop":
                drops.add(f"empty {label}")
                return None
            raise EmptyTextError(f"{e}; pass empty='drop' to drop (and count) such rows") from None
    return texts


def _require_object(row, *, file, row_index: int, line, keys: str) -> Mapping:
    if not isinstance(row, Mapping):
        raise DataError(f"{where(file, row_index, line)}: row is {type(row).__name__} "
                        f"(expected an object with keys {keys})")
    return row


def seeded_split(items: Sequence, *, train_size: int, seed: int,
                 names: Tuple[str, str] = ("train", "eval")) -> dict:
    """The paper's split: shuffle like HF ``Dataset.shuffle(seed)``, first ``train_size`` are train.

    Order: ``items[i]`` for ``i`` in ``np.random.default_rng(seed).permutation(len(items))``.
    Items that are ``None`` (rows dropped after the shuffle) are skipped without moving the
    split point. ``train_size > len(items)`` is an error (the paper's ``select`` would fail).
    """
    n = len(items)
    if not 0 <= train_size <= n:
        raise ValueError(f"train_size={train_size} but there are {n} rows to split "
                         f"(expected 0 <= train_size <= {n})")
    order = np.random.default_rng(seed).permutation(n)
    train = [items[i] for i in order[:train_size] if items[i] is not None]
    rest = [items[i] for i in order[train_size:] if items[i] is not None]
    return {names[0]: train, names[1]: rest}


# ----------------------------------------------------------------------------- WebGPT

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
    row = _require_object(obj, file=file, row_index=row_index, line=line,
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
    _check_empty_option(empty)
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
        answers = _responses(row, ("answer_0", "answer_1"), **at, empty=empty, drops=drops,
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


# ----------------------------------------------------------------------------- Stack Exchange

def _stack_files(path, folders: Optional[Sequence[str]], split: Optional[str]) -> dict:
    p = Path(path)
    if folders is not None:
        unknown = sorted(set(folders) - set(STACK_EXCHANGE_FOLDERS))
        if unknown:
            raise ValueError(f"folders={list(folders)}: unknown {unknown} (expected some of "
                             f"{STACK_EXCHANGE_FOLDERS})")
    if p.is_file():
        name = split or (p.parent.name if p.parent.name in STACK_EXCHANGE_FOLDERS else "train")
        return {name: [p]}
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such file or directory")
    base = p
    if not any((p / f).is_dir() for f in STACK_EXCHANGE_FOLDERS) and (p / "data").is_dir():
        base = p / "data"
    found = {f: _data_files(base / f) for f in STACK_EXCHANGE_FOLDERS if (base / f).is_dir()}
    if not found and p.name in STACK_EXCHANGE_FOLDERS:
        found = {p.name: _data_files(p)}
    if not found:
        raise FileNotFoundError(f"{p}: expected a stack-exchange-paired directory with some of "
                                f"the folders {STACK_EXCHANGE_FOLDERS} (or data/<folder>), one "
                                f"of those folders, or a single data file")
    if folders is not None:
        missing = [f for f in folders if f not in found]
        if missing:
            raise FileNotFoundError(f"{base}: folders {missing} not found (present: "
                                    f"{sorted(found)})")
        found = {f: found[f] for f in folders}
    for name, files in found.items():
        if not files:
            raise FileNotFoundError(f"{base / name}: no data files (expected .parquet, .jsonl, "
                                    f".jsonl.gz, .json or .csv)")
    return found


def read_stack_exchange_files(files_by_split: Mapping[str, Sequence], *, empty: str = "error"):
    """Stack Exchange pairs from explicit files per split (see :func:`read_stack_exchange`)."""
    _check_empty_option(empty)
    drops = DropCounter()
    splits = {}
    for split, files in files_by_split.items():
        pairs, i = [], 0
        for file in files:
            for row_index, line, row in iter_rows(file):
                _require_object(row, file=file, row_index=row_index, line=line,
                                keys="question, response_j, response_k")
                at = dict(file=file, row_index=row_index, line=line)
                prompt = require_text(row, "question", **at)
                texts = _responses(row, ("response_j", "response_k"), **at, empty=empty,
                                   drops=drops)
                if texts is not None:
                    pairs.append(make_pair(f"stack-{split}-{i:07d}", prompt, *texts))
                i += 1
        splits[split] = pairs
    return splits, drops


def read_stack_exchange(path, *, folders: Optional[Sequence[str]] = None,
                        split: Optional[str] = None, empty: str = "error"):
    """Stack Exchange paired (paper §3) from a local copy of ``lvwerra/stack-exchange-paired``.

    Rows: ``qid``, ``question``, ``date``, ``metadata``, ``response_j`` (preferred: the answer
    with the higher score), ``response_k``. ``prompt`` is ``question``.

    ``path``: the dataset directory (holding ``reward/``, ``evaluation/``, ``rl/``,
    ``finetune/``, directly or under ``data/``; each folder present becomes a split of that
    name, its Parquet/JSON-lines/CSV files read in name order), one such folder, or a single
    file (split ``split``, else the parent folder's name when it is one of those, else
    ``"train"``). ``folders`` restricts the splits read. No shuffle here: the dataset ships
    its own splits (the paper trained its reward model on ``reward`` and evaluated on
    ``evaluation``). ``id`` is ``"stack-<split>-<row index within the split>"``.
    """
    files = _stack_files(path, folders, split)
    splits, drops = read_stack_exchange_files(files, empty=empty)
    drops.log(log, f"stack_exchange ({path})")
    return splits, drops


# ----------------------------------------------------------------------------- RLCD

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
        _require_object(row, file=path, row_index=row_index, line=line,
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


# ----------------------------------------------------------------------------- hh-rlhf

def split_dialogues(chosen: str, rejected: str) -> Optional[Tuple[str, str, str, bool]]:
    """``(prompt, chosen_response, rejected_response, diverged)`` for two hh-rlhf dialogues.

    ``prompt`` is the shared text up to and including the last ``"\\n\\nAssistant:"``; the
    responses are what follows (unstripped: they start with a space). When the two
    dialogues' last-``Assistant:`` prefixes differ (a few real rows: an extra turn on one
    side, or a turn marker without its blank line), the prompt is their longest common
    prefix cut after its last ``"\\n\\nAssistant:"`` (where the conversations diverge) and
    ``diverged`` is True. ``None`` when they share no ``"\\n\\nAssistant:"`` at all.
    """
    i, j = chosen.rfind(ASSISTANT), rejected.rfind(ASSISTANT)
    if i >= 0 and j >= 0:
        cut_c, cut_r = i + len(ASSISTANT), j + len(ASSISTANT)
        if chosen[:cut_c] == rejected[:cut_r]:
            return chosen[:cut_c], chosen[cut_c:], rejected[cut_r:], False
    n = 0
    limit = min(len(chosen), len(rejected))
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    k = chosen.rfind(ASSISTANT, 0, n)  # the last marker inside the common prefix
    if k < 0:
        return None
    cut = k + len(ASSISTANT)
    return chosen[:cut], chosen[cut:], rejected[cut:], True


def _split_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name if _SPLIT_NAME.match(name) else "train"


def read_hh_rlhf_files(files_by_split: Mapping[str, object], *, empty: str = "error"):
    """hh-rlhf pairs from one file per split (see :func:`read_hh_rlhf`)."""
    _check_empty_option(empty)
    drops = DropCounter()
    splits, diverged = {}, 0
    for split, file in files_by_split.items():
        pairs = []
        for row_index, line, row in iter_rows(file, fmt="jsonl"):
            _require_object(row, file=file, row_index=row_index, line=line,
                            keys="chosen, rejected")
            at = dict(file=file, row_index=row_index, line=line)
            chosen = require_text(row, "chosen", **at)
            rejected = require_text(row, "rejected", **at)
            for key, text in (("chosen", chosen), ("rejected", rejected)):
                if ASSISTANT not in text:
                    raise DataError(f"{where(file, row_index, line)}: key {key!r} has no "
                                    f"{ASSISTANT!r} turn (expected an hh-rlhf dialogue)")
            parts = split_dialogues(chosen, rejected)
            if parts is None:
                raise DataError(f"{where(file, row_index, line)}: keys 'chosen' and 'rejected' "
                                f"share no prompt ending in {ASSISTANT!r} (expected two "
                                f"continuations of the same dialogue)")
            prompt, chosen_response, rejected_response, split_diverged = parts
            responses = {"chosen": chosen_response, "rejected": rejected_response}
            kept = _responses(responses, ("chosen", "rejected"), **at, empty=empty, drops=drops,
                              labels=("chosen response", "rejected response"))
            if kept is None:
                continue
            diverged += split_diverged
            pairs.append(make_pair(f"hh-{split}-{row_index:06d}", prompt, *kept))
        splits[split] = pairs
    if diverged:
        log.info("hh_rlhf: %d pairs whose chosen/rejected dialogues diverge before their last "
                 "Assistant turn: prompt cut at their last shared %r", diverged, ASSISTANT)
    return splits, drops


def read_hh_rlhf(path, *, split: Optional[str] = None, empty: str = "error"):
    """Anthropic hh-rlhf pairs from ``*.jsonl.gz`` / ``*.jsonl`` files of ``chosen``/``rejected`` dialogues.

    ``path``: a subset directory (e.g. ``harmless-base/`` with ``train.jsonl.gz`` and
    ``test.jsonl.gz``: one split per file, named by the file stem) or a single file (split
    ``split``, else its stem when that is a valid split name, else ``"train"``). Each
    dialogue pair is split by :func:`split_dialogues`: ``prompt`` is the shared dialogue up
    to and including the last ``"\\n\\nAssistant:"``, the responses follow it (starting
    with a space). Pairs whose dialogues diverge earlier are kept, split where they diverge
    (counted in the log). A blank response raises unless ``empty="drop"`` (the real
    ``harmless-base/test.jsonl.gz``: 4 of its 2,312 pairs). ``id`` is
    ``"hh-<split>-<row index>"``.
    """
    p = Path(path)
    if p.is_dir():
        files = [f for f in _data_files(p) if _format_of(f) == "jsonl"]
        if not files:
            raise FileNotFoundError(f"{p}: no .jsonl.gz or .jsonl files (expected hh-rlhf "
                                    f"train.jsonl.gz / test.jsonl.gz)")
        names = [_split_name(f) for f in files]
        if len(set(names)) != len(names):
            raise ValueError(f"{p}: files {[f.name for f in files]} give repeated split names "
                             f"{names}")
        by_split = dict(zip(names, files))
    elif p.is_file():
        by_split = {split or _split_name(p): p}
    else:
        raise FileNotFoundError(f"{p}: no such file or directory")
    splits, drops = read_hh_rlhf_files(by_split, empty=empty)
    drops.log(log, f"hh_rlhf ({path})")
    return splits, drops


# ----------------------------------------------------------------------------- generic local files

def read_local(path, prompt_field: str = "prompt", chosen_field: str = "chosen",
               rejected_field: str = "rejected", id_field: Optional[str] = None,
               split: str = "train", *, empty: str = "error"):
    """Pairs from any JSON-lines, JSON, CSV or Parquet file (format from the extension).

    Field names are configurable; all three texts must be non-empty strings (``empty="drop"``
    drops and counts pairs with an empty response instead). ``id``: the ``id_field`` value
    (a string or an integer; must be unique), else ``"local-<split>-<row index>"``. One split,
    named ``split``.
    """
    _check_empty_option(empty)
    if not _SPLIT_NAME.match(split):
        raise ValueError(f"split={split!r}: expected letters, digits and underscores")
    drops = DropCounter()
    pairs, seen = [], {}
    for row_index, line, row in iter_rows(path):
        _require_object(row, file=path, row_index=row_index, line=line,
                        keys=f"{prompt_field}, {chosen_field}, {rejected_field}")
        at = dict(file=path, row_index=row_index, line=line)
        if id_field is not None:
            if id_field not in row:
                raise DataError(f"{where(path, row_index, line)}: key {id_field!r} is missing "
                                f"(expected a string or integer id)")
            value = row[id_field]
            if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
                raise DataError(f"{where(path, row_index, line)}: key {id_field!r} is "
                                f"{type(value).__name__} {value!r} (expected a non-empty string "
                                f"or an integer id)")
            pair_id = str(value)
            if pair_id in seen:
                raise DataError(f"{where(path, row_index, line)}: key {id_field!r} value "
                                f"{pair_id!r} repeats row {seen[pair_id]} (expected unique ids)")
            seen[pair_id] = row_index
        else:
            pair_id = f"local-{split}-{row_index:06d}"
        prompt = require_text(row, prompt_field, **at)
        texts = _responses(row, (chosen_field, rejected_field), **at, empty=empty, drops=drops)
        if texts is not None:
            pairs.append(make_pair(pair_id, prompt, *texts))
    drops.log(log, f"local ({path})")
    return {split: pairs}, drops


SOURCES = {
    "webgpt": read_webgpt,
    "stack_exchange": read_stack_exchange,
    "rlcd": read_rlcd,
    "hh_rlhf": read_hh_rlhf,
    "local": read_local,
}
"""Reader by source name; each ``reader(path, **options) -> (splits, drops)``."""
