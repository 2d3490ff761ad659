"""TFDS builders for the preference sets (paper §3), stored as array_record and read with random access.

One builder per source: :class:`WebGPTComparisons`, :class:`StackExchangePaired`,
:class:`RLCDHelpful`, :class:`HHRLHF` and :class:`LocalPreferences`. Each turns the pairs of
its reader in :mod:`rlhf_jax.data.sources` into a TFDS dataset with four ``Text`` features
(``id``, ``prompt``, ``chosen``, ``rejected``), in the reader's order (shuffling on write is
disabled, so the paper's seed-100 order survives). No tensorflow is needed: datasets are
written with ``file_format="array_record"`` and read back with ``as_data_source``
(``as_dataset`` needs tensorflow and is not used).

Each builder downloads its public files (the URLs in :mod:`rlhf_jax.data.sources`) with
``dl_manager`` when no local copy is given, or reads ``source_path``. The builder config
carries the source path and the reader options, and its name ends in a short hash of them
(plus the local files' sizes and modification times), so a cached dataset is never reused
for another source path, other options or edited files; the same path and options reuse
it. The drop counts of the reader are logged when generating and kept in the dataset's
metadata (:attr:`PairSource.drops`).

Entry point for the rest of the code: :func:`load_pairs`, which returns a
:class:`PairSource` (``len``, ``source[i] -> {"id", "prompt", "chosen", "rejected"}`` as
``str``) that grain's ``MapDataset.source`` consumes.
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
from typing import Any, Optional, Tuple

import tensorflow_datasets as tfds
from etils import epath

from rlhf_jax.data import sources
from rlhf_jax.data.records import PAIR_FIELDS, DropCounter

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

    Build one with :meth:`_PairsBuilder.make_config`, which also names it
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


class _PairsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared machinery: config from (path, options), generation from a reader, drop logging."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Pairs {id, prompt, chosen, rejected} as in the paper's code."}
    SOURCE = ""  # key in sources.SOURCES
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
    def reader(cls):
        return sources.SOURCES[cls.SOURCE]

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
            raise ValueError(f"{source}: no pairs in any split ({sorted(splits)})")
        return generators

    def _generate_examples(self, pairs):
        for i, pair in enumerate(pairs):
            yield i, {k: pair[k] for k in PAIR_FIELDS}


class WebGPTComparisons(_PairsBuilder, skip_registration=True):
    """WebGPT comparisons (paper §3): 18,000 train / the rest eval after the seed-100 shuffle.

    Options (see :func:`rlhf_jax.data.sources.read_webgpt`): ``ties`` ("second" | "drop"),
    ``empty`` ("error" | "drop"), ``train_size``, ``seed``. Downloads :data:`~rlhf_jax.data.
    sources.WEBGPT_URL` when no ``source_path`` is given.
    """

    name = "webgpt_comparisons"
    SOURCE = "webgpt"
    DESCRIPTION = "WebGPT comparisons as preference pairs (question, preferred, other answer)."
    HOMEPAGE = "https://huggingface.co/datasets/openai/webgpt_comparisons"

    def _read_download(self, dl_manager):
        path = dl_manager.download(sources.WEBGPT_URL)
        return sources.read_webgpt(path, **self._options())


class StackExchangePaired(_PairsBuilder, skip_registration=True):
    """Stack Exchange paired (paper §3): splits ``reward``, ``evaluation``, ``rl``, ``finetune``.

    Options (see :func:`rlhf_jax.data.sources.read_stack_exchange`): ``folders`` (the splits
    to read; a download fetches only these, default all four: many GB), ``split``, ``empty``.
    Downloads lists each folder through the HF API (:data:`~rlhf_jax.data.sources.
    STACK_EXCHANGE_TREE_URL`) and fetches its Parquet files.
    """

    name = "stack_exchange_paired"
    SOURCE = "stack_exchange"
    DESCRIPTION = "lvwerra/stack-exchange-paired as preference pairs (response_j preferred)."
    HOMEPAGE = "https://huggingface.co/datasets/lvwerra/stack-exchange-paired"

    def _read_download(self, dl_manager):
        options = self._options()
        folders = options.get("folders") or sources.STACK_EXCHANGE_FOLDERS
        files_by_split = {}
        for folder in folders:
            listing_path = dl_manager.download(sources.STACK_EXCHANGE_TREE_URL.format(folder=folder))
            with open(listing_path, encoding="utf-8") as f:
                listing = json.load(f)
            names = sorted(e["path"] for e in listing
                           if e.get("type") == "file" and e.get("path", "").endswith(".parquet"))
            if not names:
                raise FileNotFoundError(f"{sources.STACK_EXCHANGE_TREE_URL.format(folder=folder)}: "
                                        f"no .parquet files listed")
            urls = {n: sources.STACK_EXCHANGE_FILE_URL.format(path=n) for n in names}
            paths = dl_manager.download(urls)
            files_by_split[folder] = [paths[n] for n in names]
        return sources.read_stack_exchange_files(files_by_split, empty=options.get("empty", "error"))


class RLCDHelpful(_PairsBuilder, skip_registration=True):
    """RLCD simulated helpfulness preferences, LLaMA-7B (paper §3): 40,000 train / the rest eval.

    Options (see :func:`rlhf_jax.data.sources.read_rlcd`): ``train_size``, ``seed``. Without
    ``source_path`` it downloads and extracts :data:`~rlhf_jax.data.sources.RLCD_URL` and
    looks for :data:`~rlhf_jax.data.sources.RLCD_FILE` in it (unverified offline: if the
    archive lacks it, pass the CSV's path).
    """

    name = "rlcd_helpful"
    SOURCE = "rlcd"
    DESCRIPTION = "RLCD simulated helpfulness preference pairs (LLaMA-7B simulation)."
    HOMEPAGE = "https://github.com/facebookresearch/rlcd"

    def _read_download(self, dl_manager):
        root = Path(dl_manager.download_and_extract(sources.RLCD_URL))
        found = sorted(root.rglob(sources.RLCD_FILE)) if root.is_dir() else []
        if not found:
            raise FileNotFoundError(f"{sources.RLCD_URL} (extracted to {root}) has no "
                                    f"{sources.RLCD_FILE}; download that CSV and pass its path "
                                    f"as source_path")
        return sources.read_rlcd(found[0], **self._options())


class HHRLHF(_PairsBuilder, skip_registration=True):
    """Anthropic hh-rlhf preference pairs, one config per subset: ``train`` and ``test`` splits.

    ``subset``: one of :data:`~rlhf_jax.data.sources.HH_RLHF_SUBSETS` (needed to download;
    with a ``source_path`` it only names the config). Options (see
    :func:`rlhf_jax.data.sources.read_hh_rlhf`): ``empty``, ``split``.
    """

    name = "hh_rlhf"
    SOURCE = "hh_rlhf"
    DESCRIPTION = "Anthropic hh-rlhf dialogues split into a shared prompt and two responses."
    HOMEPAGE = "https://huggingface.co/datasets/Anthropic/hh-rlhf"
    BUILDER_OPTIONS = ("subset",)
    BUILDER_CONFIGS = [PairsConfig(name=s, subset=s) for s in sources.HH_RLHF_SUBSETS]

    @classmethod
    def base_name(cls, base, source_path, builder_options):
        subset = builder_options.get("subset") or base
        if subset is None:
            if source_path is None:
                raise ValueError(f"hh_rlhf: pass subset= (one of {sources.HH_RLHF_SUBSETS}) to "
                                 f"download, or a source_path")
            return "local"
        if subset not in sources.HH_RLHF_SUBSETS:
            raise ValueError(f"hh_rlhf: unknown subset {subset!r} (expected one of "
                             f"{sources.HH_RLHF_SUBSETS}; red-team-attempts has another schema)")
        builder_options["subset"] = subset
        return subset

    def _read_download(self, dl_manager):
        subset = self.builder_config.subset
        urls = {split: sources.HH_RLHF_URL.format(subset=subset, split=split)
                for split in sources.HH_RLHF_SPLITS}
        paths = dl_manager.download(urls)
        options = self._options()
        return sources.read_hh_rlhf_files(paths, empty=options.get("empty", "error"))


class LocalPreferences(_PairsBuilder, skip_registration=True):
    """Pairs from a local JSON-lines / JSON / CSV / Parquet file with configurable field names.

    Options (see :func:`rlhf_jax.data.sources.read_local`): ``prompt_field``,
    ``chosen_field``, ``rejected_field``, ``id_field``, ``split``, ``empty``. Needs a
    ``source_path`` (there is nothing to download).
    """

    name = "local_preferences"
    SOURCE = "local"
    DESCRIPTION = "Preference pairs from a local file."

    @classmethod
    def base_name(cls, base, source_path, builder_options):
        if source_path is None:
            raise ValueError("local: pass path= (a .jsonl, .json, .csv or .parquet file of pairs)")
        return base or "default"


BUILDERS = {
    "webgpt": WebGPTComparisons,
    "stack_exchange": StackExchangePaired,
    "rlcd": RLCDHelpful,
    "hh_rlhf": HHRLHF,
    "local": LocalPreferences,
}
"""Builder class by source name (the names of :data:`rlhf_jax.data.sources.SOURCES`)."""


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


def make_builder(source: str, *, path=None, data_dir, **options) -> _PairsBuilder:
    """The builder for ``source`` (a name in :data:`BUILDERS`), a local copy at ``path`` (or
    ``None``: download) and reader/builder ``options``; not yet prepared."""
    if source not in BUILDERS:
        raise KeyError(f"unknown source {source!r}: known sources are {sorted(BUILDERS)}")
    return BUILDERS[source](data_dir=data_dir, source_path=path, **options)


def prepare(builder: _PairsBuilder) -> _PairsBuilder:
    """Generates the dataset unless a prepared copy for this exact config is already in ``data_dir``."""
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


def load_pairs(source: str, split: str, *, path=None, data_dir, **options) -> PairSource:
    """The pairs of ``split`` of ``source``, generated into ``data_dir`` on first use.

    ``source``: ``"webgpt"``, ``"stack_exchange"``, ``"rlcd"``, ``"hh_rlhf"`` or ``"local"``;
    ``path``: a local copy (file or directory, as the source's reader takes), else the public
    files are downloaded; ``options``: the reader's options (e.g. ``ties="drop"``,
    ``empty="drop"``, ``train_size=...``) and, for hh-rlhf, ``subset=``. A second call with
    the same path and options reuses the prepared dataset; other ones build their own.
    """
    return PairSource(prepare(make_builder(source, path=path, data_dir=data_dir, **options)), split)


def available_splits(source: str, *, path=None, data_dir, **options) -> dict:
    """``{split: number of pairs}`` for ``source`` (generated into ``data_dir`` if needed)."""
    builder = prepare(make_builder(source, path=path, data_dir=data_dir, **options))
    return {name: info.num_examples for name, info in builder.info.splits.items()}
