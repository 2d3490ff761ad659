"""Length measurements of the paper (Singhal et al. 2023 §3, Table 1, Table 4, Fig. 1, Fig. 3).

- :func:`length_reward_correlation`: how strongly reward tracks length among a
  policy's samples — per prompt, the Pearson correlation over its samples,
  averaged over prompts (prompts whose lengths or rewards are constant give NaN
  and are skipped), and the Spearman correlation over all samples pooled.
- :func:`weighted_reward_gain`: how much of a reward gain survives once length is
  held fixed. Samples of two policies (``a`` = SFT, ``b`` = PPO) are binned by
  length; the gain inside each bin is weighted by the bin's share of samples::

      NRG = Σ_k (R̄_b,k − R̄_a,k) · (n_a,k + n_b,k) / N

  summed over the bins ``k`` where both policies have samples. ``N`` is chosen by
  name (:data:`NRG_NORMALIZERS`): ``"all_binned"`` (the default, the paper's
  ``plot_utils.fancyscatter``: ``tval`` = every binned sample of both policies,
  shared bin or not) or ``"shared_bins"`` (only the samples in the shared bins,
  which makes the weights sum to 1 but overstates NRG when PPO moves samples into
  bins the baseline never reaches). The two agree only when every occupied bin is
  shared. ``ΔR`` = mean(R_b) − mean(R_a) over all samples; ``ratio = NRG / ΔR``. A
  ratio near 0 means the gain is all "moving to longer bins", near 1 that every
  length gained. Bins are ``bin_width`` wide over ``[0, max_length)``; with
  ``strict=True`` (the paper's code) both bounds are strict, so a length exactly on
  a bin edge falls in no bin.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy import stats


def length_reward_correlation(prompt_ids: Sequence, lengths: Sequence[float],
                              rewards: Sequence[float]) -> dict:
    """``{"per_prompt_pearson", "prompts_used", "pooled_spearman"}`` (see the module docstring)."""
    prompt_ids = np.asarray(prompt_ids)
    lengths = np.asarray(lengths, np.float64)
    rewards = np.asarray(rewards, np.float64)
    if not (len(prompt_ids) == len(lengths) == len(rewards)) or len(lengths) == 0:
        raise ValueError(f"need equally long, non-empty prompt_ids/lengths/rewards; got "
                         f"{len(prompt_ids)}, {len(lengths)}, {len(rewards)}")
    per_prompt = []
    for pid in np.unique(prompt_ids):
        sel = prompt_ids == pid
        x, y = lengths[sel], rewards[sel]
        if len(x) >= 2 and np.std(x) > 0 and np.std(y) > 0:
            per_prompt.append(stats.pearsonr(x, y).statistic)
    pooled = (stats.spearmanr(lengths, rewards).statistic
              if np.std(lengths) > 0 and np.std(rewards) > 0 else float("nan"))
    return {"per_prompt_pearson": float(np.mean(per_prompt)) if per_prompt else float("nan"),
            "prompts_used": len(per_prompt), "pooled_spearman": float(pooled)}


@dataclasses.dataclass(frozen=True)
class WeightedRewardGain:
    """``nrg``, ``delta_r``, ``ratio`` and the per-bin table (``bins``)."""

    nrg: float
    delta_r: float
    ratio: float
    bins: list

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def length_bins(lengths: np.ndarray, bin_width: int, max_length: int, strict: bool) -> np.ndarray:
    """Bin index of each length, or −1 outside every bin."""
    lengths = np.asarray(lengths, np.float64)
    index = np.floor(lengths / bin_width).astype(np.int64)
    inside = (lengths >= 0) & (lengths < max_length)
    if strict:
        inside &= lengths > index * bin_width  # lower bound strict: edges belong to no bin
    return np.where(inside, index, -1)


def all_binned_samples(table: list) -> int:
    """The paper's NRG normaliser (``fancyscatter``'s ``tval``): every binned sample of both policies."""
    return sum(row["n_a"] + row["n_b"] for row in table)


def shared_bin_samples(table: list) -> int:
    """The samples of both policies in the bins that hold both (weights summing to 1)."""
    return sum(row["n_a"] + row["n_b"] for row in table if row["n_a"] and row["n_b"])


NRG_NORMALIZERS = {"all_binned": all_binned_samples, "shared_bins": shared_bin_samples}
"""How NRG's ``N`` is counted, by name; ``all_binned`` is the paper's."""


class NoSharedBins(ValueError):
    """No length bin holds samples of both policies, so NRG is undefined."""


def weighted_reward_gain(lengths_a, rewards_a, lengths_b, rewards_b, bin_width: int = 20,
                         max_length: int = 260, strict: bool = True,
                         normalizer: str = "all_binned") -> WeightedRewardGain:
    """NRG of policy ``b`` over ``a`` (Table 1's length-binned gain); see the module docstring."""
    if normalizer not in NRG_NORMALIZERS:
        raise ValueError(f"unknown NRG normalizer {normalizer!r}; expected one of "
                         f"{sorted(NRG_NORMALIZERS)}")
    rewards_a = np.asarray(rewards_a, np.float64)
    rewards_b = np.asarray(rewards_b, np.float64)
    if len(rewards_a) == 0 or len(rewards_b) == 0:
        raise ValueError("weighted_reward_gain needs samples from both policies")
    bins_a = length_bins(lengths_a, bin_width, max_length, strict)
    bins_b = length_bins(lengths_b, bin_width, max_length, strict)
    table, weighted, shared = [], 0.0, 0
    for k in range(int(np.ceil(max_length / bin_width))):
        in_a, in_b = rewards_a[bins_a == k], rewards_b[bins_b == k]
        row = {"low": k * bin_width, "high": min((k + 1) * bin_width, max_length),
               "n_a": int(len(in_a)), "n_b": int(len(in_b)),
               "mean_a": float(in_a.mean()) if len(in_a) else None,
               "mean_b": float(in_b.mean()) if len(in_b) else None}
        table.append(row)
        if len(in_a) and len(in_b):
            weighted += (in_b.mean() - in_a.mean()) * (len(in_a) + len(in_b))
            shared += 1
    if shared == 0:
        raise NoSharedBins("no length bin holds samples of both policies: NRG is undefined "
                         f"(bins of {bin_width} over [0, {max_length}))")
    nrg = weighted / NRG_NORMALIZERS[normalizer](table)
    delta = float(rewards_b.mean() - rewards_a.mean())
    ratio = nrg / delta if delta != 0 else float("nan")
    return WeightedRewardGain(nrg=float(nrg), delta_r=delta, ratio=float(ratio), bins=table)
