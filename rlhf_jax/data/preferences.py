"""Train and eval preference pairs for an experiment's ``config.data`` (real sources or the synthetic task).

``data.source`` is ``"synthetic"`` (:mod:`rlhf_jax.data.synthetic`, generated in
memory) or a TFDS builder name of :mod:`rlhf_jax.data.sources` (``webgpt``,
``stack_exchange``, ``rlcd``, ``hh_rlhf``, ``local``) read from ``data.path``
(a local copy; empty = download) into ``data.data_dir``. Without an eval split
(``data.eval_split = ""``), a seeded ``data.eval_fraction`` of the train split is
held out. ``data.max_train_pairs``/``max_eval_pairs`` (0 = all) keep a seeded random
subset of that size, for quick runs.
"""

from __future__ import annotations

import logging
import os

import numpy as np

log = logging.getLogger(__name__)


def synthetic_task(data_cfg):
    from rlhf_jax.data.synthetic import SyntheticTask
    return SyntheticTask(**dict(data_cfg.synthetic.task))


def preference_splits(data_cfg) -> tuple:
    """``(train_pairs, eval_pairs)`` as lists of ``{id, prompt, chosen, rejected}`` dicts."""
    if data_cfg.source == "synthetic":
        s = data_cfg.synthetic
        task = synthetic_task(data_cfg)
        train = task.preference_pairs(s.num_train, alpha=s.alpha, beta=s.beta, seed=s.seed)
        eval_ = task.preference_pairs(s.num_eval, alpha=s.alpha, beta=s.beta, seed=s.seed + 1)
        eval_ = [{**p, "id": p["id"] + "/eval"} for p in eval_]
    else:
        from rlhf_jax.data.sources import load_pairs
        options = dict(data_cfg.get("options", {}) or {})
        data_dir = tfds_data_dir(data_cfg.data_dir)
        load = lambda split: list(load_pairs(data_cfg.source, split, path=data_cfg.path or None,  # noqa: E731
                                             data_dir=data_dir, **options))
        train = load(data_cfg.train_split)
        if data_cfg.eval_split:
            eval_ = load(data_cfg.eval_split)
        else:
            train, eval_ = hold_out(train, data_cfg.eval_fraction, data_cfg.seed)
    train = _cap(train, data_cfg.max_train_pairs, data_cfg.seed)
    eval_ = _cap(eval_, data_cfg.max_eval_pairs, data_cfg.seed + 1)
    log.info("%s: %d train pairs, %d eval pairs", data_cfg.source, len(train), len(eval_))
    return train, eval_


def tfds_data_dir(configured: str) -> str:
    """``data.data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets`` (TFDS's own default)."""
    return os.path.expanduser(configured or os.environ.get("TFDS_DATA_DIR", "")
                              or "~/tensorflow_datasets")


def hold_out(pairs: list, fraction: float, seed: int) -> tuple:
    """Split ``pairs`` into (train, held-out) with a seeded permutation; ``fraction`` held out."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.eval_fraction must be in (0, 1) when data.eval_split is empty; "
                         f"got {fraction}")
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_eval = int(round(fraction * len(pairs)))
    return [pairs[i] for i in sorted(order[n_eval:])], [pairs[i] for i in sorted(order[:n_eval])]


def _cap(pairs: list, limit: int, seed: int) -> list:
    """A seeded random subset of ``limit`` pairs, in their original order (``limit`` ≤ 0: all)."""
    if not limit or limit <= 0 or limit >= len(pairs):
        return pairs
    keep = np.random.default_rng(seed).choice(len(pairs), limit, replace=False)
    return [pairs[i] for i in sorted(keep)]
