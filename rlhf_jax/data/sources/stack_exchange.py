"""Stack Exchange paired (paper §3): download locations, reader and TFDS builder.

``lvwerra/stack-exchange-paired`` ships its own splits as folders (``reward``, ``evaluation``,
``rl``, ``finetune``); the paper trained its reward model on ``reward`` and evaluated on
``evaluation``. ``response_j`` is the preferred answer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping, Optional, Sequence

from rlhf_jax.data.files import check_empty_option, data_files, iter_rows, require_object, responses
from rlhf_jax.data.records import DropCounter, make_pair, require_text
from rlhf_jax.data.tfds_pairs import PairsBuilder

log = logging.getLogger(__name__)

STACK_EXCHANGE_TREE_URL = ("https://huggingface.co/api/datasets/lvwerra/stack-exchange-paired/"
                           "tree/main/data/{folder}")
"""HF API listing of one folder of ``lvwerra/stack-exchange-paired`` (its Parquet file names
vary, so they are listed first)."""

STACK_EXCHANGE_FILE_URL = ("https://huggingface.co/datasets/lvwerra/stack-exchange-paired/"
                           "resolve/main/{path}")
"""One file of ``lvwerra/stack-exchange-paired``; ``path`` as the listing gives it
(``data/reward/....parquet``)."""

STACK_EXCHANGE_FOLDERS = ("reward", "evaluation", "rl", "finetune")


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
    found = {f: data_files(base / f) for f in STACK_EXCHANGE_FOLDERS if (base / f).is_dir()}
    if not found and p.name in STACK_EXCHANGE_FOLDERS:
        found = {p.name: data_files(p)}
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
    check_empty_option(empty)
    drops = DropCounter()
    splits = {}
    for split, files in files_by_split.items():
        pairs, i = [], 0
        for file in files:
            for row_index, line, row in iter_rows(file):
                require_object(row, file=file, row_index=row_index, line=line,
                                keys="question, response_j, response_k")
                at = dict(file=file, row_index=row_index, line=line)
                prompt = require_text(row, "question", **at)
                texts = responses(row, ("response_j", "response_k"), **at, empty=empty,
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


class StackExchangePaired(PairsBuilder, skip_registration=True):
    """Stack Exchange paired (paper §3): splits ``reward``, ``evaluation``, ``rl``, ``finetune``.

    Options (see :func:`read_stack_exchange`): ``folders`` (the splits
    to read; a download fetches only these, default all four: many GB), ``split``, ``empty``.
    Downloads lists each folder through the HF API (:data:`STACK_EXCHANGE_TREE_URL`) and fetches its Parquet files.
    """

    name = "stack_exchange_paired"
    SOURCE = "stack_exchange"
    READER = staticmethod(read_stack_exchange)
    DESCRIPTION = "lvwerra/stack-exchange-paired as preference pairs (response_j preferred)."
    HOMEPAGE = "https://huggingface.co/datasets/lvwerra/stack-exchange-paired"

    def _read_download(self, dl_manager):
        options = self._options()
        folders = options.get("folders") or STACK_EXCHANGE_FOLDERS
        files_by_split = {}
        for folder in folders:
            listing_path = dl_manager.download(STACK_EXCHANGE_TREE_URL.format(folder=folder))
            with open(listing_path, encoding="utf-8") as f:
                listing = json.load(f)
            names = sorted(e["path"] for e in listing
                           if e.get("type") == "file" and e.get("path", "").endswith(".parquet"))
            if not names:
                raise FileNotFoundError(f"{STACK_EXCHANGE_TREE_URL.format(folder=folder)}: "
                                        f"no .parquet files listed")
            urls = {n: STACK_EXCHANGE_FILE_URL.format(path=n) for n in names}
            paths = dl_manager.download(urls)
            files_by_split[folder] = [paths[n] for n in names]
        return read_stack_exchange_files(files_by_split, empty=options.get("empty", "error"))
