"""The tables of :mod:`rlhf_jax.benchmarks.vs_torch`: medians over rounds with their range, and ratios."""

from __future__ import annotations

import statistics
import subprocess
from typing import Sequence

from rlhf_jax.benchmarks.vs_torch.work import Case

PPO_PHASES = ("generation", "scoring", "policy_values", "reference", "update", "iteration")
PPO_HEADER = ("generation s", "scoring s", "old log-probs + values s", "reference log-probs s",
              "update s", "iteration s")
LABELS = {"ours": "rlhf_jax", "torch": "TRL 0.11.4"}


def per_process(record: dict, key: str) -> float:
    """One worker's median of ``key`` over its timed iterations."""
    return statistics.median(run[key] for run in record["runs"])


def spread(values: Sequence[float], digits: int = 2) -> str:
    """``median (min–max)`` over rounds; the median alone for one round."""
    med = statistics.median(values)
    if len(values) == 1 or max(values) == min(values):
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def by_case(records: list) -> dict:
    """``{case name: (Case, {stack: [records over rounds]})}`` in first-run order."""
    out = {}
    for r in records:
        case = Case(**r["case"])
        out.setdefault(case.name, (case, {}))[1].setdefault(r["stack"], []).append(r)
    return out


def on_device(cases: dict) -> bool:
    """Whether the records hold a device's peak memory (a GPU run)."""
    return any(r.get("peak_device", 0) > 0 for _, stacks in cases.values()
               for recs in stacks.values() for r in recs)


def device_gb(recs: list) -> str:
    return spread([r.get("peak_device", 0) / 1e9 for r in recs])


def ppo_table(cases: dict) -> str:
    gpu = on_device(cases)
    header = ("case", "stack", *PPO_HEADER, "sampled tokens/s", "peak RSS GB",
              *(("peak device GB",) if gpu else ()), "optimizer steps", "sampled tokens")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, (case, stacks) in cases.items():
        if case.kind != "ppo":
            continue
        for stack in ("ours", "torch"):
            recs = stacks.get(stack, [])
            if not recs:
                continue
            cells = [spread([per_process(r, k) for r in recs]) for k in PPO_PHASES]
            rate = spread([per_process(r, "sampled_tokens") / per_process(r, "iteration")
                           for r in recs], 1)
            rss = spread([r["peak_rss"] / 1e9 for r in recs])
            steps = spread([r["optimizer_steps"] for r in recs], 0)
            tokens = spread([per_process(r, "sampled_tokens") for r in recs], 0)
            device = f" {device_gb(recs)} |" if gpu else ""
            lines.append(f"| {name} | {LABELS[stack]} | " + " | ".join(cells)
                         + f" | {rate} | {rss} |{device} {steps} | {tokens} |")
        if "ours" in stacks and "torch" in stacks:
            ratios = [spread(ratio_by_round(stacks, k)) + "×" for k in PPO_PHASES]
            lines.append(f"| {name} | speed-up (TRL s / ours s) | " + " | ".join(ratios)
                         + " |" * (5 if gpu else 4) + " |")
    return "\n".join(lines)


def ratio_by_round(stacks: dict, key: str) -> list:
    """TRL's seconds over ours, round by round (rounds paired in order)."""
    return [per_process(t, key) / per_process(o, key) if per_process(o, key) > 0 else float("nan")
            for o, t in zip(stacks["ours"], stacks["torch"])]


def step_table(cases: dict) -> str:
    gpu = on_device(cases)
    header = ("case", "rlhf_jax s/step", "PyTorch s/step", "speed-up (PyTorch s / ours s)",
              "rlhf_jax peak RSS GB", "PyTorch peak RSS GB",
              *(("rlhf_jax / PyTorch peak device GB",) if gpu else ()),
              "first loss: ours / PyTorch", "optimizer steps: ours / PyTorch")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, (case, stacks) in cases.items():
        if case.kind == "ppo" or "ours" not in stacks or "torch" not in stacks:
            continue
        ours, torch = stacks["ours"], stacks["torch"]
        lines.append(
            f"| {name} | {spread([per_process(r, 'step') for r in ours], 3)} | "
            f"{spread([per_process(r, 'step') for r in torch], 3)} | "
            f"{spread(ratio_by_round(stacks, 'step'))}× | "
            f"{spread([r['peak_rss'] / 1e9 for r in ours])} | "
            f"{spread([r['peak_rss'] / 1e9 for r in torch])} | "
            + (f"{device_gb(ours)} / {device_gb(torch)} | " if gpu else "")
            + f"{ours[0]['first_loss']:.5f} / {torch[0]['first_loss']:.5f} | "
            f"{ours[0]['optimizer_steps']:.0f} / {torch[0]['optimizer_steps']:.0f} |")
    return "\n".join(lines)


def tables(records: list) -> str:
    cases = by_case(records)
    parts = []
    if any(c.kind == "ppo" for c, _ in cases.values()):
        parts.append("PPO iteration (per-phase seconds; median over rounds of each process's "
                     "median, range over rounds)\n\n" + ppo_table(cases))
    if any(c.kind != "ppo" for c, _ in cases.values()):
        parts.append("Reward-model and SFT steps\n\n" + step_table(cases))
    return "\n\n".join(parts)


def environment(args) -> str:
    import jax
    import torch
    import transformers
    import trl
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return (f"commit {commit}; jax {jax.__version__}, torch {torch.__version__}, transformers "
            f"{transformers.__version__}, trl {trl.__version__}; model {args.model} (float32 "
            f"weights, {args.dtype} compute) on {args.platform}; glibc huge pages "
            f"{'off' if args.no_huge_pages else 'on'} for both; "
            f"{args.threads} cores for each stack; {args.rounds} round(s) × (1 warm-up + {args.repeats} "
            f"timed iterations) per process\n")
