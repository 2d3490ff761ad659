"""Dataset cartography for reward models and confidence-based truncation, C-TR (Singhal et al. 2023, §4.2).

During reward-model training every training example's margin ``r(x, y⁺) − r(x, y⁻)``
is logged at every pass over the data (an epoch), keyed by the example's stable
id. Following dataset cartography (Swayamdipta et al., 2020) as the paper adapts
it: **confidence** = the mean margin over the passes after the first,
**variability** = their standard deviation. C-TR keeps the training examples
whose confidence lies in ``[low, high]`` and retrains on them (the paper drops
the most confidently learned examples, which it finds are the most length-biased).

The log is ``cartography.jsonl`` in the reward-model workdir, one line per pass:
``{"pass": k, "margins": {id: margin, ...}}``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Sequence

import numpy as np

from rlhf_jax.data.records import DropCounter
from rlhf_jax.reward.interventions import length_heuristic

log = logging.getLogger(__name__)


def append_pass(path: str, pass_index: int, ids: Sequence[str], margins: Sequence[float]) -> None:
    """Append one pass's margins (ids and margins aligned) to the JSONL log at ``path``."""
    record = {"pass": int(pass_index),
              "margins": {str(i): float(m) for i, m in zip(ids, margins)}}
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_passes(path: str) -> dict:
    """``{pass index: {id: margin}}`` of a log (a repeated pass: the last record wins)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no cartography log (train a reward model with "
                                "rm.cartography=True first)")
    passes = {}
    with open(path) as f:
        for line_number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
                passes[int(record["pass"])] = record["margins"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path} line {line_number}: not a cartography record ({err})") \
                    from None
    return passes


def confidence_and_variability(passes: dict) -> dict:
    """``{id: (confidence, variability)}``: mean and sample std (n − 1, ``statistics.stdev``) of
    the raw margins ``r⁺ − r⁻`` of passes 1, 2, … (pass 0 skipped), as ``examine_dcarto.ipynb``'s
    ``mean(m[1:])`` and ``stdev(m[1:])``.

    ``passes`` is :func:`read_passes`' ``{pass index: {id: margin}}``. Needs at
    least one pass after the first (with a single one, variability is 0); an id
    missing from some pass is averaged over the passes that have it; missing
    pass indices are logged.
    """
    later_keys = sorted(k for k in passes if k > 0)
    if not later_keys:
        raise ValueError(f"cartography needs ≥ 2 passes (pass 0 is skipped); got passes "
                         f"{sorted(passes)}")
    missing = sorted(set(range(1, max(later_keys) + 1)) - set(later_keys))
    if missing:
        log.warning("cartography log lacks passes %s (resumed part-way through them)", missing)
    later = [passes[k] for k in later_keys]
    ids = set().union(*[p.keys() for p in later])
    stats = {}
    for example_id in ids:
        values = np.asarray([p[example_id] for p in later if example_id in p], np.float64)
        spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        stats[example_id] = (float(values.mean()), spread)
    return stats


def thresholds(stats: dict, low: float, high: float, *, by: str = "value") -> tuple:
    """``(low, high)`` confidence bounds: as given (``by="value"``, the paper's fixed cuts) or as
    quantiles of the confidences (quantile 0 and 1 are open: −∞ and +∞, so the extremes stay)."""
    if by == "value":
        return low, high
    if by == "quantile":
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"C-TR quantile bounds must satisfy 0 ≤ low ≤ high ≤ 1; got {low}, {high}")
        confidence = np.asarray([c for c, _ in stats.values()])
        return (float(np.quantile(confidence, low)) if low > 0 else -np.inf,
                float(np.quantile(confidence, high)) if high < 1 else np.inf)
    raise ValueError(f"rm.ctr.by must be 'value' or 'quantile', got {by!r}")


def select_by_confidence(examples: Sequence[dict], stats: dict, *, low: float, high: float,
                         drops: DropCounter = None) -> list:
    """C-TR: the examples with ``low < confidence < high`` (strict, as ``examine_dcarto.ipynb``'s
    ``(confs > low) & (confs < high)``); examples without statistics are dropped and counted."""
    drops = DropCounter() if drops is None else drops
    kept = []
    for example in examples:
        entry = stats.get(example["id"])
        if entry is None:
            drops.add("no cartography statistics")
        elif not low < entry[0] < high:
            drops.add(f"confidence outside ({low}, {high})")
        else:
            kept.append(example)
    drops.log(log, "select_by_confidence")
    return kept


def plot_cartography(stats: dict, lengths: dict, path: str, *, bins: int = 10) -> dict:
    """Two panels: variability vs confidence (2-D histogram), and the length heuristic per confidence bin.

    ``lengths``: ``{id: (chosen_len, rejected_len)}``. Returns the per-bin table
    (bin edges, counts, length heuristic) that the right panel shows.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = [i for i in stats if i in lengths]
    confidence = np.asarray([stats[i][0] for i in ids])
    variability = np.asarray([stats[i][1] for i in ids])
    edges = np.quantile(confidence, np.linspace(0, 1, bins + 1)) if ids else np.zeros(bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    table = []
    for b in range(bins):
        members = [ids[k] for k in np.flatnonzero(which == b)]
        heuristic = length_heuristic([lengths[i][0] for i in members],
                                     [lengths[i][1] for i in members]) if members else float("nan")
        table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": len(members),
                      "length_heuristic": heuristic})
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.hist2d(confidence, variability, bins=30, cmap="viridis")
    left.set(xlabel="confidence (mean margin)", ylabel="variability (std of margin)",
             title="Reward-model data map")
    centers = [(row["low"] + row["high"]) / 2 for row in table]
    right.plot(centers, [row["length_heuristic"] for row in table], marker="o")
    right.axhline(0.5, color="grey", lw=0.5)
    right.set(xlabel="confidence bin (deciles)", ylabel="chosen longer (fraction)",
              title="Length heuristic per confidence bin")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"bins": table}
