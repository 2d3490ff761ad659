"""Preference pairs from any local JSON-lines / JSON / CSV / Parquet file: reader and TFDS builder.

Field names are options, so a user's own pairs go through the same pipeline as the paper's
sets (``data.source = "local"``, ``data.path = FILE``).
"""

from __future__ import annotations

import logging
from typing import Optional

from rlhf_jax.data.files import SPLIT_NAME, check_empty_option, iter_rows, require_object, responses
from rlhf_jax.data.records import DataError, DropCounter, make_pair, require_text, where
from rlhf_jax.data.tfds_pairs import PairsBuilder

log = logging.getLogger(__name__)


def read_local(path, prompt_field: str = "prompt", chosen_field: str = "chosen",
               rejected_field: str = "rejected", id_field: Optional[str] = None,
               split: str = "train", *, empty: str = "error"):
    """Pairs from any JSON-lines, JSON, CSV or Parquet file (format from the extension).

    Field names are configurable; all three texts must be non-empty strings (``empty="drop"``
    drops and counts pairs with an empty response instead). ``id``: the ``id_field`` value
    (a string or an integer; must be unique), else ``"local-<split>-<row index>"``. One split,
    named ``split``.
    """
    check_empty_option(empty)
    if not SPLIT_NAME.match(split):
        raise ValueError(f"split={split!r}: expected letters, digits and underscores")
    drops = DropCounter()
    pairs, seen = [], {}
    for row_index, line, row in iter_rows(path):
        require_object(row, file=path, row_index=row_index, line=line,
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
        texts = responses(row, (chosen_field, rejected_field), **at, empty=empty, drops=drops)
        if texts is not None:
            pairs.append(make_pair(pair_id, prompt, *texts))
    drops.log(log, f"local ({path})")
    return {split: pairs}, drops


class LocalPreferences(PairsBuilder, skip_registration=True):
    """Pairs from a local JSON-lines / JSON / CSV / Parquet file with configurable field names.

    Options (see :func:`read_local`): ``prompt_field``,
    ``chosen_field``, ``rejected_field``, ``id_field``, ``split``, ``empty``. Needs a
    ``source_path`` (there is nothing to download).
    """

    name = "local_preferences"
    SOURCE = "local"
    READER = staticmethod(read_local)
    DESCRIPTION = "Preference pairs from a local file."

    @classmethod
    def base_name(cls, base, source_path, builder_options):
        if source_path is None:
            raise ValueError("local: pass path= (a .jsonl, .json, .csv or .parquet file of pairs)")
        return base or "default"
