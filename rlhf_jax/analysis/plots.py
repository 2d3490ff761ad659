"""The paper's figures as matplotlib PNGs (Singhal et al. 2023 Fig. 1–3), one function each."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def length_reward_hist2d(lengths, rewards, path: str, title: str) -> str:
    """2-D histogram of response length against reward (Fig. 1)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    counts = ax.hist2d(np.asarray(lengths, float), np.asarray(rewards, float), bins=30, cmap="viridis")
    fig.colorbar(counts[3], ax=ax, label="samples")
    ax.set(xlabel="response length (tokens)", ylabel="reward", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def binned_gain_arrows(bins: Sequence[dict], path: str, label_a: str, label_b: str) -> str:
    """Per length bin, an arrow from policy a's mean reward to policy b's (Fig. 3); width ∝ samples."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    shared = [b for b in bins if b["n_a"] and b["n_b"]]
    most = max((b["n_a"] + b["n_b"] for b in shared), default=1)
    for b in shared:
        x = (b["low"] + b["high"]) / 2
        width = 0.5 + 4.0 * (b["n_a"] + b["n_b"]) / most
        ax.annotate("", xy=(x, b["mean_b"]), xytext=(x, b["mean_a"]),
                    arrowprops={"arrowstyle": "->", "lw": width, "color": "tab:blue"})
        ax.plot([x], [b["mean_a"]], "o", color="tab:gray", ms=3)
    for b in bins:
        if b["n_a"] and not b["n_b"]:
            ax.plot([(b["low"] + b["high"]) / 2], [b["mean_a"]], "o", color="tab:gray", ms=3)
        if b["n_b"] and not b["n_a"]:
            ax.plot([(b["low"] + b["high"]) / 2], [b["mean_b"]], "^", color="tab:orange", ms=4)
    ax.set(xlabel="length bin (tokens)", ylabel="mean reward in bin",
           title=f"{label_a} → {label_b} within each length bin")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def length_histograms(lengths_by_policy: Mapping[str, Sequence[float]], path: str) -> str:
    """Overlaid response-length histograms, one per policy."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    top = max(max(v) for v in lengths_by_policy.values() if len(v))
    edges = np.linspace(0, top + 1, 30)
    for name, lengths in lengths_by_policy.items():
        ax.hist(lengths, bins=edges, alpha=0.5, label=name)
    ax.set(xlabel="response length (tokens)", ylabel="samples", title="Response lengths")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


CURVES = (("env/rm_score", "reward-model score"), ("env/response_length", "response length"),
          ("objective/kl", "KL"), ("objective/kl_coef", "β"))


def training_curves(rows_by_policy: Mapping[str, Sequence[dict]], path: str) -> str:
    """PPO training curves (score, length, KL, β against steps), one line per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for ax, (key, title) in zip(axes, CURVES):
        for name, rows in rows_by_policy.items():
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points), label=name)
        ax.set(xlabel="step", title=title)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def gold_vs_length_gain(points: Sequence[dict], path: str) -> str:
    """One point per method: its mean gold-quality gain over SFT against its mean length gain
    (``points``: ``{"policy", "length_gain", "gold_gain"}``). Up and to the left is quality
    bought without length."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.axhline(0.0, color="tab:gray", lw=0.8)
    ax.axvline(0.0, color="tab:gray", lw=0.8)
    for p in points:
        ax.plot([p["length_gain"]], [p["gold_gain"]], "o", color="tab:blue")
        ax.annotate(p["policy"], (p["length_gain"], p["gold_gain"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    gains = sorted(abs(p["gold_gain"]) for p in points)
    ylabel = "mean gold-quality gain over SFT"
    if len(gains) > 2 and gains[-1] > 5 * max(gains[-2], 1e-9):  # one outlier: keep the rest legible
        ax.set_yscale("symlog", linthresh=max(gains[-2], 0.5))
        ylabel += " (symlog)"
    ax.set(xlabel="mean length gain over SFT (tokens)", ylabel=ylabel,
           title="Gold quality gain against length gain")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
