"""Make docs/scaling.md's table: the paper's stages at LLaMA sizes, compiled for TPU slices.

Usage (needs libtpu: ``pip install -e ".[tpu]"``; runs on a CPU machine, no TPU)::

    python docs/measure_fit.py --models llama-7b --stages rm,ppo --slices v5e-8,v5p-8

For each model and stage it runs ``rlhf-jax fit``'s :func:`rlhf_jax.fit.fit` on the paper's
config (``configs/rm/webgpt.py``, ``configs/ppo/webgpt.py``) with the model (and, for PPO, the
reward model) replaced by the preset of that size, and prints one Markdown row per slice: the
largest phase's peak GiB per chip, which phase that is, and whether the stage fits; then the
smallest slice (fewest chips) that fits.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

STAGE_CONFIGS = {"rm": "configs/rm/webgpt.py", "ppo": "configs/ppo/webgpt.py"}


def overrides(stage: str, model: str) -> list:
    out = [f"--config.model.init=preset:{model}"]
    if stage == "ppo":
        out.append(f"--config.reward.model=preset:{model}")
    return out


def main(argv=None) -> int:
    from rlhf_jax.config import load_config
    from rlhf_jax.fit import fit
    from rlhf_jax.fit.chips import GIB

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="llama-7b")
    parser.add_argument("--stages", default="rm,ppo")
    parser.add_argument("--slices", default="v5e-8,v4-8,v5p-8")
    args = parser.parse_args(argv)
    print("| model | stage | slice | chips | peak GiB/chip (phase) | usable GiB/chip | fits | compile s |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for stage in args.stages.split(","):
            fitting = []
            for slice_name in args.slices.split(","):
                config = load_config(STAGE_CONFIGS[stage], overrides(stage, model))
                start = time.perf_counter()
                (report,) = fit(config, slice_name)
                seconds = time.perf_counter() - start
                worst = max(report.phases, key=lambda p: p.total_bytes)
                if report.fits:
                    fitting.append((report.num_chips, slice_name))
                print(f"| {model} | {stage} | {slice_name} | {report.num_chips} | "
                      f"{worst.total_bytes / GIB:.2f} ({worst.name}) | {report.chip.usable_gib:.2f} | "
                      f"{'yes' if report.fits else 'no'} | {seconds:.0f} |", flush=True)
            smallest = min(fitting)[1] if fitting else "none of these"
            print(f"| {model} | {stage} | smallest that fits: {smallest} | | | | | |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
