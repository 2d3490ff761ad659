"""The preference sources (paper §3), one module each, and the one registry that names them.

Each module holds a source's whole story: its public download locations, its reader of local
files (plain Python, no tfds) and its TFDS builder (a :class:`~rlhf_jax.data.tfds_pairs.
PairsBuilder` whose ``READER`` is that reader):

=================  ==========================================  ============================
name               module                                      builder
=================  ==========================================  ============================
``webgpt``         :mod:`~rlhf_jax.data.sources.webgpt`         ``WebGPTComparisons``
``stack_exchange`` :mod:`~rlhf_jax.data.sources.stack_exchange` ``StackExchangePaired``
``rlcd``           :mod:`~rlhf_jax.data.sources.rlcd`           ``RLCDHelpful``
``hh_rlhf``        :mod:`~rlhf_jax.data.sources.hh_rlhf`        ``HHRLHF``
``local``          :mod:`~rlhf_jax.data.sources.local`          ``LocalPreferences``
=================  ==========================================  ============================

Every reader returns ``(splits, drops)``: ``splits`` maps a split name to a list of pairs
(dicts with ``id``, ``prompt``, ``chosen``, ``rejected``, see :mod:`rlhf_jax.data.records`)
and ``drops`` is the :class:`~rlhf_jax.data.records.DropCounter` of the rows it filtered.
Readers never apply a template: ``prompt`` is the raw question or dialogue prefix.

Errors: a row with a missing key, a null or non-string value, an empty response, or a line
of broken JSON raises :class:`~rlhf_jax.data.records.DataError` naming the file, the row
(0-based data row; JSON-lines also give the 1-based line) and the key. Readers that take
``empty="drop"`` drop (and count) rows whose response is empty or whitespace-only instead;
the default everywhere is ``empty="error"``. Real data that needs it: hh-rlhf
(``harmless-base/test`` has 4 pairs with a blank chosen response) and WebGPT.

Splits and shuffles reproduce the paper's code (``rlhfutils/data.py`` in
PrasannS/rlhf-length-biases): see :func:`rlhf_jax.data.files.seeded_split`.

Adding a source is one module (reader + builder subclass) plus one line in :data:`SOURCES`.
The rest of the code reaches the data through :func:`load_pairs`.
"""

from __future__ import annotations

from rlhf_jax.data.sources.hh_rlhf import (HH_RLHF_SPLITS, HH_RLHF_SUBSETS, HH_RLHF_URL, HHRLHF,
                                           read_hh_rlhf, read_hh_rlhf_files, split_dialogues)
from rlhf_jax.data.sources.local import LocalPreferences, read_local
from rlhf_jax.data.sources.rlcd import (PANDAS_NA_STRINGS, RLCD_FILE, RLCD_URL, RLCDHelpful,
                                        read_rlcd, rlcd_question)
from rlhf_jax.data.sources.stack_exchange import (STACK_EXCHANGE_FILE_URL, STACK_EXCHANGE_FOLDERS,
                                                  STACK_EXCHANGE_TREE_URL, StackExchangePaired,
                                                  read_stack_exchange, read_stack_exchange_files)
from rlhf_jax.data.sources.webgpt import WEBGPT_URL, WebGPTComparisons, read_webgpt
from rlhf_jax.data.tfds_pairs import PairsBuilder, PairSource, prepare

SOURCES = {builder.SOURCE: builder for builder in (
    WebGPTComparisons,
    StackExchangePaired,
    RLCDHelpful,
    HHRLHF,
    LocalPreferences,
)}
"""The builder class of each source, by name (``data.source`` in a config)."""


def reader(source: str):
    """The reader of local files for ``source``: ``reader(path, **options) -> (splits, drops)``."""
    return _builder_class(source).reader()


def _builder_class(source: str) -> type:
    if source not in SOURCES:
        raise KeyError(f"unknown source {source!r}: known sources are {sorted(SOURCES)}")
    return SOURCES[source]


def make_builder(source: str, *, path=None, data_dir, **options) -> PairsBuilder:
    """The builder for ``source`` (a name in :data:`SOURCES`), a local copy at ``path`` (or
    ``None``: download) and reader/builder ``options``; not yet prepared."""
    return _builder_class(source)(data_dir=data_dir, source_path=path, **options)


def load_pairs(source: str, split: str, *, path=None, data_dir, **options) -> PairSource:
    """The pairs of ``split`` of ``source``, generated into ``data_dir`` on first use.

    ``source``: a name in :data:`SOURCES`; ``path``: a local copy (file or directory, as the
    source's reader takes), else the public files are downloaded; ``options``: the reader's
    options (e.g. ``ties="drop"``, ``empty="drop"``, ``train_size=...``) and, for hh-rlhf,
    ``subset=``. A second call with the same path and options reuses the prepared dataset;
    other ones build their own.
    """
    return PairSource(prepare(make_builder(source, path=path, data_dir=data_dir, **options)), split)


def available_splits(source: str, *, path=None, data_dir, **options) -> dict:
    """``{split: number of pairs}`` for ``source`` (generated into ``data_dir`` if needed)."""
    builder = prepare(make_builder(source, path=path, data_dir=data_dir, **options))
    return {name: info.num_examples for name, info in builder.info.splits.items()}


__all__ = [
    "SOURCES", "reader", "make_builder", "load_pairs", "available_splits",
    "read_webgpt", "read_stack_exchange", "read_stack_exchange_files", "read_rlcd",
    "read_hh_rlhf", "read_hh_rlhf_files", "read_local", "split_dialogues", "rlcd_question",
    "WEBGPT_URL", "STACK_EXCHANGE_TREE_URL", "STACK_EXCHANGE_FILE_URL", "STACK_EXCHANGE_FOLDERS",
    "RLCD_URL", "RLCD_FILE", "PANDAS_NA_STRINGS", "HH_RLHF_URL", "HH_RLHF_SUBSETS",
    "HH_RLHF_SPLITS",
]
