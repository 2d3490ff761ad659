"""The TFDS side of every preference source: one builder base, stored as array_record, read with random access.

Each source module (:mod:`rlhf_jax.data.sources`) subclasses :class:`PairsBuilder` with its
reader (``READER``) and, where it can, its download (``_read_download``). A builder turns
the reader's pairs into a TFDS dataset with four ``Text`` features (``id``, ``prompt``,
``chosen``, ``rejected``), in the reader's order (shuffling on write is disabled, so the
paper's seed-100 order survives). No tensorflow is needed: datasets are written with
``file_format="array_record"`` and read back with ``as_data_source`` (``as_dataset`` needs
tensorflow and is not used).

The builder config carries the source path and the reader options, and its name ends in a
short hash of them (plus the local files' sizes and modification times), so a cached
dataset is never reused for another source path, other options or edited files; the same
path and options reuse it. The drop counts of the reader are logged when generating and
kept in the dataset's metadata (:attr:`PairSource.drops`).

:class:`PairSource` (``len``, ``source[i] -> {"id", "prompt", "chosen", "rejected"}`` as
``str``) is what grain's ``MapDataset.source`` consumes; get one with
:func:`rlhf_jax.data.sources.load_pairs`.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional, Tuple

import tensorflow_datasets as tfds
from etils import epath

from rlhf_jax.data.records import PAIR_FIELDS, DataError, DropCounter

log = logging.getLogger(__name__)

_CITATION = """\
@article{singhal2023long,
  title={A Long Way to Go: Investigating Length Correlations in RLHF},
  author={Singhal, Prasann and Goyal, Tanya and Xu, Jiacheng and Durrett, Greg},
  journal={arXiv preprint arXiv:2310.03716},
  year={2023}
}"""


@dataclasses.dataclass
class PairsConfig(tfds.core.BuilderConfig):
    """A builder config that pins the data: the local copy (or ``None``: download) and reader options.

    Build one with :meth:`PairsBuilder.make_config`, which also names it
    ``"<base>-<hash of path, file stats and options>"``.
    """

    source_path: Optional[str] = None
    options: Tuple[Tuple[str, Any], ...] = ()
    subset: Optional[str] = None


def _jsonable(value):
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _fingerprint(path: Optional[str]) -> list:
    """``[relative path, size, mtime_ns]`` of each file under ``path`` (or of the file itself)."""
    if path is None:
        return []
    p = Path(path)
    if p.is_file():
        stat = p.stat()
        return [[p.name, stat.st_size, stat.st_mtime_ns]]
    if p.is_dir():
        out = []
        for f in sorted(p.rglob("*")):
            if f.is_file():
                stat = f.stat()
                out.append([str(f.relative_to(p)), stat.st_size, stat.st_mtime_ns])
        return out
    raise FileNotFoundError(f"source path {p}: no such file or directory")


class PairsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared machinery: config from (path, options), generation from a reader, drop logging."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Pairs {id, prompt, chosen, rejected} as in the paper's code."}
    SOURCE = ""  # its name in rlhf_jax.data.sources.SOURCES
    READER: Callable = None  # staticmethod: reader(path, **options) -> (splits, drops)
    DESCRIPTION = ""
    HOMEPAGE = ""
    BUILDER_OPTIONS: Tuple[str, ...] = ()  # options the builder takes besides the reader's

    def __init__(self, *, data_dir, config=None, version=None, source_path=None,
                 file_format=None, **options):
        """``config``: a :class:`PairsConfig` (as pickling passes it back), else one is made from
        ``source_path`` and ``options`` (``config`` may then be a base name, e.g. an hh-rlhf
        subset). ``file_format`` defaults to ``"array_record"``."""
        if not isinstance(config, PairsConfig):
            config = self.make_config(source_path=source_path, base=config, **options)
        elif source_path is not None or options:
            raise TypeError("pass either a PairsConfig or source_path/options, not both")
        super().__init__(data_dir=data_dir, config=config, version=version,
                         file_format=file_format or "array_record")

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """This file. tfds' default looks the package up through ``importlib_resources``, which
        tensorflow-datasets does not install; the path only locates an (absent) checksums file."""
        return epath.Path(inspect.getfile(cls))

    # ------------------------------------------------------------------ config

    @classmethod
    def reader(cls) -> Callable:
        """The source's reader of local files: ``reader(path, **options) -> (splits, drops)``."""
        return cls.READER

    @classmethod
    def reader_options(cls, options: dict) -> dict:
        """``options`` checked against the reader's keyword parameters, with its defaults filled in."""
        params = inspect.signature(cls.reader()).parameters
        known = [n for n in params if n != "path"]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown option(s) {unknown}; known options are "
                            f"{known + list(cls.BUILDER_OPTIONS)}")
        full = {n: params[n].default for n in known if params[n].default is not inspect.Parameter.empty}
        full.update(options)
        return full

    @classmethod
    def base_name(cls, base: Optional[str], source_path: Optional[str], builder_options: dict) -> str:
        return base or "default"

    @classmethod
    def make_config(cls, *, source_path=None, base: Optional[str] = None, **options) -> PairsConfig:
        """The config for a local copy at ``source_path`` (``None``: download) and ``options``.

        Its name is ``"<base>-<10 hex digits>"``, hashing the resolved path, the files' sizes
        and modification times, the builder version and every reader option (defaults
        included, so omitting a default and passing it give the same dataset).
        """
        builder_options = {k: options.pop(k) for k in list(options) if k in cls.BUILDER_OPTIONS}
        reader_options = cls.reader_options(options)
        path = os.path.abspath(os.fspath(source_path)) if source_path is not None else None
        base = cls.base_name(base, path, builder_options)  # may fill in builder options
        key = json.dumps({"source": cls.SOURCE, "version": str(cls.VERSION), "path": path,
                          "files": _fingerprint(path), "options": _jsonable(reader_options),
                          "builder_options": _jsonable(builder_options)}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        name = f"{base}-{digest}"
        return PairsConfig(
            name=name, source_path=path,
            options=tuple(sorted((k, _jsonable(v)) for k, v in reader_options.items())),
            subset=builder_options.get("subset"),
            description=f"{cls.SOURCE} pairs from {path or 'the public download'} with "
                        f"options {dict(reader_options)}")

    # ------------------------------------------------------------------ tfds hooks

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict({k: tfds.features.Text() for k in PAIR_FIELDS}),
            homepage=self.HOMEPAGE,
            citation=_CITATION,
            disable_shuffling=True,  # keep the reader's (the paper's) order
            metadata=tfds.core.MetadataDict(),
        )

    def _log_download_bytes(self) -> None:
        """TFDS prints "Downloading and preparing dataset …" to stdout here, even for a local
        file; a log line (stderr) says what is prepared from where instead."""
        log.info("%s: preparing from %s into %s", self.name,
                 self.builder_config.source_path or "its public download", self.data_dir)

    def _log_download_done(self) -> None:
        log.info("%s: prepared in %s", self.name, self.data_dir)

    def _options(self) -> dict:
        return {k: (tuple(v) if isinstance(v, list) else v) for k, v in self.builder_config.options}

    def _read(self, dl_manager):
        """``(splits, drops)`` from the local copy, or from the public download."""
        config = self.builder_config
        if config.source_path is not None:
            return self.reader()(config.source_path, **self._options())
        return self._read_download(dl_manager)

    def _read_download(self, dl_manager):
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        splits, drops = self._read(dl_manager)
        source = f"{self.name}/{self.builder_config.name}"
        drops.log(log, source)
        self.info.metadata["drops"] = drops.counts
        self.info.metadata["source_path"] = self.builder_config.source_path
        self.info.metadata["options"] = dict(self.builder_config.options)
        generators = {}
        for split, pairs in splits.items():
            if not pairs:
                log.warning("%s: split %r has no pairs; it is left out", source, split)
                continue
            generators[split] = self._generate_examples(pairs)
        if not generators:
            where = self.builder_config.source_path or "the public download"
            raise DataError(f"{where}: no preference pairs in it ({source}, splits "
                            f"{sorted(splits)}; dropped: {drops.counts or 'none'}); expected "
                            f"at least one row")
        return generators

    def _generate_examples(self, pairs):
        for i, pair in enumerate(pairs):
            yield i, {k: pair[k] for k in PAIR_FIELDS}


def _decode(example: dict) -> dict:
    return {k: (v.decode("utf-8") if isinstance(v, bytes) else str(v)) for k, v in example.items()}


class PairSource(collections.abc.Sequence):
    """Random access to one split of a prepared pair dataset: ``source[i]`` is a dict of ``str``.

    Wraps the tfds array_record data source (picklable, so grain workers can hold it).
    ``splits``: the dataset's split names; ``num_pairs``: pairs per split; ``drops``: the
    reader's drop counts when the dataset was generated.
    """

    def __init__(self, builder: tfds.core.DatasetBuilder, split: str):
        available = tuple(builder.info.splits.keys())
        if split not in available:
            raise KeyError(f"{builder.name}/{builder.builder_config.name}: no split {split!r} "
                           f"(splits: {list(available)}; an empty split is left out)")
        self.split = split
        self.splits = available
        self.num_pairs = {name: builder.info.splits[name].num_examples for name in available}
        self.drops = DropCounter(builder.info.metadata.get("drops", {}))
        self.data_dir = str(builder.data_dir)
        self._data_source = builder.as_data_source(split)

    def __len__(self) -> int:
        return len(self._data_source)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.__getitems__(range(*index.indices(len(self))))
        n = len(self)
        i = index.__index__()
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"pair index {index} out of range for {n} pairs")
        return _decode(self._data_source[i])

    def __getitems__(self, indices) -> list:
        indices = [int(i) for i in indices]
        return [_decode(e) for e in self._data_source.__getitems__(indices)] if indices else []

    def __repr__(self) -> str:
        return f"PairSource({self.data_dir!r}, split={self.split!r}, len={len(self)})"


def prepare(builder: PairsBuilder) -> PairsBuilder:
    """Generates the dataset unless a prepared copy for this exact config is already in ``data_dir``."""
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder
