"""Reward-model summaries for the report: accuracy, length correlation, the length heuristic, cartography.

Read from finished ``rlhf-jax train-rm`` workdirs (their ``result.json``), so the
report shows the reward-model side of the paper next to the policy side:

- Table 4's measurements: held-out accuracy and Pearson(reward, length) on the
  eval pairs;
- the length heuristic (§4.2: the fraction of pairs whose preferred response is
  strictly longer, :func:`rlhf_jax.reward.interventions.length_heuristic`) of the
  train pairs before and after the RM-side intervention, and of the eval pairs;
- dataset cartography (§4.2, Fig. 4): when the run logged it (``rm.cartography``
  or C-TR's base run in ``WORKDIR/cartography``), the length heuristic per
  confidence decile and the data-map plot.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from rlhf_jax.data.records import DataError

CARTOGRAPHY_SUBDIR = "cartography"  # where C-TR's standard base run lives (rlhf_jax.reward.train)


def read_result(workdir: str) -> dict:
    """``WORKDIR/result.json`` of a finished reward-model run; a clear error otherwise."""
    path = os.path.join(workdir, "result.json")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no result.json; is {workdir} a finished `rlhf-jax train-rm` workdir?")
    with open(path) as f:
        try:
            result = json.load(f)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: broken JSON ({err.msg})") from None
    for key in ("eval", "data"):
        if key not in result:
            raise DataError(f"{path}: missing {key!r}; expected a reward-model result.json")
    return result


def reward_model_row(name: str, result: dict) -> dict:
    """One row of the reward-model table (Table 4 shape, plus the length heuristic)."""
    data, ev = result["data"], result["eval"]
    before = data.get("train_before_intervention", data.get("train", {}))
    return {"reward model": name, "eval accuracy": ev.get("accuracy"),
            "corr(reward, length)": ev.get("reward_length_corr"),
            "length heuristic (train, before intervention)": before.get("length_heuristic"),
            "length heuristic (train)": data.get("train", {}).get("length_heuristic"),
            "length heuristic (eval)": data.get("eval", {}).get("length_heuristic"),
            "train pairs": data.get("train", {}).get("pairs"),
            # ODIN (rm.loss = "odin"): its quality head, the reward PPO reads
            "quality head accuracy": ev.get("quality_accuracy"),
            "corr(quality head, length)": ev.get("quality_length_corr")}


def cartography_of(workdir: str, result: dict) -> Optional[tuple]:
    """``(bins, png path)`` of the cartography this run (``result``) or its C-TR base run logged."""
    base = os.path.join(workdir, CARTOGRAPHY_SUBDIR)
    candidates = [(workdir, result)]
    if os.path.isfile(os.path.join(base, "result.json")):
        candidates.append((base, read_result(base)))
    for where, found in candidates:
        bins = found.get("cartography", {}).get("bins")
        if bins:
            png = os.path.join(where, "cartography.png")
            return bins, (png if os.path.isfile(png) else None)
    return None


def reward_model_summaries(workdirs: dict) -> tuple:
    """``(table rows, {name: cartography bins}, {name: data-map png})`` for ``{name: workdir}``."""
    rows, maps, figures = [], {}, {}
    for name, workdir in workdirs.items():
        result = read_result(workdir)
        rows.append(reward_model_row(name, result))
        found = cartography_of(workdir, result)
        if found:
            maps[name] = found[0]
            if found[1]:
                figures[name] = found[1]
    if not any(r["corr(quality head, length)"] is not None for r in rows):
        for r in rows:  # no ODIN model: no empty columns
            del r["quality head accuracy"], r["corr(quality head, length)"]
    return rows, maps, figures
