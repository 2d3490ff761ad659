"""The paper's reward-model-side interventions and the length heuristic (Singhal et al. 2023, §4.2, Table 4).

The building blocks take and return plain lists of preference pairs (dicts with
``id``, ``prompt``, ``chosen``, ``rejected``) or tokenised examples with
``chosen_len``/``rejected_len`` (response lengths in tokens), and are seeded.

- :func:`length_heuristic`: fraction of pairs whose chosen response is strictly longer.
- :func:`balance_by_length` (BAL): equal counts of chosen-longer and chosen-shorter
  pairs in every mirrored 10-token bin of the length difference.
- :func:`random_data_augmentation` (R-DA): extra pairs (prompt, own chosen ≻ another
  example's chosen).
- Confidence-based truncation (C-TR) lives in :mod:`rlhf_jax.reward.cartography`.

``rm.intervention`` selects one entry of :data:`RM_INTERVENTIONS`: a function
``fn(train_examples, data: InterventionData, rm_cfg) -> train_examples`` registered
with :func:`register_intervention` (``needs_cartography=True`` makes the stage
compute the cartography statistics of a standard run first).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Optional, Sequence

import numpy as np

from rlhf_jax.data.records import DataError, DropCounter

log = logging.getLogger(__name__)


@dataclasses.dataclass
class InterventionData:
    """What an intervention may use besides the tokenised train examples."""

    pairs: list                        # the train pairs as read (text)
    tokenize: Callable[[list], list]   # pairs -> tokenised examples (over-long ones dropped)
    seed: int
    drops: DropCounter                 # count what the intervention drops here
    cartography: Optional[dict] = None  # {id: (confidence, variability)} when needed


@dataclasses.dataclass(frozen=True)
class RMIntervention:
    fn: Callable
    needs_cartography: bool = False


RM_INTERVENTIONS: dict[str, RMIntervention] = {}
"""Reward-model interventions by name (``rm.intervention``)."""


def register_intervention(name: str, needs_cartography: bool = False):
    """Register ``fn(train_examples, data, rm_cfg) -> train_examples`` as intervention ``name``."""
    def register(fn):
        RM_INTERVENTIONS[name] = RMIntervention(fn, needs_cartography)
        return fn
    return register


@register_intervention("none")
def no_intervention(examples, data: InterventionData, cfg):
    """The standard reward model: the train set as it is."""
    return examples


@register_intervention("bal")
def bal(examples, data: InterventionData, cfg):
    """BAL: :func:`balance_by_length` with ``rm.bal.bin_width`` and ``rm.bal.limit``."""
    return balance_by_length(examples, seed=data.seed, bin_width=cfg.bal.bin_width,
                             limit=cfg.bal.limit, drops=data.drops)


@register_intervention("rda")
def rda(examples, data: InterventionData, cfg):
    """R-DA: :func:`random_data_augmentation` of the train pairs (``rm.rda.fraction``), re-tokenised."""
    return data.tokenize(random_data_augmentation(data.pairs, fraction=cfg.rda.fraction,
                                                  seed=data.seed))


@register_intervention("ctr", needs_cartography=True)
def ctr(examples, data: InterventionData, cfg):
    """C-TR: :func:`~rlhf_jax.reward.cartography.select_by_confidence` between ``rm.ctr`` bounds."""
    from rlhf_jax.reward import cartography
    low, high = cartography.thresholds(data.cartography, cfg.ctr.low, cfg.ctr.high, by=cfg.ctr.by)
    return cartography.select_by_confidence(examples, data.cartography, low=low, high=high,
                                            drops=data.drops)


def length_heuristic(chosen_lengths: Sequence[int], rejected_lengths: Sequence[int]) -> float:
    """Fraction of pairs with ``len(chosen) > len(rejected)`` (strict), the paper's "length heuristic".

    Table 4 reports it as the accuracy of predicting the preferred response by
    picking the longer one; ties count as wrong, as a strict comparison does.
    """
    chosen = np.asarray(chosen_lengths)
    rejected = np.asarray(rejected_lengths)
    if chosen.shape != rejected.shape or chosen.size == 0:
        raise ValueError(f"need two equally long, non-empty length lists; got {chosen.shape} "
                         f"and {rejected.shape}")
    return float(np.mean(chosen > rejected))


def length_difference_bins(diffs: np.ndarray, bin_width: int = 10) -> np.ndarray:
    """Signed bin of each length difference ``d``: ``+(k+1)`` for ``d ∈ (k·w, (k+1)·w]``, ``−(k+1)`` for its mirror.

    Bins are mirror images in ``|d|``: ``(0, 10]`` pairs with ``[−10, 0)``, and so
    on. Ties (``d = 0``) get bin 0, which has no mirror.
    """
    diffs = np.asarray(diffs)
    return (np.sign(diffs) * np.ceil(np.abs(diffs) / bin_width)).astype(np.int64)


def balance_by_length(examples: Sequence[dict], *, seed: int, bin_width: int = 10,
                      limit: int = 200, drops: DropCounter = None) -> list:
    """BAL (§4.2): equal numbers of chosen-longer and chosen-shorter pairs per length-difference bin.

    ``d = chosen_len − rejected_len`` in tokens, 10-token bins of ``|d|`` up to
    200; each bin ``d ∈ (k·w, (k+1)·w]`` is paired with its mirror ``d ∈
    [−(k+1)·w, −k·w)`` and ``min(n_neg, n_pos)`` examples are drawn without
    replacement from each (seeded). Pairs with ``|d| > 200`` are dropped. Ties
    (``d = 0``: neither response longer) carry no length preference and are all
    kept. The kept examples keep their original order; drops are counted (into
    ``drops`` when given) and logged. Deviation: the paper bins over
    ``(−200, 200]``; mirroring in ``|d|`` makes each bin pair exactly symmetric
    for integer lengths.
    """
    rng = np.random.default_rng(seed)
    diffs = np.asarray([e["chosen_len"] - e["rejected_len"] for e in examples])
    bins = length_difference_bins(diffs, bin_width)
    inside = np.abs(diffs) <= limit
    drops = DropCounter() if drops is None else drops
    drops.add(f"|length difference| > {limit} tokens", int(np.sum(~inside)))
    keep = list(np.flatnonzero(inside & (bins == 0)))
    for k in range(1, int(np.ceil(limit / bin_width)) + 1):
        positive = np.flatnonzero(inside & (bins == k))
        negative = np.flatnonzero(inside & (bins == -k))
        n = min(len(positive), len(negative))
        keep += list(rng.choice(positive, n, replace=False)) + list(rng.choice(negative, n, replace=False))
        drops.add("unmatched in its mirrored length bin", len(positive) + len(negative) - 2 * n)
    drops.log(log, "balance_by_length")
    return [examples[i] for i in sorted(keep)]


def random_data_augmentation(pairs: Sequence[dict], *, fraction: float = 0.25, seed: int) -> list:
    """R-DA (§4.2): add ``fraction·N`` pairs (prompt, its own chosen ≻ another question's chosen).

    For a seeded random subset of ``round(fraction·N)`` examples, a new pair keeps
    the example's prompt and chosen response and takes as rejected the chosen
    response of a randomly drawn example *with a different prompt* (an answer to
    another question, which should lose whatever its length; datasets such as
    Stack Exchange repeat questions, whose answers would not be wrong). New ids
    are ``"{id}/rda"``. The result (originals + augmented) is shuffled with the seed.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"R-DA fraction must be in [0, 1], got {fraction}")
    if len({p["prompt"] for p in pairs}) < 2:
        raise DataError("R-DA needs pairs with at least two different prompts")
    rng = np.random.default_rng(seed)
    n = len(pairs)
    picked = rng.choice(n, int(round(fraction * n)), replace=False)
    augmented = []
    for i in picked:
        j = int(rng.integers(n))
        while pairs[j]["prompt"] == pairs[i]["prompt"]:
            j = int(rng.integers(n))
        augmented.append({"id": f"{pairs[i]['id']}/rda", "prompt": pairs[i]["prompt"],
                          "chosen": pairs[i]["chosen"], "rejected": pairs[j]["chosen"]})
    combined = list(pairs) + augmented
    order = rng.permutation(len(combined))
    return [combined[i] for i in order]
