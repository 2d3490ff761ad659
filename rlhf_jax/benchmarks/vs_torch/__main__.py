"""``python -m rlhf_jax.benchmarks.vs_torch``: rlhf_jax against TRL 0.11.4 / PyTorch, side by side.

Each (stack, case) runs in its own fresh process; within a round the two stacks of a case run
one after the other, in an order that alternates from case to case and round to round. A
worker times one warm-up iteration (compilation, allocator) and then ``--repeats`` iterations
and reports their median; a figure in the tables is the median over rounds of those medians,
with the range over rounds. ``--json`` is rewritten with every worker's result as each finishes.
By default both stacks run on this machine's CPU (``JAX_PLATFORMS=cpu``, no CUDA device for
torch), on the first ``--threads`` cores (``sched_setaffinity``; torch also gets that many
threads). ``--platform cuda`` runs both on the first GPU instead (jax[cuda], a CUDA torch), and
``--dtype bfloat16`` computes in bfloat16 on both sides with float32 master weights (ours: the
models' ``dtype``; torch: ``autocast``, TRL through accelerate's ``mixed_precision="bf16"``).
``launch/bench_gpu.sh`` is the GPU run. Both stacks' workers get glibc's transparent-huge-page
tunable (:func:`rlhf_jax.xla_cpu.huge_pages_env`, as the ``rlhf-jax`` command runs) unless
``--no-huge-pages``.

Run (on a quiet machine; the ``bench`` extra brings TRL 0.11.4)::

    python -m rlhf_jax.benchmarks.vs_torch --cases ppo,rm,sft --rounds 2 --repeats 3 \\
        --json docs/vs_torch.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Optional, Sequence

from rlhf_jax.benchmarks.vs_torch import report
from rlhf_jax.benchmarks.vs_torch.work import GROUPS, Case, num_cores
from rlhf_jax.xla_cpu import huge_pages_env

STACKS = ("ours", "torch")
PLATFORMS = ("cpu", "cuda")
DTYPES = ("float32", "bfloat16")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="rlhf_jax against TRL 0.11.4 / PyTorch, side by side")
    parser.add_argument("--cases", default="ppo,rm,sft", help=f"groups of {sorted(GROUPS)}")
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m | tiny")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="cores for both stacks (default: all this process may use)")
    parser.add_argument("--platform", choices=PLATFORMS, default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="compute dtype of both stacks (master weights stay float32)")
    parser.add_argument("--no-huge-pages", action="store_true",
                        help="run the workers without glibc's transparent-huge-page tunable")
    parser.add_argument("--json", default=None, help="where every worker's result is kept")
    parser.add_argument("--worker", choices=("prepare", *STACKS), help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoints", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [g for g in args.cases.split(",") if g and g not in GROUPS]
    if unknown:
        parser.error(f"unknown --cases {unknown}; expected some of {sorted(GROUPS)}")
    if args.rounds < 1 or args.repeats < 1:
        parser.error("--rounds and --repeats must be at least 1")
    args.threads = min(args.threads or num_cores(), num_cores())
    return args


def worker_main(args) -> None:
    cores = sorted(os.sched_getaffinity(0))[:args.threads]
    os.sched_setaffinity(0, cores)  # before jax or torch start their thread pools
    if args.worker == "prepare":
        from rlhf_jax.benchmarks.vs_torch.work import prepare_checkpoints
        result = prepare_checkpoints(args.model, args.checkpoints)
    else:
        case, checkpoints = Case(**json.loads(args.case)), json.loads(args.checkpoints)
        if args.worker == "ours":
            from rlhf_jax.benchmarks.vs_torch import ours
            result = ours.run(case, checkpoints, args.repeats, args.dtype)
        else:
            from rlhf_jax.benchmarks.vs_torch import torch_side
            result = torch_side.run(case, checkpoints, args.repeats, args.threads,
                                    args.platform, args.dtype)  # torch's device name
    with open(args.out, "w") as f:
        json.dump(result, f)


def run_worker(worker: str, args, *, case: Optional[Case] = None, checkpoints=None) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "rlhf_jax.benchmarks.vs_torch", "--worker", worker,
               "--model", args.model, "--repeats", str(args.repeats), "--threads",
               str(args.threads), "--platform", args.platform, "--dtype", args.dtype,
               "--out", out.name,
               "--checkpoints",
               checkpoints if isinstance(checkpoints, str) else json.dumps(checkpoints)]
        if case is not None:
            cmd += ["--case", json.dumps(case.as_dict())]
        env = {**os.environ, **platform_env(args.platform)}
        if not args.no_huge_pages:  # the same for both stacks: both allocate large buffers
            env = huge_pages_env(env)
        subprocess.run(cmd, check=True, env=env)
        with open(out.name) as f:
            return json.load(f)


def platform_env(platform: str) -> dict:
    """A worker's environment: JAX on ``platform``; torch without a GPU unless it is ``cuda``."""
    if platform == "cuda":
        return {"JAX_PLATFORMS": "cuda"}
    return {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}


def run_cases(cases: Sequence[Case], args) -> list:
    """Every case on both stacks, ``args.rounds`` times, alternating; the worker records."""
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = run_worker("prepare", args, checkpoints=tmp)
        for r in range(args.rounds):
            for i, case in enumerate(cases):
                order = STACKS if (r + i) % 2 == 0 else STACKS[::-1]
                for stack in order:
                    print(f"round {r + 1}/{args.rounds}: {case.name} on {stack}", file=sys.stderr,
                          flush=True)
                    result = run_worker(stack, args, case=case, checkpoints=checkpoints)
                    records.append({"round": r, "stack": stack, "case": case.as_dict(), **result})
                    if args.json:
                        with open(args.json, "w") as f:
                            json.dump({"model": args.model, "repeats": args.repeats,
                                       "threads": args.threads, "platform": args.platform,
                                       "dtype": args.dtype, "huge_pages": not args.no_huge_pages,
                                       "records": records}, f, indent=1)
    return records


def main(argv=None) -> list:
    args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return []
    cases = [case for group in args.cases.split(",") if group for case in GROUPS[group]]
    cases = list(dict.fromkeys(cases))
    records = run_cases(cases, args)
    print(report.environment(args))
    print(report.tables(records))
    return records


if __name__ == "__main__":
    main()
