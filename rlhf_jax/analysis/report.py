"""``rlhf-jax analyze``: tables shaped like the paper's and plots, as Markdown and self-contained HTML.

Input: scored samples (``rlhf-jax generate --out`` then ``rlhf-jax score``) of two
or more policies on the same prompts, one of them the baseline (the SFT
policy). Output in ``out_dir``: ``summary.json``, ``report.md``, ``report.html``
(plots embedded as base64 PNG, so the file stands alone) and the PNGs.

Tables: per policy, mean length, mean score, EOS fraction, the length–reward
correlations (Table 4 / Fig. 1's measurement) and, against the baseline, ΔR,
NRG and NRG/ΔR (Table 1's length-binned gain). Given reward-model workdirs,
also their accuracy, length correlation, length heuristic and cartography
(:mod:`rlhf_jax.analysis.reward_models`).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import shutil
from typing import Mapping, Optional, Sequence

import numpy as np

from rlhf_jax.analysis import plots
from rlhf_jax.analysis.length import (NoSharedBins, length_reward_correlation,
                                      weighted_reward_gain)
from rlhf_jax.analysis.reward_models import reward_model_summaries
from rlhf_jax.data.records import DataError

log = logging.getLogger(__name__)


def check_shared_prompts(samples: Mapping[str, Sequence[dict]]) -> None:
    """Every policy must have been sampled on the same prompt ids (and scored)."""
    sets = {name: {r["prompt_id"] for r in rows} for name, rows in samples.items()}
    first_name, first = next(iter(sets.items()))
    for name, ids in sets.items():
        if ids != first:
            raise DataError(f"policies {first_name!r} and {name!r} were not sampled on the same "
                            f"prompts ({len(first)} vs {len(ids)} prompt ids, "
                            f"{len(first ^ ids)} differ)")
    for name, rows in samples.items():
        missing = [r.get("_line", i) for i, r in enumerate(rows) if "score" not in r]
        if missing:
            raise DataError(f"policy {name!r}: {len(missing)} samples have no 'score' (first at "
                            f"line {missing[0]}); run `rlhf-jax score` first")


def policy_row(name: str, rows: Sequence[dict]) -> dict:
    lengths = np.asarray([r["length"] for r in rows], float)
    scores = np.asarray([r["score"] for r in rows], float)
    corr = length_reward_correlation([r["prompt_id"] for r in rows], lengths, scores)
    return {"policy": name, "samples": len(rows), "mean_length": float(lengths.mean()),
            "mean_score": float(scores.mean()),
            "eos_fraction": float(np.mean([bool(r.get("eos")) for r in rows])), **corr}


def analyze(samples: Mapping[str, Sequence[dict]], out_dir: str, *, baseline: str,
            bin_width: int = 20, max_length: int = 260, strict: bool = True,
            nrg_normalizer: str = "all_binned",
            curves: Optional[Mapping[str, Sequence[dict]]] = None,
            reward_models: Optional[Mapping[str, str]] = None,
            extra_tables: Optional[Mapping[str, list]] = None,
            extra_figures: Optional[Mapping[str, str]] = None) -> dict:
    """Compute the tables, draw the plots, write ``summary.json``, ``report.md`` and ``report.html``.

    ``curves``: ``{policy: PPO metrics rows}``; ``reward_models``: ``{name: train-rm
    workdir}``; ``extra_tables``: ``{title: rows}`` appended as they are; ``extra_figures``:
    ``{title: png path in out_dir}``, drawn by the caller, shown first.
    """
    if baseline not in samples:
        raise DataError(f"baseline {baseline!r} is not among the policies {list(samples)}")
    if len(samples) < 2:
        raise DataError("analyze needs the samples of at least two policies")
    check_shared_prompts(samples)
    os.makedirs(out_dir, exist_ok=True)
    policies = [policy_row(name, rows) for name, rows in samples.items()]
    base = samples[baseline]
    gains, figures = [], list((extra_figures or {}).items())
    for name, rows in samples.items():
        if name == baseline:
            continue
        try:
            gain = weighted_reward_gain([r["length"] for r in base], [r["score"] for r in base],
                                        [r["length"] for r in rows], [r["score"] for r in rows],
                                        bin_width=bin_width, max_length=max_length,
                                        strict=strict, normalizer=nrg_normalizer)
        except NoSharedBins as err:  # no length bin shared with the baseline: NRG is undefined
            log.warning("%s vs %s: %s", name, baseline, err)
            delta = float(np.mean([r["score"] for r in rows]) - np.mean([r["score"] for r in base]))
            gains.append({"policy": name, "vs": baseline, "delta_r": delta, "nrg": None,
                          "ratio": None, "bins": [], "undefined": str(err)})
            continue
        gains.append({"policy": name, "vs": baseline, "delta_r": gain.delta_r, "nrg": gain.nrg,
                      "ratio": gain.ratio, "bins": gain.bins})
        figures.append((f"Binned reward gain, {baseline} → {name}", plots.binned_gain_arrows(
            gain.bins, os.path.join(out_dir, f"gain_{_slug(name)}.png"), baseline, name)))
    for name, rows in samples.items():
        figures.append((f"Length vs reward, {name}", plots.length_reward_hist2d(
            [r["length"] for r in rows], [r["score"] for r in rows],
            os.path.join(out_dir, f"hist2d_{_slug(name)}.png"), name)))
    figures.append(("Response lengths", plots.length_histograms(
        {n: [r["length"] for r in rows] for n, rows in samples.items()},
        os.path.join(out_dir, "lengths.png"))))
    if curves:
        figures.append(("PPO training curves", plots.training_curves(
            curves, os.path.join(out_dir, "training_curves.png"))))
    rm_rows, rm_maps, rm_figures = reward_model_summaries(dict(reward_models or {}))
    for name, png in rm_figures.items():
        figures.append((f"Reward-model data map and length heuristic per confidence decile, {name}",
                        shutil.copy(png, os.path.join(out_dir, f"cartography_{_slug(name)}.png"))))
    summary = {"baseline": baseline, "bin_width": bin_width, "max_length": max_length,
               "nrg_normalizer": nrg_normalizer,
               "policies": policies, "gains": gains, "reward_models": rm_rows,
               "cartography": rm_maps, "extra_tables": dict(extra_tables or {}),
               "figures": [{"title": t, "file": os.path.basename(p)} for t, p in figures]}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    markdown = render_markdown(summary)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(out_dir, "report.html"), "w") as f:
        f.write(render_html(summary, out_dir))
    return summary


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "nan" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def tables(summary: dict) -> list:
    """``[(title, header, rows)]`` of the report."""
    out = [("Policies (Table 4 / Fig. 1: how reward tracks length)",
            ["policy", "samples", "mean length", "mean score", "EOS fraction",
             "per-prompt Pearson(length, score)", "pooled Spearman"],
            [[p["policy"], p["samples"], p["mean_length"], p["mean_score"], p["eos_fraction"],
              p["per_prompt_pearson"], p["pooled_spearman"]] for p in summary["policies"]])]
    if summary["gains"]:
        out.append((f"Length-binned reward gain over {summary['baseline']} (Table 1; bins of "
                    f"{summary['bin_width']} tokens below {summary['max_length']})",
                    ["policy", "ΔR", "NRG", "NRG / ΔR"],
                    [[g["policy"], g["delta_r"], g["nrg"], g["ratio"]] for g in summary["gains"]]))
    if summary.get("reward_models"):
        header = list(summary["reward_models"][0])
        out.append(("Reward models (Table 4: accuracy and length correlation; §4.2: length heuristic)",
                    header, [[r[h] for h in header] for r in summary["reward_models"]]))
    for name, bins in summary.get("cartography", {}).items():
        out.append((f"Cartography of {name}: length heuristic per confidence decile (§4.2, Fig. 4)",
                    ["confidence from", "confidence to", "pairs", "length heuristic"],
                    [[b["low"], b["high"], b["count"], b["length_heuristic"]] for b in bins]))
    for title, rows in summary.get("extra_tables", {}).items():
        if rows:
            header = list(rows[0])
            out.append((title, header, [[r.get(h) for h in header] for r in rows]))
    return out


def render_markdown(summary: dict) -> str:
    lines = ["# Length analysis report", ""]
    for title, header, rows in tables(summary):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
        lines.append("")
    lines.append("## Figures")
    lines += [f"![{f['title']}]({f['file']})" for f in summary["figures"]]
    return "\n".join(lines) + "\n"


def render_html(summary: dict, out_dir: str) -> str:
    """A self-contained HTML page: tables and the plots inlined as data URIs."""
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Length analysis report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:4px 8px;text-align:right}img{max-width:100%}</style></head><body>",
             "<h1>Length analysis report</h1>"]
    for title, header, rows in tables(summary):
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr>"
                     + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>")
        parts.append("</table>")
    parts.append("<h2>Figures</h2>")
    for figure in summary["figures"]:
        with open(os.path.join(out_dir, figure["file"]), "rb") as f:
            data = base64.b64encode(f.read()).decode()
        parts.append(f"<figure><img alt='{html.escape(figure['title'])}' "
                     f"src='data:image/png;base64,{data}'><figcaption>"
                     f"{html.escape(figure['title'])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
