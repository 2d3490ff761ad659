"""Reading rows from local preference files: JSON lines, JSON, CSV and Parquet, plain Python.

The pieces every source module (:mod:`rlhf_jax.data.sources`) shares: :func:`iter_rows`
(format from the file name, ``(row_index, line, row)`` per data row, broken JSON or CSV raised
as :class:`~rlhf_jax.data.records.DataError` naming the file and line), :func:`responses`
(response texts with the ``empty="error" | "drop"`` policy, drops counted), and
:func:`seeded_split` (the paper's ``Dataset.shuffle(seed=100)`` split).
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np

from rlhf_jax.data.records import DataError, DropCounter, EmptyTextError, require_text, where

EMPTY_CHOICES = ("error", "drop")
"""The ``empty=`` options of every reader: raise on an empty response, or drop and count the row."""

SPLIT_NAME = re.compile(r"^\w+$")
"""What a split name may be: letters, digits and underscores."""


def format_of(path: Path) -> str:
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
    raise DataError(f"{path}: unsupported file type (expected .jsonl, .jsonl.gz, .json, .csv, "
                    f".csv.gz or .parquet)")


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, "r", encoding="utf-8", newline="")


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _not_utf8(path: Path, data: bytes, err: UnicodeDecodeError, row: Optional[int] = None,
              line_no: Optional[int] = None) -> DataError:
    """The error for bytes that are not UTF-8: the line (counted in ``data`` when not given),
    the byte and its column."""
    if line_no is None:
        line_no = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
    else:
        column = err.start + 1
    at = where(path, row, line_no) if row is not None else f"{path} line {line_no}"
    return DataError(f"{at}: not UTF-8 text (byte 0x{data[err.start]:02x} at column {column}); "
                     "expected a UTF-8 file")


def _read_utf8(path: Path) -> str:
    with _open_bytes(path) as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _not_utf8(path, data, err) from None


def _iter_json_lines(path: Path) -> Iterator[Tuple[int, int, Any]]:
    row = 0
    with _open_bytes(path) as f:  # decoded line by line, so that an error names its own line
        line_no = 0
        for raw in f:
            line_no += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(path, raw, err, row, line_no) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                raise DataError(f"{where(path, row, line_no)}: broken JSON ({e.msg} at column "
                                f"{e.colno}); expected one JSON object per line") from None
            yield row, line_no, obj
            row += 1


def _iter_json_array(path: Path) -> Iterator[Tuple[int, Optional[int], Any]]:
    text = _read_utf8(path)
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
            except UnicodeDecodeError:  # the decoder reads ahead: read again to name the line
                _read_utf8(path)
                raise
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
        raise DataError(f"{path}: no such file (expected a .jsonl, .json, .csv or .parquet "
                        "file)")
    fmt = fmt or format_of(path)
    readers = {"jsonl": _iter_json_lines, "json": _iter_json_array, "csv": _iter_csv,
               "parquet": _iter_parquet}
    if fmt not in readers:
        raise DataError(f"{path}: unknown format {fmt!r} (expected one of {sorted(readers)})")
    return readers[fmt](path)


def data_files(directory: Path) -> list:
    files = []
    for p in sorted(directory.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        try:
            format_of(p)
        except ValueError:
            continue
        files.append(p)
    return files


def check_empty_option(empty: str) -> None:
    if empty not in EMPTY_CHOICES:
        raise DataError(f"empty={empty!r}: expected one of {EMPTY_CHOICES}")


def responses(row, keys: Sequence[str], *, file, row_index: int, line, empty: str,
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


def require_object(row, *, file, row_index: int, line, keys: str) -> Mapping:
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
        raise DataError(f"train_size={train_size} but there are {n} rows to split "
                         f"(expected 0 <= train_size <= {n})")
    order = np.random.default_rng(seed).permutation(n)
    train = [items[i] for i in order[:train_size] if items[i] is not None]
    rest = [items[i] for i in order[train_size:] if items[i] is not None]
    return {names[0]: train, names[1]: rest}
