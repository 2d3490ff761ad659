"""Decode throughput: our JAX sampler against transformers' ``generate``, with a roofline.

What it measures: decoding tokens/s of :func:`rlhf_jax.generate.sample` and of
``transformers`` ``model.generate`` on the same float32 weights, for each model
and batch size, plus how close ours comes to a roofline measured on the same
machine in the same run. Greedy by default; ``--sampling paper`` runs the
paper's eval sampling (temperature 0.9, top_p 0.9, repetition penalty 1.2) on
both sides, where the logits processing (nucleus, penalty) costs time too.

How:

- Models. ``tiny``: a random-weight transformers model from the ``tiny-llama``
  preset, saved with ``save_pretrained`` and loaded into ours with
  ``load_pretrained``. ``smollm2-135m``: the real SmolLM2-135M-Instruct GGUF
  (Q4_1, dequantized to float32 by both sides); if the file is absent, a
  random-weight model of the ``llama-135m`` preset stands in and the table says so.
- Cases. Random prompt ids (no padding) of ``--prompt-len`` tokens, exactly
  ``--new-tokens`` new tokens per row (EOS disabled on both sides: ``eos_id=None``
  for ours, ``eos_token_id=None`` for transformers), greedy. transformers runs with
  ``use_cache=True`` (its default dynamic KV cache), ``do_sample=False`` and
  ``sdpa`` attention. ``torch.set_num_threads`` is the number of usable cores
  (``--threads`` overrides it); XLA's CPU backend uses all of them by default.
- Isolation: each framework is timed in its own fresh process (``--worker``),
  the other not even imported; in a shared process torch's OpenMP threads kept
  spinning after ``generate`` and slowed XLA by a quarter.
- Configuration of ours: what the ``rlhf-jax`` command runs — the decoding
  layout made once at load (:func:`rlhf_jax.generate.decoding_view`: layers
  unrolled and, where they build, the CPU kernels of :mod:`rlhf_jax.kernels`;
  ``RLHF_JAX_CPU_KERNELS=0`` leaves XLA's operations) and the XLA:CPU flags
  of :mod:`rlhf_jax.xla_cpu` (``--xla-defaults`` keeps XLA's defaults instead).
- Timing. One warm-up call (JAX compilation happens there and is excluded), then
  ``--repeats`` timed calls; the median is reported. JAX results are waited for
  with ``jax.block_until_ready``. Each framework is timed twice: with
  ``new_tokens`` and with 1 new token. *Decode tok/s* = batch × (new_tokens − 1) /
  (difference of the two): prefill cancels out, which is what the roofline
  describes. *End-to-end tok/s* = batch × new_tokens / seconds of the full call,
  prefill included. ``greedy-agreement`` is the fraction of positions where both
  frameworks chose the same token (a sanity column: ~1.0 in float32; once one
  near-tie flips, the rest of that row usually differs).
- Roofline. Memory bandwidth = reading a 512 MiB float32 array (bytes / s): a
  sum, and one row through :mod:`rlhf_jax.kernels.panel_matmul`;
  matmul rate = a 2048 × 2048 float32 matmul (FLOP/s); each the fastest of 5
  runs, and the best of jitted JAX (XLA's default flags and ours, each in a
  fresh process) and torch on all cores (XLA sums on one thread, which reads
  memory slower than two). Per decode step at batch ``b`` and mean cache length
  ``S = prompt_len + new_tokens / 2``: bytes = weight bytes (the LM head always;
  the token embedding only when it is the tied LM head — an untied embedding
  lookup reads just ``b`` rows) + KV cache reads ``2 · layers · b · S · kv_heads ·
  head_dim · 4``; FLOPs = ``2 · b · (non-embedding matmul params + vocab · hidden)``
  + ``4 · b · layers · heads · head_dim · S``. Step time = max(bytes / bandwidth,
  FLOPs / matmul rate), the larger term names the bound; roofline tokens/s =
  ``b`` / step time. *GEMM@batch roofline*: the same with the matmul rate
  measured at the decode GEMM's own shape (``[b, hidden] × [hidden,
  intermediate]``, a chain over the layers' weights), i.e. what XLA:CPU's own
  ``dot`` reaches on skinny matmuls, far below the square-matmul rate at small
  ``b``; with the CPU kernels of :mod:`rlhf_jax.kernels` ours can exceed it.

Run (on a quiet machine; ``--quick`` is a smoke run with batches 1,4, 8 new
tokens and 1 repeat)::

    python -m rlhf_jax.benchmarks.decode --models tiny,smollm2-135m \\
        --batches 1,16,64 --prompt-len 32 --new-tokens 64 --repeats 3 [--json out.json]

On a shared machine whose speed drifts over minutes, add ``--rounds 3``: the two
frameworks' processes then alternate three times and every timing is the median
over the rounds (the JSON keeps each round's decode seconds).

Caveats: CPU numbers are noisy when other processes share the cores, and
torch's OpenMP threads suffer most: with 2 threads on 2 cores while another
process keeps one core busy, ``generate`` ran ~20× slower than with 1 thread.
The header prints the load average; rerun with ``--threads 1`` to check. The
roofline ignores prefill (the timed calls include it), activations, and the
sampler's own work (argmax, log-softmax over the vocabulary). Our sampler
attends over all ``prompt_len + new_tokens`` cache slots every step (masked),
so it reads more KV cache than the mean-``S`` roofline assumes. The 2048²
matmul rate is optimistic for the skinny decode GEMMs at small batch, and a
sum is one of several ways to measure bandwidth. Tokens/s of the ``tiny`` model
measure per-step overhead, not arithmetic.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.generate import decoding_view, sample
from rlhf_jax.models import load_pretrained
from rlhf_jax.models.gguf_import import smollm2_gguf_path
from rlhf_jax.models.presets import preset_config
from rlhf_jax.models.torch_reference import random_torch_model
from rlhf_jax.xla_cpu import tune_cpu_flags

MODEL_NAMES = ("tiny", "smollm2-135m")
BANDWIDTH_BYTES = 512 * 1024 * 1024
MATMUL_SIZE = 2048
FLOAT32_BYTES = 4
COLUMNS = ("model", "batch", "ours decode tok/s", "transformers decode tok/s", "decode speed-up",
           "ours without CPU kernels decode tok/s",
           "ours end-to-end tok/s", "transformers end-to-end tok/s", "roofline tok/s (bound)",
           "ours/roofline", "GEMM@batch roofline tok/s", "ours/GEMM@batch", "greedy-agreement")


SAMPLING = {
    "greedy": {"temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0},
    "paper": {"temperature": 0.9, "top_p": 0.9, "repetition_penalty": 1.2},
}
"""The decoding settings a case can use: greedy, or the paper's eval sampling (§3)."""


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options; ``--quick`` overrides batches, new tokens and repeats."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate the two frameworks' processes this many times and take "
                             "the median over rounds (steadier on a machine whose speed drifts)")
    parser.add_argument("--sampling", choices=tuple(SAMPLING), default="greedy",
                        help="greedy, or the paper's eval sampling (temperature 0.9, top_p 0.9, "
                             "repetition penalty 1.2) on both sides")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the number of usable cores)")
    parser.add_argument("--without-cpu-kernels", action="store_true",
                        help="also time ours with RLHF_JAX_CPU_KERNELS=0 (XLA's own matmul and "
                             "attention) in the same rounds")
    parser.add_argument("--json", default=None, help="write the rows (and environment) here")
    parser.add_argument("--quick", action="store_true", help="batches 1,4; 8 new tokens; 1 repeat")
    parser.add_argument("--worker", choices=("ours", "hf"), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--xla-defaults", action="store_true",
                        help="keep XLA's CPU defaults (skip rlhf_jax.xla_cpu.tune_cpu_flags)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.new_tokens, args.repeats = "1,4", 8, 1
    args.models = [m for m in args.models.split(",") if m]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    args.threads = args.threads or num_cores()
    if args.rounds < 1 or args.repeats < 1:
        parser.error(f"--rounds and --repeats must be ≥ 1, got {args.rounds} and {args.repeats}")
    unknown = set(args.models) - set(MODEL_NAMES)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; known: {list(MODEL_NAMES)}")
    return args


def num_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def wall_times(fn, repeats: int) -> list:
    """Wall time of each of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` (call it once before, to warm up)."""
    return statistics.median(wall_times(fn, repeats))


# --- roofline -----------------------------------------------------------------------------


def best_seconds(fn, repeats: int) -> float:
    """Fastest of ``repeats`` calls of ``fn`` after one warm-up call: a machine limit is a peak."""
    fn()
    return min(wall_times(fn, repeats))


def measure_bandwidth(repeats: int = 5) -> float:
    """Memory read bandwidth in bytes/s: a jitted sum over a 512 MiB float32 array."""
    x = jnp.ones((BANDWIDTH_BYTES // FLOAT32_BYTES,), jnp.float32)
    reduce = jax.jit(jnp.sum)
    run = lambda: jax.block_until_ready(reduce(x))
    return BANDWIDTH_BYTES / best_seconds(run, repeats)


def measure_bandwidth_with_panel_kernel(repeats: int = 5) -> float:
    """Memory read bandwidth in bytes/s streaming a 512 MiB matrix through the CPU panel matmul.

    One row times a ``[4096, 32768]`` float32 matrix: every weight byte read
    once, as a batch-1 decode step reads them, on all of XLA's pool threads
    (the jitted sum reads on one). 0 when the kernel is unavailable.
    """
    from rlhf_jax.kernels import panel_matmul
    if not panel_matmul.available():
        return 0.0
    k = 4096
    n = BANDWIDTH_BYTES // FLOAT32_BYTES // k
    packed = jnp.ones((n // panel_matmul.PANEL, k, panel_matmul.PANEL), jnp.float32)
    x = jnp.ones((1, k), jnp.float32)
    stream = jax.jit(lambda x, w: panel_matmul.panel_matmul(x, w, n))
    run = lambda: jax.block_until_ready(stream(x, packed))
    return BANDWIDTH_BYTES / best_seconds(run, repeats)


def measure_matmul_rate(repeats: int = 5) -> float:
    """float32 matmul rate in FLOP/s: a jitted 2048 × 2048 by 2048 × 2048 product."""
    a = jnp.ones((MATMUL_SIZE, MATMUL_SIZE), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    run = lambda: jax.block_until_ready(matmul(a, a))
    return 2 * MATMUL_SIZE ** 3 / best_seconds(run, repeats)


def measure_limits_with_torch(repeats: int = 5) -> tuple:
    """``(bandwidth, matmul rate)`` measured with torch on all cores: ``sum`` over 512 MiB, 2048² ``mm``.

    XLA:CPU runs a reduction on one thread, which on some hosts reads memory
    slower than several threads can; the roofline must be a bound that no
    implementation beats, so the better of the two libraries is used.
    """
    import torch
    torch.set_num_threads(num_cores())
    x = torch.ones(BANDWIDTH_BYTES // FLOAT32_BYTES)
    bandwidth = BANDWIDTH_BYTES / best_seconds(lambda: x.sum(), repeats)
    a = torch.ones(MATMUL_SIZE, MATMUL_SIZE)
    rate = 2 * MATMUL_SIZE ** 3 / best_seconds(lambda: torch.mm(a, a), repeats)
    return bandwidth, rate


def measure_decode_gemm_rate(cfg, batch: int, repeats: int = 5) -> float:
    """float32 FLOP/s of the decode step's GEMM shape: ``[batch, hidden] × [hidden, intermediate]``.

    Skinny matmuls run far below the square-matmul rate on CPU; this is the
    rate a decode step's MLP can actually reach at this batch size.
    """
    x = jnp.ones((batch, cfg.hidden_size), jnp.float32)
    keys = jax.random.split(jax.random.key(0), cfg.num_layers)
    # One array per layer, as the sampler's unrolled decoding sees them (slicing a
    # stacked array inside jit would copy it and measure the copy instead).
    ws = [jax.random.normal(k, (cfg.hidden_size, cfg.intermediate_size)) for k in keys]
    chain = jax.jit(lambda x, ws: sum(x @ w for w in ws))
    run = lambda: jax.block_until_ready(chain(x, ws))
    return 2 * batch * sum(w.size for w in ws) / best_seconds(run, repeats)


def layer_matmul_params(cfg) -> int:
    """Matmul weights of one block (attention projections and MLP), biases excluded."""
    q_out, kv_out = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    attention = cfg.hidden_size * (2 * q_out + 2 * kv_out)
    mlp = (3 if cfg.mlp == "gated" else 2) * cfg.hidden_size * cfg.intermediate_size
    return attention + mlp


def weight_bytes_per_step(params, cfg) -> int:
    """Parameter bytes one decode step reads: all of them, less an untied embedding table."""
    total = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(params))
    if cfg.tie_word_embeddings:
        return total
    return total - cfg.vocab_size * cfg.hidden_size * jnp.dtype(cfg.param_dtype).itemsize


def decode_step_cost(weight_bytes: int, cfg, batch: int, cache_len: float) -> tuple:
    """``(bytes, flops)`` of one decode step at ``batch`` rows and ``cache_len`` cached tokens."""
    kv_bytes = 2 * cfg.num_layers * batch * cache_len * cfg.num_kv_heads * cfg.head_dim \
        * jnp.dtype(cfg.compute_dtype).itemsize
    matmul_params = cfg.num_layers * layer_matmul_params(cfg) + cfg.vocab_size * cfg.hidden_size
    attention_flops = 4 * batch * cfg.num_layers * cfg.num_heads * cfg.head_dim * cache_len
    step_flops = 2 * batch * matmul_params + attention_flops
    return weight_bytes + kv_bytes, step_flops


def roofline(weight_bytes: int, cfg, batch: int, cache_len: float, bandwidth: float,
             flop_rate: float):
    """``(tokens/s, "memory" | "compute")`` of a decode step at the measured machine limits."""
    step_bytes, step_flops = decode_step_cost(weight_bytes, cfg, batch, cache_len)
    memory_s, compute_s = step_bytes / bandwidth, step_flops / flop_rate
    return batch / max(memory_s, compute_s), "memory" if memory_s >= compute_s else "compute"


# --- models ---------------------------------------------------------------------------------


def checkpoint_for(name: str, tmp: str) -> tuple:
    """``(label, path)`` of the checkpoint both frameworks load for benchmark model ``name``."""
    if name == "smollm2-135m" and smollm2_gguf_path() is not None:
        return "smollm2-135m (GGUF Q4_1→f32)", smollm2_gguf_path()
    preset, label = {"tiny": ("tiny-llama", "tiny (random tiny-llama)"),
                     "smollm2-135m": ("llama-135m", "llama-135m (random; SmolLM2 GGUF absent)")}[name]
    path = os.path.join(tmp, preset)
    random_torch_model(preset_config(preset), attn_implementation="sdpa").save_pretrained(path)
    return label, path


def load_hf_model(path: str):
    """transformers model (float32, sdpa attention) from an HF directory or a GGUF file."""
    import torch
    import transformers
    kwargs = dict(dtype=torch.float32, attn_implementation="sdpa")
    if path.endswith(".gguf"):
        return transformers.AutoModelForCausalLM.from_pretrained(
            os.path.dirname(path), gguf_file=os.path.basename(path), **kwargs).eval()
    return transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()


# --- one framework, in its own process ------------------------------------------------------


def ours_generate(model, params, prompt_ids: np.ndarray, new_tokens: int, sampling: str):
    """A call that decodes ``new_tokens`` with our sampler and returns numpy tokens."""
    ids = jnp.asarray(prompt_ids)
    mask = jnp.ones_like(ids)
    key = jax.random.PRNGKey(0)

    def run():
        out = sample(model, params, ids, mask, key, max_new_tokens=new_tokens, top_k=0,
                     eos_id=None, pad_id=0, **SAMPLING[sampling])
        return np.asarray(jax.block_until_ready(out.tokens))
    return run


def hf_generate(hf_model, prompt_ids: np.ndarray, new_tokens: int, sampling: str):
    """A call that decodes ``new_tokens`` with transformers and returns numpy tokens."""
    import torch
    ids = torch.from_numpy(prompt_ids.astype(np.int64))
    mask = torch.ones_like(ids)
    settings = SAMPLING[sampling]
    if settings["temperature"] > 0:
        kwargs = dict(do_sample=True, temperature=settings["temperature"], top_p=settings["top_p"],
                      top_k=0, repetition_penalty=settings["repetition_penalty"])
    else:
        kwargs = dict(do_sample=False)

    def run():
        with torch.inference_mode():
            out = hf_model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens,
                                    use_cache=True, eos_token_id=None, pad_token_id=0, **kwargs)
        return out[:, ids.shape[1]:].numpy()
    return run


def timed(run, repeats: int) -> tuple:
    """``(median seconds, tokens)``: one warm-up call, then ``repeats`` timed calls."""
    tokens = run()
    return median_seconds(run, repeats), tokens


def decode_and_total_seconds(make_run, prompt, args) -> tuple:
    """``(decode-only seconds, end-to-end seconds, tokens)`` of one framework.

    Decode-only time = time(``new_tokens``) − time(1 new token): the prefill and
    the first token cancel out, leaving ``new_tokens − 1`` decode steps.
    """
    total_s, tokens = timed(make_run(prompt, args.new_tokens), args.repeats)
    first_s, _ = timed(make_run(prompt, 1), args.repeats)
    decode_s = total_s - first_s
    return (decode_s if decode_s > 0 else float("nan")), total_s, tokens


def prompts(batch: int, prompt_len: int, vocab_size: int) -> np.ndarray:
    """The random prompt ids of one case (the same in both workers)."""
    return np.random.default_rng(batch).integers(3, vocab_size, (batch, prompt_len), dtype=np.int32)


def run_worker(args) -> dict:
    """Time one framework on every batch size; the other framework is not even imported."""
    if args.worker == "ours":
        model, params = decoding_view(*load_pretrained(args.checkpoint, dtype="float32"))
        cfg = model.config
        make_run = lambda p, n: ours_generate(model, params, p, n, args.sampling)
        vocab = cfg.vocab_size
        extra = {"weight_bytes": weight_bytes_per_step(params, cfg)}
    else:
        import torch
        torch.set_num_threads(args.threads)
        hf_model = load_hf_model(args.checkpoint)
        make_run = lambda p, n: hf_generate(hf_model, p, n, args.sampling)
        vocab, extra = hf_model.config.vocab_size, {}
    cases = {}
    for batch in args.batches:
        decode_s, total_s, tokens = decode_and_total_seconds(
            make_run, prompts(batch, args.prompt_len, vocab), args)
        cases[str(batch)] = {"decode_s": decode_s, "total_s": total_s, "tokens": tokens.tolist()}
        if args.worker == "ours":
            cases[str(batch)]["gemm_rate"] = measure_decode_gemm_rate(model.config, batch)
    return {"cases": cases, **extra}


def run_in_subprocess(worker: str, checkpoint: str, args, env: dict) -> dict:
    """Run ``--worker`` in a fresh Python process and return its JSON result."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "rlhf_jax.benchmarks.decode", "--worker", worker,
               "--checkpoint", checkpoint, "--out", out.name, "--batches",
               ",".join(map(str, args.batches)), "--prompt-len", str(args.prompt_len),
               "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats),
               "--threads", str(args.threads), "--sampling", args.sampling]
        subprocess.run(cmd, env={**os.environ, **env}, check=True)
        with open(out.name) as f:
            return json.load(f)


def time_model(label: str, checkpoint: str, args, ours_env: dict) -> dict:
    """One model's timings: each framework in its own process.

    With ``--rounds R`` the two processes alternate ``R`` times (ours, transformers,
    ours, …) and each timing is the median over rounds, so that both frameworks
    are sampled across the same stretch of time.
    """
    ours_runs, hf_runs, xla_runs = [], [], []
    for _ in range(args.rounds):
        ours_runs.append(run_in_subprocess("ours", checkpoint, args, ours_env))
        hf_runs.append(run_in_subprocess("hf", checkpoint, args, {}))
        if args.without_cpu_kernels:
            xla_runs.append(run_in_subprocess("ours", checkpoint, args,
                                              {**ours_env, "RLHF_JAX_CPU_KERNELS": "0"}))
    print(f"timed {label}", file=sys.stderr, flush=True)
    return {"label": label, "cfg": decoder_config(checkpoint), "ours": median_over_rounds(ours_runs),
            "hf": median_over_rounds(hf_runs),
            "xla": median_over_rounds(xla_runs) if xla_runs else None}


def model_rows(timing: dict, args, limits: tuple) -> list:
    """The table rows of one model's :func:`time_model` result against the machine's limits."""
    ours, hf, xla = timing["ours"], timing["hf"], timing["xla"]
    rows = []
    for batch in args.batches:
        o, h = ours["cases"][str(batch)], hf["cases"][str(batch)]
        rows.append(compare(timing["label"], timing["cfg"], batch, o, h, ours["weight_bytes"], args,
                            limits))
        rows[-1]["ours_xla_only_decode_tok_s"] = (
            None if xla is None else batch * (args.new_tokens - 1) / xla["cases"][str(batch)]["decode_s"])
    return rows


def median_over_rounds(runs: list) -> dict:
    """One worker result from several rounds: median timings per case; tokens of the first round.

    Each case also keeps the per-round decode seconds (``decode_s_rounds``).
    """
    merged = {**runs[0], "cases": {}}
    for batch, first in runs[0]["cases"].items():
        case = {**first, "decode_s_rounds": [run["cases"][batch]["decode_s"] for run in runs]}
        for key in ("decode_s", "total_s", "gemm_rate"):
            if key in first:
                case[key] = statistics.median(run["cases"][batch][key] for run in runs)
        merged["cases"][batch] = case
    return merged


def decoder_config(checkpoint: str):
    """The :class:`DecoderConfig` of a checkpoint, without loading its weights into JAX."""
    from rlhf_jax.models import config_from_hf
    from rlhf_jax.models.hf import read_config
    if checkpoint.endswith(".gguf"):
        from rlhf_jax.models.gguf_import import read_gguf
        return config_from_hf(read_gguf(checkpoint)[0], checkpoint)
    return config_from_hf(read_config(checkpoint), checkpoint)


def compare(label, cfg, batch: int, ours: dict, hf: dict, weight_bytes: int, args, limits) -> dict:
    """One table row from both workers' timings."""
    ours_tokens, hf_tokens = np.asarray(ours["tokens"]), np.asarray(hf["tokens"])
    if hf_tokens.shape != ours_tokens.shape:
        raise RuntimeError(f"transformers returned {hf_tokens.shape}, ours {ours_tokens.shape}")
    steps = batch * (args.new_tokens - 1)
    cache_len = args.prompt_len + args.new_tokens / 2
    roof_tps, bound = roofline(weight_bytes, cfg, batch, cache_len, *limits)
    gemm_tps, _ = roofline(weight_bytes, cfg, batch, cache_len, limits[0], ours["gemm_rate"])
    ours_dec_tps = steps / ours["decode_s"]
    return {"model": label, "batch": batch, "ours_decode_tok_s": ours_dec_tps,
            "transformers_decode_tok_s": steps / hf["decode_s"],
            "decode_speedup": hf["decode_s"] / ours["decode_s"],
            "ours_tok_s": batch * args.new_tokens / ours["total_s"],
            "transformers_tok_s": batch * args.new_tokens / hf["total_s"],
            "roofline_tok_s": roof_tps, "bound": bound, "ours_over_roofline": ours_dec_tps / roof_tps,
            "gemm_at_batch_GFLOP_s": ours["gemm_rate"] / 1e9, "gemm_roofline_tok_s": gemm_tps,
            "ours_over_gemm_roofline": ours_dec_tps / gemm_tps,
            "greedy_agreement": (float(np.mean(ours_tokens == hf_tokens))
                                 if args.sampling == "greedy" else None),
            "ours_s": ours["total_s"], "transformers_s": hf["total_s"],
            "ours_decode_s": ours["decode_s"], "transformers_decode_s": hf["decode_s"],
            "ours_decode_s_rounds": ours.get("decode_s_rounds"),
            "transformers_decode_s_rounds": hf.get("decode_s_rounds")}


# --- output -----------------------------------------------------------------------------------


def format_row(row: dict) -> str:
    """One Markdown table line."""
    cells = (row["model"], str(row["batch"]), f"{row['ours_decode_tok_s']:.1f}",
             f"{row['transformers_decode_tok_s']:.1f}", f"{row['decode_speedup']:.2f}×",
             "—" if row.get("ours_xla_only_decode_tok_s") is None
             else f"{row['ours_xla_only_decode_tok_s']:.1f}",
             f"{row['ours_tok_s']:.1f}", f"{row['transformers_tok_s']:.1f}",
             f"{row['roofline_tok_s']:.1f} ({row['bound']})", f"{row['ours_over_roofline']:.2f}",
             f"{row['gemm_roofline_tok_s']:.1f}", f"{row['ours_over_gemm_roofline']:.2f}",
             "—" if row["greedy_agreement"] is None else f"{row['greedy_agreement']:.3f}")
    return "| " + " | ".join(cells) + " |"


def format_table(rows: list) -> str:
    """The Markdown table of all rows."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + [format_row(row) for row in rows])


def environment(args, bandwidth: float, flop_rate: float, ours_flags: str) -> dict:
    """Versions, cores, measured limits and the case settings."""
    import torch
    import transformers
    return {"jax": jax.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "cores": num_cores(),
            "torch_threads": args.threads, "load_average_1min": os.getloadavg()[0],
            "jax_backend": jax.default_backend(), "bandwidth_GB_s": bandwidth / 1e9,
            "matmul_GFLOP_s": flop_rate / 1e9, "prompt_len": args.prompt_len,
            "new_tokens": args.new_tokens, "repeats": args.repeats, "rounds": args.rounds,
            "sampling": args.sampling,
            "sampling_settings": SAMPLING[args.sampling],
            "transformers_setup": "generate(use_cache=True), sdpa attention",
            "xla_flags": ours_flags}


def format_header(env: dict) -> str:
    """The lines printed above the table."""
    return "\n".join([
        f"jax {env['jax']} ({env['jax_backend']}), torch {env['torch']}, transformers "
        f"{env['transformers']}, {env['cores']} cores, torch threads {env['torch_threads']}, "
        f"1-min load average at start {env['load_average_1min']:.2f}",
        f"measured: memory bandwidth {env['bandwidth_GB_s']:.1f} GB/s (reading 512 MiB of f32), "
        f"matmul {env['matmul_GFLOP_s']:.1f} GFLOP/s (f32 {MATMUL_SIZE}²); each the fastest of 5 runs, "
        "measured before and after the cases (the higher of the two), the best of jitted JAX with XLA's default flags, with ours (sum, and the panel matmul "
        "kernel at one row), and torch on all cores",
        f"XLA_FLAGS for ours: {env['xla_flags'] or '(defaults)'}",
        f"cases: {env['sampling']} {env['sampling_settings']}, float32, prompt {env['prompt_len']} "
        f"random ids, {env['new_tokens']} new "
        f"tokens (EOS off), median of {env['repeats']} after 1 warm-up"
        + (f", then the median over {env['rounds']} alternating rounds" if env["rounds"] > 1 else "")
        + "; transformers "
        f"{env['transformers_setup']}", ""])


_LIMITS_CODE = ("import json; from rlhf_jax.benchmarks.decode import measure_bandwidth, "
                "measure_bandwidth_with_panel_kernel, measure_matmul_rate; print(json.dumps(["
                "max(measure_bandwidth(), measure_bandwidth_with_panel_kernel()), "
                "measure_matmul_rate()]))")


_TORCH_LIMITS_CODE = ("import json; from rlhf_jax.benchmarks.decode import "
                      "measure_limits_with_torch; print(json.dumps(measure_limits_with_torch()))")


def machine_limits(ours_env: dict) -> tuple:
    """``(bandwidth, matmul rate)``: the best of XLA with its default flags, with ours, and torch.

    The CPU tuning slows square matmuls, and XLA sums memory on one thread; the
    roofline must use the best rate the machine reaches, not the rate of the
    configuration being judged. Each is measured in a fresh process.
    """
    results = []
    for code, env in ((_LIMITS_CODE, {"XLA_FLAGS": "", "RLHF_JAX_CPU_TUNING": "0"}),
                      (_LIMITS_CODE, ours_env), (_TORCH_LIMITS_CODE, {})):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                             capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    return max(r[0] for r in results), max(r[1] for r in results)


def ours_environment(args) -> dict:
    """Environment of the ``ours`` worker: XLA_FLAGS with the CPU tuning unless ``--xla-defaults``."""
    if args.xla_defaults:
        return {"XLA_FLAGS": "", "RLHF_JAX_CPU_TUNING": "0"}
    saved = os.environ.get("XLA_FLAGS")
    tune_cpu_flags()
    flags = os.environ.get("XLA_FLAGS", "")
    if saved is None:
        os.environ.pop("XLA_FLAGS", None)
    else:
        os.environ["XLA_FLAGS"] = saved
    return {"XLA_FLAGS": flags}


def main(argv=None) -> list:
    """Run every (model, batch) case, print the header and table, optionally write JSON."""
    args = parse_args(argv)
    if args.worker:
        with open(args.out, "w") as f:
            json.dump(run_worker(args), f)
        return []
    ours_env = ours_environment(args)
    before = machine_limits(ours_env)
    with tempfile.TemporaryDirectory() as tmp:
        timings = [time_model(*checkpoint_for(name, tmp), args, ours_env) for name in args.models]
    after = machine_limits(ours_env)
    limits = (max(before[0], after[0]), max(before[1], after[1]))
    env = environment(args, *limits, ours_env["XLA_FLAGS"])
    env["limits_before_and_after"] = [before, after]
    print(format_header(env), flush=True)
    rows = [row for timing in timings for row in model_rows(timing, args, limits)]
    print("\n" + format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
