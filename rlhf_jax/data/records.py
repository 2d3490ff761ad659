"""Preference-pair records: the row errors, field validation and drop counting shared by every reader.

A *pair* is a plain ``dict`` with four ``str`` fields:

``id``
    stable and unique within a dataset (e.g. ``"webgpt-00042"``: derived from the row's
    position in the source file, so it does not change with the shuffle or the filters);
``prompt``
    the raw question or dialogue prefix, with no template applied (templates live in
    :mod:`rlhf_jax.data.templates`);
``chosen`` / ``rejected``
    the preferred and the dispreferred response.

Row numbers in error messages: ``row N`` is the 0-based index of the data row in its file
(JSON-lines, CSV without its header, Parquet); JSON-lines errors also give ``line N``, the
1-based line number in the file.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Mapping, Optional

PAIR_FIELDS = ("id", "prompt", "chosen", "rejected")


class DataError(ValueError):
    """A malformed input row: the message names the file, the row, the key and what was expected.

    e.g. ``webgpt.jsonl row 12 (line 13): key 'answer_0' is missing (expected a non-empty string)``.
    """


class EmptyTextError(DataError):
    """A text field that is present and a string, but empty or whitespace-only.

    A separate class so that readers with an ``empty="drop"`` option can catch exactly this
    case and drop (and count) the row instead of failing.
    """


def where(file: Any, row_index: int, line: Optional[int] = None) -> str:
    """``"<file> row <row_index>"`` (0-based data row), plus ``" (line <line>)"`` when known."""
    text = f"{file} row {row_index}"
    return f"{text} (line {line})" if line is not None else text


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def require_text(row: Mapping[str, Any], key: str, *, file: Any, row_index: int,
                 allow_empty: bool = False, line: Optional[int] = None,
                 label: Optional[str] = None) -> str:
    """``row[key]`` if it is a string (non-empty and not whitespace-only unless ``allow_empty``).

    Raises :class:`DataError` when the key is missing, null, or not a string, and
    :class:`EmptyTextError` (a ``DataError``) when the string is empty or whitespace-only.
    The message names ``file``, the 0-based ``row_index`` (and the 1-based ``line`` when
    given), the key (``label`` when the key sits in a nested object, e.g.
    ``"question.full_text"``) and what was expected. The string is returned unchanged
    (no stripping).
    """
    name = label or key
    expected = "a string" if allow_empty else "a non-empty string"
    at = where(file, row_index, line)
    if not isinstance(row, Mapping):
        raise DataError(f"{at}: expected an object with key {name!r}, got "
                        f"{type(row).__name__} {_short(row)}")
    if key not in row:
        raise DataError(f"{at}: key {name!r} is missing (expected {expected})")
    value = row[key]
    if value is None:
        raise DataError(f"{at}: key {name!r} is null (expected {expected})")
    if not isinstance(value, str):
        raise DataError(f"{at}: key {name!r} is {type(value).__name__} {_short(value)} "
                        f"(expected {expected})")
    if not allow_empty and not value.strip():
        raise EmptyTextError(f"{at}: key {name!r} is empty or whitespace-only "
                             f"(expected {expected})")
    return value


def make_pair(id: str, prompt: str, chosen: str, rejected: str) -> dict:
    """A pair dict with the four :data:`PAIR_FIELDS`."""
    return {"id": id, "prompt": prompt, "chosen": chosen, "rejected": rejected}


class DropCounter:
    """Counts the rows a filter drops, per reason, so that no filter is silent.

    ``add(reason, n=1)`` records drops (``n == 0`` records nothing); ``counts`` is a dict
    ``reason -> n`` in first-seen order; ``total`` their sum; ``summary(source)`` a one-line
    text and ``log(logger, source)`` logs it at INFO.
    """

    def __init__(self, counts: Optional[Mapping[str, int]] = None):
        self._counts: Counter = Counter()
        for reason, n in (counts or {}).items():
            self.add(reason, n)

    def add(self, reason: str, n: int = 1) -> None:
        n = int(n)
        if n < 0:
            raise ValueError(f"DropCounter.add({reason!r}, {n}): n must be >= 0")
        if n:
            self._counts[reason] += n

    def update(self, other: "DropCounter") -> "DropCounter":
        """Adds another counter's counts into this one; returns ``self``."""
        for reason, n in other.counts.items():
            self.add(reason, n)
        return self

    @property
    def counts(self) -> dict:
        return dict(self._counts)

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def summary(self, source: str) -> str:
        """``"<source>: dropped N rows (reason: n, ...)"``; just ``"dropped 0 rows"`` when none."""
        if not self._counts:
            return f"{source}: dropped 0 rows"
        reasons = ", ".join(f"{reason}: {n}" for reason, n in self._counts.items())
        return f"{source}: dropped {self.total} rows ({reasons})"

    def log(self, logger: logging.Logger, source: str) -> None:
        logger.info("%s", self.summary(source))

    def __repr__(self) -> str:
        return f"DropCounter({self.counts})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DropCounter) and self.counts == other.counts
