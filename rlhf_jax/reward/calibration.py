"""Post-hoc reward calibration for length (Huang et al. 2024, *Post-hoc Reward Calibration: A
Case Study on Length Bias*).

A reward model's score mixes quality with a length trend. Estimate that trend as a smooth
function of length, b̂(len), by LOWESS over the (length, reward) points of a calibration set,
and score with the trend removed::

    r̃(x, y) = r(x, y) − b̂(len(y))

Here the calibration set is the reward model's own eval pairs (both responses of each), scored
by the trained model at the end of ``rlhf-jax train-rm`` when ``rm.calibration = "lowess"``.
The fitted curve is stored with the export (``calibration.json``: the LOWESS values at each
distinct length), and PPO applies it with ``reward.calibration = "lowess"``. Between stored
lengths b̂ is interpolated linearly; beyond them it is held at the end values. Length is the
response's length in characters, which needs no tokenizer (the policy's and the reward model's
may differ). The fit is statsmodels' ``lowess`` (tricube weights, ``frac``, ``it`` robustifying
iterations).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Sequence

import numpy as np

from rlhf_jax.models.errors import CheckpointError

CALIBRATION_FILE = "calibration.json"
CALIBRATIONS = ("none", "lowess")
"""``rm.calibration`` (fit and store one) and ``reward.calibration`` (apply the stored one)."""


@dataclasses.dataclass(frozen=True)
class LengthCalibration:
    """b̂ at the distinct calibration lengths (ascending), and how it was fitted."""
    lengths: np.ndarray
    baseline: np.ndarray
    frac: float
    it: int
    points: int
    unit: str = "chars"
    method: str = "lowess"

    def trend(self, lengths) -> np.ndarray:
        """b̂(len): linear between the stored lengths, constant beyond them."""
        return np.interp(np.asarray(lengths, np.float64), self.lengths, self.baseline)

    def calibrate(self, rewards, lengths) -> np.ndarray:
        """r − b̂(len), float32."""
        return (np.asarray(rewards, np.float64) - self.trend(lengths)).astype(np.float32)

    def save(self, directory: str) -> str:
        path = os.path.join(directory, CALIBRATION_FILE)
        record = {"method": self.method, "unit": self.unit, "frac": self.frac, "it": self.it,
                  "points": self.points, "lengths": self.lengths.tolist(),
                  "baseline": self.baseline.tolist()}
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)
        return path


def response_lengths(responses: Sequence[str]) -> np.ndarray:
    return np.asarray([len(r) for r in responses], np.float64)


def fit_lowess(lengths, rewards, *, frac: float = 0.3, it: int = 3) -> LengthCalibration:
    """LOWESS of ``rewards`` on ``lengths`` (statsmodels), kept at each distinct length."""
    from statsmodels.nonparametric.smoothers_lowess import lowess
    x = np.asarray(lengths, np.float64)
    y = np.asarray(rewards, np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 3:
        raise ValueError(f"calibration needs ≥ 3 (length, reward) points of equal count; got "
                         f"{x.shape} lengths and {y.shape} rewards")
    fitted = lowess(y, x, frac=frac, it=it, return_sorted=True)
    distinct, first = np.unique(fitted[:, 0], return_index=True)
    return LengthCalibration(lengths=distinct, baseline=fitted[first, 1], frac=float(frac),
                             it=int(it), points=len(x))


def load_calibration(directory: str) -> Optional[LengthCalibration]:
    """The calibration stored with a reward-model export, or ``None`` if there is none."""
    path = os.path.join(directory, CALIBRATION_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
        lengths = np.asarray(record["lengths"], np.float64)
        baseline = np.asarray(record["baseline"], np.float64)
        if record["method"] != "lowess" or lengths.shape != baseline.shape or not len(lengths):
            raise ValueError("method, lengths and baseline do not fit together")
        return LengthCalibration(lengths=lengths, baseline=baseline, frac=record["frac"],
                                 it=record["it"], points=record["points"], unit=record["unit"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: not a length calibration ({err}); expected the file "
                              "rlhf-jax train-rm writes with rm.calibration='lowess'") from None


def calibrate_export(scorer, pairs: Sequence[dict], directory: str, *, frac: float,
                     it: int) -> dict:
    """Fit the calibration on both responses of ``pairs`` scored by ``scorer`` (a
    :class:`~rlhf_jax.reward.scoring.RewardScorer`), store it in ``directory``; a summary."""
    prompts = [p["prompt"] for p in pairs for _ in (0, 1)]
    responses = [p[side] for p in pairs for side in ("chosen", "rejected")]
    rewards = np.asarray(scorer(prompts, responses), np.float64)
    lengths = response_lengths(responses)
    calibration = fit_lowess(lengths, rewards, frac=frac, it=it)
    calibration.save(directory)
    corr = float(np.corrcoef(lengths, rewards)[0, 1])
    calibrated = calibration.calibrate(rewards, lengths)
    return {"method": "lowess", "points": len(responses), "frac": frac, "it": it,
            "length_reward_corr": corr,
            "length_reward_corr_calibrated": float(np.corrcoef(lengths, calibrated)[0, 1])}
