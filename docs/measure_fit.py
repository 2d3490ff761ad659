"""Make docs/scaling.md's table: the paper's stages at LLaMA sizes, compiled for TPU slices.

Usage (needs libtpu: ``pip install -e ".[tpu]"``; runs on a CPU machine, no TPU)::

    python docs/measure_fit.py --models llama-7b,llama-2-13b,llama-2-70b \\
        --stages rm,rm-lora,ppo,ppo-lora --slices v5e-8,v5e-16,v4-8,v4-16,v5p-8,v5p-16,v5p-32 \\
        --results docs/fit_results.jsonl

For each model, stage and slice it runs ``rlhf-jax fit``'s :func:`rlhf_jax.fit.fit` on the
paper's config (``configs/rm/webgpt.py``, ``configs/ppo/webgpt.py``) with the model (and, for
PPO, the reward model) replaced by the preset of that size. ``rm-lora`` and ``ppo-lora`` are the
configs as shipped (the paper's LoRA: r 8 / r 16 on q_proj and v_proj, a bfloat16 base);
``rm`` and ``ppo`` fine-tune fully (``model.lora_rank=0``, float32 master weights). Each result
is appended to ``--results`` (one JSON line, with the commit) as soon as it is measured, and
rows already there for this commit are not measured again, so an interrupted run resumes (and
two runs with disjoint job lists can share the file).
It then prints the Markdown table of every result in the file for this commit (and for the
earlier commits ``--accept`` names, whose rows are then not measured again; each row names its
commit): the largest
phase's peak GiB per chip, which phase that is, whether the stage fits, and per model and
stage the smallest measured slice that fits (fewest chips). ``--order`` measures the given
``model:stage:slice`` jobs first.

Each job runs ``fit`` with ``stop_at_first_miss``: once a phase does not fit, the later phases
are not compiled, and a phase whose arguments plus resident state already exceed HBM never is.
Such a row's peak is a floor, printed "≥ X" (its verdict, "no", is exact).
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

STAGES = {
    "rm": ("configs/rm/webgpt.py", ["--config.model.lora_rank=0",
                                    "--config.model.param_dtype=float32"]),
    "rm-lora": ("configs/rm/webgpt.py", []),
    "ppo": ("configs/ppo/webgpt.py", ["--config.model.lora_rank=0",
                                      "--config.model.param_dtype=float32"]),
    "ppo-lora": ("configs/ppo/webgpt.py", []),
}


def overrides(stage: str, model: str) -> list:
    out = [f"--config.model.init=preset:{model}", *STAGES[stage][1]]
    if stage.startswith("ppo"):
        out.append(f"--config.reward.model=preset:{model}")
    return out


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def read_results(path: str, commits: list) -> list:
    """The rows measured at ``commits``; a job measured at several, the first listed commit's."""
    if not os.path.exists(path):
        return []
    rows = [json.loads(line) for line in open(path) if line.strip()]
    best = {}
    for r in sorted((r for r in rows if r["commit"] in commits),
                    key=lambda r: commits.index(r["commit"])):
        best.setdefault((r["model"], r["stage"], r["slice"]), r)
    return list(best.values())


def measure(model: str, stage: str, slice_name: str, at: str) -> dict:
    from rlhf_jax.config import load_config
    from rlhf_jax.fit import fit
    from rlhf_jax.fit.chips import GIB
    config = load_config(STAGES[stage][0], overrides(stage, model))
    start = time.perf_counter()
    (report,) = fit(config, slice_name, stop_at_first_miss=True)
    worst = max(report.phases, key=lambda p: p.total_bytes)
    return {"commit": at, "model": model, "stage": stage, "slice": slice_name,
            "chips": report.num_chips, "peak_gib": worst.total_bytes / GIB, "phase": worst.name,
            "usable_gib": report.chip.usable_gib, "fits": bool(report.fits),
            "exact": report.exact,
            "compile_s": time.perf_counter() - start,
            "phases": {p.name: p.total_bytes / GIB for p in report.phases}}


def table(rows: list, models: list, stages: list, slices: list) -> str:
    lines = ["| model | stage | slice | chips | peak GiB/chip (phase) | usable GiB/chip | fits | "
             "compile s | commit |", "|---|---|---|---|---|---|---|---|---|"]
    index = {(r["model"], r["stage"], r["slice"]): r for r in rows}
    for model in models:
        for stage in stages:
            measured = [index[(model, stage, s)] for s in slices if (model, stage, s) in index]
            for r in measured:
                lines.append(f"| {model} | {stage} | {r['slice']} | {r['chips']} | "
                             f"{'' if r.get('exact', True) else '≥ '}{r['peak_gib']:.2f} "
                             f"({r['phase']}) | {r['usable_gib']:.2f} | "
                             f"{'yes' if r['fits'] else 'no'} | {r['compile_s']:.0f} | "
                             f"{r['commit']} |")
            if not measured:
                continue
            fitting = sorted((r["chips"], r["slice"]) for r in measured if r["fits"])
            missing = [s for s in slices if (model, stage, s) not in index]
            smallest = fitting[0][1] if fitting else "none of these slices"
            label = "smallest measured that fits" if missing else "smallest that fits"
            note = f" (not measured: {', '.join(missing)})" if missing else ""
            lines.append(f"| {model} | {stage} | {label}: {smallest}{note} | | | | | | |")
    return "\n".join(lines)


PPO_PHASES = ("sampler", "reference forward", "policy + values forward", "reward scoring", "update")


def phase_table(rows: list, models: list, slices: list) -> str:
    """GiB/chip of each PPO phase, for the PPO rows whose phases all compiled."""
    lines = ["| model | stage | slice | " + " | ".join(PPO_PHASES) + " | commit |",
             "|---|---|---|" + "---|" * len(PPO_PHASES) + "---|"]
    index = {(r["model"], r["stage"], r["slice"]): r for r in rows}
    for model in models:
        for stage in ("ppo", "ppo-lora"):
            for s in slices:
                r = index.get((model, stage, s))
                if r is None or not r.get("exact", True):
                    continue
                cells = " | ".join(f"{r['phases'][p]:.2f}" for p in PPO_PHASES)
                lines.append(f"| {model} | {stage} | {s} | {cells} | {r['commit']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="llama-7b")
    parser.add_argument("--stages", default="rm,rm-lora,ppo,ppo-lora")
    parser.add_argument("--slices", default="v5e-8,v4-8,v5p-8")
    parser.add_argument("--results", default="docs/fit_results.jsonl")
    parser.add_argument("--order", default="", help="model:stage:slice jobs to measure first")
    parser.add_argument("--table-only", action="store_true", help="print the table, measure nothing")
    parser.add_argument("--accept", default="", help="earlier commits whose rows count (comma-separated)")
    args = parser.parse_args(argv)
    models, stages, slices = (args.models.split(","), args.stages.split(","),
                              args.slices.split(","))
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; expected some of {sorted(STAGES)}")
    at = commit()
    commits = [at, *[c for c in args.accept.split(",") if c]]
    done = {(r["model"], r["stage"], r["slice"]) for r in read_results(args.results, commits)}
    jobs = [tuple(j.split(":")) for j in args.order.split(",") if j]
    jobs += [(m, st, sl) for m in models for st in stages for sl in slices]
    for job in dict.fromkeys(jobs):
        if not args.table_only:  # another run may share the file: reread what it has done
            done |= {(r["model"], r["stage"], r["slice"]) for r in read_results(args.results, commits)}
        if args.table_only or job in done:
            continue
        row = measure(*job, at)
        with open(args.results, "a") as f:
            f.write(json.dumps(row) + "\n")
        done.add(job)
        print(f"measured {job}: {row['peak_gib']:.2f} GiB/chip ({row['phase']}), "
              f"{'fits' if row['fits'] else 'does not fit'}, {row['compile_s']:.0f} s",
              file=sys.stderr, flush=True)
    rows = read_results(args.results, commits)
    print(table(rows, models, stages, slices))
    if any(st.startswith("ppo") for st in stages):
        print("\nThe PPO phases, GiB per chip (peak including what stays resident), where all "
              "compiled:\n")
        print(phase_table(rows, models, slices))
    return 0


if __name__ == "__main__":
    sys.exit(main())
