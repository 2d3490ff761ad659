"""Anthropic hh-rlhf preference dialogues: download location, reader and TFDS builder.

Not one of the paper's three sets; it is the real preference data available offline here
(``harmless-base/test.jsonl.gz``). Each ``chosen``/``rejected`` dialogue pair becomes a
shared prompt (up to the last ``"\\n\\nAssistant:"``) and two responses.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Optional, Tuple

from rlhf_jax.data.files import (SPLIT_NAME, check_empty_option, data_files, format_of, iter_rows,
                                 require_object, responses)
from rlhf_jax.data.records import DataError, DropCounter, make_pair, require_text, where
from rlhf_jax.data.tfds_pairs import PairsBuilder, PairsConfig

log = logging.getLogger(__name__)

HH_RLHF_URL = "https://huggingface.co/datasets/Anthropic/hh-rlhf/resolve/main/{subset}/{split}.jsonl.gz"

HH_RLHF_SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
"""hh-rlhf subsets with ``chosen``/``rejected`` dialogues (``red-team-attempts`` has another
schema and is not a preference set)."""

HH_RLHF_SPLITS = ("train", "test")

ASSISTANT = "\n\nAssistant:"


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
    return name if SPLIT_NAME.match(name) else "train"


def read_hh_rlhf_files(files_by_split: Mapping[str, object], *, empty: str = "error"):
    """hh-rlhf pairs from one file per split (see :func:`read_hh_rlhf`)."""
    check_empty_option(empty)
    drops = DropCounter()
    splits, diverged = {}, 0
    for split, file in files_by_split.items():
        pairs = []
        for row_index, line, row in iter_rows(file, fmt="jsonl"):
            require_object(row, file=file, row_index=row_index, line=line,
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
            by_key = {"chosen": chosen_response, "rejected": rejected_response}
            kept = responses(by_key, ("chosen", "rejected"), **at, empty=empty, drops=drops,
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
        files = [f for f in data_files(p) if format_of(f) == "jsonl"]
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


class HHRLHF(PairsBuilder, skip_registration=True):
    """Anthropic hh-rlhf preference pairs, one config per subset: ``train`` and ``test`` splits.

    ``subset``: one of :data:`~rlhf_jax.data.HH_RLHF_SUBSETS` (needed to download;
    with a ``source_path`` it only names the config). Options (see
    :func:`read_hh_rlhf`): ``empty``, ``split``.
    """

    name = "hh_rlhf"
    SOURCE = "hh_rlhf"
    READER = staticmethod(read_hh_rlhf)
    DESCRIPTION = "Anthropic hh-rlhf dialogues split into a shared prompt and two responses."
    HOMEPAGE = "https://huggingface.co/datasets/Anthropic/hh-rlhf"
    BUILDER_OPTIONS = ("subset",)
    BUILDER_CONFIGS = [PairsConfig(name=s, subset=s) for s in HH_RLHF_SUBSETS]

    @classmethod
    def base_name(cls, base, source_path, builder_options):
        subset = builder_options.get("subset") or base
        if subset is None:
            if source_path is None:
                raise ValueError(f"hh_rlhf: pass subset= (one of {HH_RLHF_SUBSETS}) to "
                                 f"download, or a source_path")
            return "local"
        if subset not in HH_RLHF_SUBSETS:
            raise ValueError(f"hh_rlhf: unknown subset {subset!r} (expected one of "
                             f"{HH_RLHF_SUBSETS}; red-team-attempts has another schema)")
        builder_options["subset"] = subset
        return subset

    def _read_download(self, dl_manager):
        subset = self.builder_config.subset
        urls = {split: HH_RLHF_URL.format(subset=subset, split=split)
                for split in HH_RLHF_SPLITS}
        paths = dl_manager.download(urls)
        options = self._options()
        return read_hh_rlhf_files(paths, empty=options.get("empty", "error"))
