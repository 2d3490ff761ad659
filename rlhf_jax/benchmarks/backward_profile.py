"""Where the PPO update's forward + backward time goes on XLA:CPU: parts timed alone, and a trace.

What it measures, on the ``llama-135m`` preset (SmolLM2-135M's shape, random weights, float32),
``--batch`` rows of ``--prompt-len`` + ``--response-len`` tokens (the PPO iteration's 16 × (64 +
128) by default):

- ``full``: the policy's response log-probs (:func:`rlhf_jax.ppo.rollout.policy_outputs`, the
  update's forward) and their mean as the loss;
- ``trunk``: the decoder stack alone, its response-position hidden states dotted with a fixed
  random tensor as the loss;
- ``head``: the LM head and the token log-probs alone, on fixed hidden states, as the update
  computes them on this backend (:func:`rlhf_jax.models.vocab_logprobs.head_logprobs`);
- ``head_chunked``: the same in the chunked form accelerators compile (a chunk of positions at
  a time, the logits recomputed in the backward pass), timed on this backend;

each jitted as a forward and as ``jax.grad`` (forward + backward): the median of ``--repeats``
calls after a warm-up. With ``--trace PART`` it also records one call of that part's forward +
backward with ``jax.profiler`` and prints the XLA thunks that took longest, summed over calls
(a ``copy_*_fusion`` among them is a layout change XLA inserted). A backward costs about two
forwards where the GEMMs dominate; what is above that is what to look at.

Run (on a quiet machine)::

    python -m rlhf_jax.benchmarks.backward_profile --trace trunk
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import tempfile

PARTS = ("full", "trunk", "head", "head_chunked")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--response-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trace", choices=PARTS, default=None)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--xla-defaults", action="store_true")
    args = parser.parse_args(argv)
    args.parts = [p for p in args.parts.split(",") if p]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown --parts {sorted(unknown)}; expected some of {PARTS}")
    return args


def losses(batch: int, prompt_len: int, response_len: int, preset: str = "llama-135m"):
    """``(params, {part: loss(params)})`` on fixed random inputs."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rlhf_jax.models import CausalLM, config_from_hf, init_params
    from rlhf_jax.models.presets import preset_config
    from rlhf_jax.models.transformer import lm_head_weight
    from rlhf_jax.models.vocab_logprobs import head_logprobs, token_logprobs_and_entropy
    from rlhf_jax.ppo.rollout import policy_outputs

    model = CausalLM(config_from_hf(preset_config(preset)))
    params = init_params(model, jax.random.key(0))
    rng = np.random.default_rng(0)
    vocab, width = model.config.vocab_size, model.config.hidden_size
    prompt = jnp.asarray(rng.integers(3, vocab, (batch, prompt_len)), jnp.int32)
    response = jnp.asarray(rng.integers(3, vocab, (batch, response_len)), jnp.int32)
    ids = jnp.concatenate([prompt, response], axis=1)
    probe = jnp.asarray(rng.standard_normal((batch, response_len, width)), jnp.float32)
    at = slice(prompt_len - 1, prompt_len - 1 + response_len)

    def full(p):
        logprobs, _, _ = policy_outputs(model, p, prompt, jnp.ones_like(prompt), response,
                                        jnp.ones_like(response), with_values=False)
        return jnp.mean(logprobs)

    def trunk(p):
        out = model.apply({"params": p}, ids, attention_mask=jnp.ones_like(ids),
                          last_token_only=True)
        return jnp.mean(out.hidden_states[:, at] * probe)

    def head_part(form):
        def loss(p):
            weight, vocab_major = lm_head_weight(p, model.config)
            return jnp.mean(form(probe, weight, response, vocab_major=vocab_major)[0])
        return loss

    return params, {"full": full, "trunk": trunk, "head": head_part(head_logprobs),
                    "head_chunked": head_part(token_logprobs_and_entropy)}


def median_seconds(fn, arg, repeats: int) -> float:
    """Median seconds of ``fn(arg)`` after a warm-up call (:func:`decode.median_seconds`)."""
    import jax

    from rlhf_jax.benchmarks.decode import median_seconds as median_of
    run = lambda: jax.block_until_ready(fn(arg))  # noqa: E731
    run()
    return median_of(run, repeats)


def top_thunks(fn, arg, top: int) -> list:
    """``[(seconds, calls, name)]`` of one traced call, longest first (``jax.profiler``'s
    Perfetto trace, complete events summed by name; enclosing executor spans left out)."""
    import jax
    jax.block_until_ready(fn(arg))  # compiled before the trace starts
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            jax.block_until_ready(fn(arg))
        (path,) = glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True)
        events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    total = collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        name = e.get("name", "")
        if e.get("ph") == "X" and "dur" in e and not name.startswith(("$", "ThunkExecutor")):
            total[name][0] += e["dur"] / 1e6
            total[name][1] += 1
    rows = sorted(((s, n, name) for name, (s, n) in total.items()), reverse=True)
    return rows[:top]


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not args.xla_defaults:
        from rlhf_jax.xla_cpu import tune_cpu_flags
        tune_cpu_flags()
    import jax
    params, parts = losses(args.batch, args.prompt_len, args.response_len)
    print(f"llama-135m, float32, {args.batch} × ({args.prompt_len} + {args.response_len}) tokens, "
          f"jax {jax.__version__} ({jax.default_backend()}), median of {args.repeats} after a "
          "warm-up\n")
    print("| part | forward s | forward + backward s | backward / forward |\n|---|---|---|---|")
    out = {}
    for name in args.parts:
        fwd = median_seconds(jax.jit(parts[name]), params, args.repeats)
        both = median_seconds(jax.jit(jax.grad(parts[name])), params, args.repeats)
        out[name] = {"forward_s": fwd, "forward_backward_s": both}
        print(f"| {name} | {fwd:.3f} | {both:.3f} | {(both - fwd) / fwd:.2f} |", flush=True)
    if args.trace:
        print(f"\nlongest XLA thunks in one forward + backward of {args.trace}:\n")
        print("| seconds | calls | thunk |\n|---|---|---|")
        rows = top_thunks(jax.jit(jax.grad(parts[args.trace])), params, args.top)
        for seconds, calls, name in rows:
            print(f"| {seconds:.3f} | {calls} | {name} |")
        out["trace"] = rows
    return out


if __name__ == "__main__":
    main()
