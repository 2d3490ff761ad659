"""Will a stage fit a TPU slice? Ahead-of-time compilation for a topology, from a CPU box.

``rlhf-jax fit --config FILE[:VARIANT] --topology v5e-8`` builds every compiled function of
the config's stage *abstractly* (parameter and batch shapes only: no weights, no data, no
tokenizer), compiles each for the topology's chips (libtpu's ``get_topology_desc``; no TPU
needed), and prints one table:

- **peak GiB/chip**: XLA's ``peak_memory_in_bytes`` of the compiled phase (arguments, outputs
  and temporaries as the buffer assignment overlaps them), plus what stays resident across
  phases without being an argument of this one (for PPO: the reference and the reward model
  while the update runs, the optimizer state while sampling);
- **donated GiB/chip**: the bytes XLA aliases from inputs to outputs (a donated train state
  shows here; 0 means it is copied);
- **FLOPs/step**, counted by hand (:func:`decoder_forward_flops`): ``cost_analysis()`` counts
  a loop body once, so a scanned or accumulated step reads 100× too low;
- **roofline s/step**: ``FLOPs / (chips × peak bf16 FLOP/s)``, or, for a decode loop, the larger
  of that and ``bytes read / (chips × HBM bandwidth)``, from :data:`CHIPS`.

The verdict compares each phase's peak with the chip's usable HBM; the command exits 1 when
a phase does not fit. Batch sizes are per process, as the stages read them: a slice with
``h`` hosts trains on ``h ×`` the configured batch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import sharding
from rlhf_jax.config import ConfigError

GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU chip: HBM, what a program may use of it, peak bf16 FLOP/s and HBM bandwidth."""

    name: str
    hbm_gib: float
    usable_gib: float
    bf16_flops: float
    hbm_bytes_per_s: float


CHIPS = {
    # Peak bf16 FLOP/s and HBM bandwidth per chip: Google Cloud's TPU system-architecture pages.
    # Usable HBM: the runtime's bytes_limit on v5e (15.75 GiB) and v4 (30.75 GiB) as measured on
    # those VMs; for v5p and v6e the HBM less the same 0.25 GiB / 1.25 GiB reserve (assumed).
    "v4": Chip("v4", 32.0, 30.75, 275e12, 1228e9),
    "v5e": Chip("v5e", 16.0, 15.75, 197e12, 819e9),
    "v5p": Chip("v5p", 95.0, 93.75, 459e12, 2765e9),
    "v6e": Chip("v6e", 32.0, 31.25, 918e12, 1640e9),
}

SLICES = {
    # slice name → (topology for get_topology_desc, its options). Chips: v5e and v6e count
    # chips in the name, v4 and v5p count TensorCores (2 per chip, one megacore device each).
    # v5e-8 and v6e-8 are single-host VMs with 8 chips; larger v5e/v6e slices have 4 per host.
    "v5e-4": ("v5e:2x2", {}), "v5e-8": ("v5e:2x4", {"chips_per_host_bounds": [2, 4, 1]}),
    "v5e-16": ("v5e:4x4", {}),
    "v6e-8": ("v6e:2x4", {"chips_per_host_bounds": [2, 4, 1]}), "v6e-16": ("v6e:4x4", {}),
    "v4-8": ("v4:2x2x1", {"chip_config_name": "megacore"}),
    "v4-16": ("v4:2x2x2", {"chip_config_name": "megacore"}),
    "v4-32": ("v4:2x2x4", {"chip_config_name": "megacore"}),
    "v5p-8": ("v5p:2x2x1", {}), "v5p-16": ("v5p:2x2x2", {}), "v5p-32": ("v5p:2x2x4", {}),
}


def _chip_of(topology: str) -> Chip:
    family = topology.split(":")[0].split("-")[0]
    if family not in CHIPS:
        raise ConfigError(f"topology {topology!r}: unknown chip {family!r} (known: {sorted(CHIPS)})")
    return CHIPS[family]


def topology_devices(name: str) -> tuple:
    """``(devices, chip, topology)`` of a slice name (``v5e-8``, :data:`SLICES`) or a topology
    (``v5e:2x4``). Needs libtpu (``pip install "jax[tpu]==<jax version>"``); runs on CPU."""
    topology, options = SLICES.get(name, (name, {}))
    if topology.startswith("v4") and not options:
        options = {"chip_config_name": "megacore"}
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # another JAX process may hold it
    try:
        from jax.experimental import topologies
        desc = topologies.get_topology_desc(topology, "tpu", **options)
    except Exception as err:  # libtpu missing, or a name it does not know
        raise ConfigError(f"cannot describe TPU topology {topology!r} ({name}): {err}. Needs "
                          f"libtpu: pip install \"jax[tpu]=={jax.__version__}\"; slice names: "
                          f"{sorted(SLICES)}") from None
    return list(desc.devices), _chip_of(topology), topology


# ----------------------------------------------------------------------------- counting

def shard_bytes(tree) -> int:
    """Bytes of one chip's shards of a pytree of ``ShapeDtypeStruct`` / arrays with shardings
    (the largest shard where they differ; an unsharded leaf counts whole)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.shape
        sh = getattr(leaf, "sharding", None)
        if sh is not None:
            shape = sh.shard_shape(shape)
        total += math.prod(shape) * _itemsize(leaf.dtype)
    return total


def _itemsize(dtype) -> int:
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return 8  # a threefry key: two uint32
    return jnp.dtype(dtype).itemsize


def matmul_params(cfg, *, lm_head: bool) -> int:
    """Weights that multiply every token: the blocks' projections, and the LM head if used."""
    e, f, h, k, d = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads,
                     cfg.head_dim)
    attention = e * h * d * 2 + e * k * d * 2            # q, o; k, v
    mlp = e * f * (3 if cfg.mlp == "gated" else 2)
    return cfg.num_layers * (attention + mlp) + (e * cfg.vocab_size if lm_head else 0)


def decoder_forward_flops(cfg, tokens: int, context: int, *, lm_head: bool = True) -> float:
    """Forward FLOPs of ``tokens`` tokens that each attend over ``context`` keys:
    ``2·P·tokens + 4·layers·heads·head_dim·context·tokens`` (``P`` from :func:`matmul_params`;
    attention counted over the whole context, as a dense causal kernel computes it)."""
    attention = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * context
    return float(tokens) * (2 * matmul_params(cfg, lm_head=lm_head) + attention)


def train_flops(cfg, tokens: int, context: int, *, lm_head: bool = True) -> float:
    """Forward + backward (3 forwards), plus one more forward when the layers are rematerialised."""
    passes = 4 if cfg.remat != "none" else 3
    return passes * decoder_forward_flops(cfg, tokens, context, lm_head=lm_head)


# ----------------------------------------------------------------------------- phases

@dataclasses.dataclass
class Phase:
    """One compiled function of a stage, compiled for the topology."""

    name: str
    peak_bytes: int            # XLA's peak for the phase's program, per chip
    resident_bytes: int        # held across phases but not an argument of this one
    alias_bytes: int           # donated input bytes reused for outputs
    argument_bytes: int
    flops: float               # hand-counted, per call
    roofline_s: float
    note: str = ""

    @property
    def total_bytes(self) -> int:
        return self.peak_bytes + self.resident_bytes


def compile_phase(name: str, fn: Callable, args: Sequence, *, mesh, flops: float, chip: Chip,
                  num_chips: int, read_bytes: float = 0.0, resident_bytes: int = 0,
                  note: str = "", rules=sharding.DEFAULT_RULES) -> Phase:
    """``fn`` (jitted) lowered on abstract ``args`` under ``mesh`` (and logical ``rules``) and
    compiled for its devices."""
    roofline = max(flops / (num_chips * chip.bf16_flops),
                   read_bytes / chip.hbm_bytes_per_s if read_bytes else 0.0)
    with sharding.use_mesh(mesh, rules):
        lowered = fn.lower(*args)
        try:
            compiled = lowered.compile()
        except Exception as err:  # XLA:TPU refuses programs over the chip's HBM
            needed = out_of_memory_bytes(str(err))
            if needed is None:
                raise
            arguments = shard_bytes(args)
            return Phase(name=name, peak_bytes=needed + arguments, resident_bytes=int(resident_bytes),
                         alias_bytes=0, argument_bytes=arguments, flops=flops, roofline_s=roofline,
                         note=f"{note}; XLA refused it: out of HBM (temporaries {needed / GIB:.2f} GiB "
                              f"+ arguments)".lstrip("; "))
    memory = compiled.memory_analysis()
    return Phase(name=name, peak_bytes=int(memory.peak_memory_in_bytes),
                 resident_bytes=int(resident_bytes), alias_bytes=int(memory.alias_size_in_bytes),
                 argument_bytes=int(memory.argument_size_in_bytes), flops=flops,
                 roofline_s=roofline, note=note)


_OOM = re.compile(r"Ran out of memory in memory space hbm|Ran out of memory on HBM|RESOURCE_EXHAUSTED")
_REQUIRED = re.compile(r"required for [^(]*\(([\d.]+)([KMGT]?)\)")


def out_of_memory_bytes(message: str) -> Optional[int]:
    """The bytes XLA:TPU says a program needs when it refuses it for HBM (``None``: another error)."""
    if not _OOM.search(message):
        return None
    found = _REQUIRED.search(message)
    if not found:
        return 0
    scale = {"": 1, "K": 1024, "M": 1024 ** 2, "G": GIB, "T": 1024 ** 4}[found.group(2)]
    return int(float(found.group(1)) * scale)


def abstract(tree, shardings):
    """``ShapeDtypeStruct`` leaves carrying ``shardings`` (a matching tree, or one sharding)."""
    if not isinstance(shardings, (dict, list, tuple)) and not dataclasses.is_dataclass(shardings):
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shardings), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def _batch_struct(example_batch: dict, mesh) -> dict:
    return abstract({k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype)
                     for k, v in example_batch.items()}, sharding.batch_sharding(mesh))


def _hosts(devices) -> int:
    return len({d.process_index for d in devices})


# ----------------------------------------------------------------------------- stages

def _width(data) -> int:
    return int(max(data.buckets))


def fit_reward_model(config, devices, chip: Chip) -> list:
    """The reward-model stage: the Bradley–Terry step and the eval scoring."""
    from rlhf_jax.data import pipeline
    from rlhf_jax.models import ScalarModel
    from rlhf_jax.models.build import abstract_params, model_config
    from rlhf_jax.reward.train import reward_loss_for, score_step_for
    from rlhf_jax.stage import stage_mesh, supervised_steps

    mesh = stage_mesh(config, devices)
    cfg = model_config(config.model)
    model = ScalarModel(cfg, readout="last")
    params = abstract_params(model)
    steps = supervised_steps(model, params, config.rm, loss_fn=reward_loss_for(config.rm),
                             total_steps=1000, mesh=mesh)
    state = abstract(jax.eval_shape(lambda p: _init_state(p, steps.tx), params), steps.shardings)
    width, hosts = _width(config.data), _hosts(devices)

    def pair_batch(rows):
        example = {"index": 0, "chosen_ids": np.zeros(width, np.int32),
                   "rejected_ids": np.zeros(width, np.int32), "chosen_len": width,
                   "rejected_len": width}
        return _batch_struct(pipeline.collate_pairs([example], batch_size=rows * hosts,
                                                    width=width, pad_id=0), mesh)

    n = len(devices)
    step_tokens = 2 * config.rm.batch_size * hosts * width
    eval_tokens = 2 * config.rm.eval_batch_size * hosts * width
    return [
        compile_phase("rm step", steps.train_step, (state, pair_batch(config.rm.batch_size)),
                      mesh=mesh, chip=chip, num_chips=n,
                      flops=train_flops(cfg, step_tokens, width, lm_head=False),
                      note=f"{config.rm.batch_size * hosts} pairs × {width}, accum {config.rm.accum_steps}"),
        compile_phase("rm eval", score_step_for(model, steps),
                      (state.params, pair_batch(config.rm.eval_batch_size)), mesh=mesh, chip=chip,
                      num_chips=n, flops=decoder_forward_flops(cfg, eval_tokens, width, lm_head=False),
                      resident_bytes=shard_bytes(state.opt_state),
                      note=f"{config.rm.eval_batch_size * hosts} pairs × {width}"),
    ]


def fit_sft(config, devices, chip: Chip) -> list:
    """The SFT stage: the next-token step and the eval."""
    from rlhf_jax.data import pipeline
    from rlhf_jax.models import CausalLM
    from rlhf_jax.models.build import abstract_params, model_config
    from rlhf_jax.sft import eval_step_for, response_nll
    from rlhf_jax.stage import stage_mesh, supervised_steps

    mesh = stage_mesh(config, devices)
    cfg = model_config(config.model)
    model = CausalLM(cfg)
    params = abstract_params(model)
    steps = supervised_steps(model, params, config.sft, loss_fn=response_nll, total_steps=1000,
                             mesh=mesh)
    state = abstract(jax.eval_shape(lambda p: _init_state(p, steps.tx), params), steps.shardings)
    width, hosts = _width(config.data), _hosts(devices)

    def sft_batch(rows):
        example = {"ids": np.zeros(width, np.int32), "loss_mask": np.ones(width, np.int32)}
        return _batch_struct(pipeline.collate_sft([example], batch_size=rows * hosts, width=width,
                                                  pad_id=0), mesh)

    n = len(devices)
    return [
        compile_phase("sft step", steps.train_step, (state, sft_batch(config.sft.batch_size)),
                      mesh=mesh, chip=chip, num_chips=n,
                      flops=train_flops(cfg, config.sft.batch_size * hosts * width, width),
                      note=f"{config.sft.batch_size * hosts} × {width}, accum {config.sft.accum_steps}"),
        compile_phase("sft eval", eval_step_for(model, steps),
                      (state.params, sft_batch(config.sft.eval_batch_size)), mesh=mesh, chip=chip,
                      num_chips=n, resident_bytes=shard_bytes(state.opt_state),
                      flops=decoder_forward_flops(cfg, config.sft.eval_batch_size * hosts * width, width),
                      note=f"{config.sft.eval_batch_size * hosts} × {width}"),
    ]


def _forward_flops(cfg, rows: int, prompt: int, response: int) -> float:
    """A forward over ``rows × (prompt + response)`` tokens with the LM head on the response."""
    trunk = decoder_forward_flops(cfg, rows * (prompt + response), prompt + response, lm_head=False)
    return trunk + 2.0 * cfg.hidden_size * cfg.vocab_size * rows * response


def fit_ppo(config, devices, chip: Chip) -> list:
    """The PPO stage: sampler, reference forward, policy/value forward, reward scoring, update.

    Shapes are the worst case a step can take: every prompt ``data.max_prompt_length − 1``
    tokens (rounded up to ``generation.prompt_bucket``), ``generation.max_new_tokens − 1``
    sampled, reward-model inputs of ``max(reward.buckets)`` tokens. While one phase runs, the
    others' state stays in HBM: its "resident" column.
    """
    from rlhf_jax.generate import _sample_jitted
    from rlhf_jax.models import ScalarModel
    from rlhf_jax.models.build import abstract_params, model_config
    from rlhf_jax.models.heads import lm_params
    from rlhf_jax.ppo import roles
    from rlhf_jax.ppo.rewards import reward_model_spec
    from rlhf_jax.reward.scoring import sharded_forward
    from rlhf_jax.stage import stage_mesh

    mesh = stage_mesh(config, devices)
    lm, policy_model, value_model = roles.role_models(config)
    tx = roles.ppo_optimizer(config)
    params = {"policy": abstract_params(policy_model)}
    if value_model is not None:
        params["value"] = abstract_params(value_model)
    state_shape = jax.eval_shape(lambda p: roles.initial_state(config, p, tx, jax.random.key(0)),
                                 params)
    fns = roles.role_functions(config, lm, policy_model, value_model, tx, state_shape, mesh,
                               eos_id=2, pad_id=0)
    state = abstract(state_shape, fns.shardings)
    reference = roles.as_dtype(abstract(lm_params(state_shape.params["policy"]) if value_model is None
                                        else state_shape.params["policy"], fns.reference_shardings),
                               roles.reference_dtype(config))
    cfg, n = lm.config, len(devices)
    g, rows = config.generation, config.ppo.batch_size * _hosts(devices)
    prompt = -(-(config.data.max_prompt_length - 1) // g.prompt_bucket) * g.prompt_bucket
    response = g.max_new_tokens - 1
    batch_sh = sharding.batch_sharding(mesh)
    ints = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=batch_sh)  # noqa: E731
    floats = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=batch_sh)  # noqa: E731
    replicated = sharding.replicated(mesh)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)

    phases_rm = []
    rm_bytes = 0
    if config.reward.kind == "model":
        rm_model = ScalarModel(model_config(reward_model_spec(config.reward)), readout="last")
        rm_params_shape = abstract_params(rm_model)
        rm_sh = sharding.param_shardings(rm_model, mesh)
        rm_params = abstract(rm_params_shape, rm_sh)
        rm_bytes = shard_bytes(rm_params)
        width = int(max(config.reward.buckets))
        phases_rm = [("reward scoring", sharded_forward(rm_model, mesh), (rm_params, ints(rows, width),
                      ints(rows, width)), decoder_forward_flops(rm_model.config, rows * width, width,
                                                                 lm_head=False),
                      f"{rows} × {width}, reward model {config.reward.model}", rm_bytes)]
    state_bytes, ref_bytes = shard_bytes(state), shard_bytes(reference)
    rollout = fns.rollout
    rollout_params = roles.as_dtype(abstract(lm_params(state_shape.params["policy"]),
                                             rollout.param_shardings), rollout.dtype)
    rollout_bytes = shard_bytes(rollout_params)
    r_batch = sharding.batch_sharding(rollout.mesh)
    r_ints = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=r_batch)  # noqa: E731
    r_replicated = sharding.replicated(rollout.mesh)
    kv = 2 * cfg.num_layers * rows * (prompt + response) * cfg.num_kv_heads * cfg.head_dim
    kv_bytes = kv * jnp.dtype(cfg.compute_dtype).itemsize / n
    sampler = functools.partial(
        _sample_jitted, lm, max_new_tokens=response, top_k=min(g.top_k, cfg.vocab_size),
        greedy=g.temperature == 0, use_top_p=g.top_p < 1.0, eos_ids=(2,), pad_id=0,
        unroll_layers=True, kernels="xla", use_penalty=False)
    sampler = jax.jit(sampler)
    r_key = jax.ShapeDtypeStruct((), key.dtype, sharding=r_replicated)
    r_scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=r_replicated)
    sample_args = (rollout_params, r_ints(rows, prompt), r_ints(rows, prompt), r_key, r_scalar,
                   r_scalar)
    sample_flops = (_forward_flops(cfg, rows, prompt, 0)
                    + decoder_forward_flops(cfg, rows * response, prompt + response))
    rollout_rows = (ints(rows, prompt), ints(rows, prompt), ints(rows, response), ints(rows, response))
    forward_flops = _forward_flops(cfg, rows, prompt, response)
    update_batch = {"prompt_ids": ints(rows, prompt), "prompt_mask": ints(rows, prompt),
                    "response_ids": ints(rows, response), "mask": ints(rows, response),
                    "logprobs": floats(rows, response), "ref_logprobs": floats(rows, response),
                    "values": floats(rows, response), "raw_scores": floats(rows),
                    "lengths": ints(rows), "ended": jax.ShapeDtypeStruct((rows,), jnp.bool_,
                                                                        sharding=batch_sh)}
    passes = 4 if cfg.remat != "none" else 3
    shapes = f"{rows} prompts × {prompt} + {response} new"
    plan = [
        ("sampler", lambda *a: sampler(*a[:3], a[3], a[4], a[5], penalty=jnp.float32(1.0)),
         sample_args, sample_flops,
         f"{shapes}; rollout mesh data={rollout.mesh.shape['data']} tensor="
         f"{rollout.mesh.shape['tensor']}; KV cache {kv_bytes * n / GIB:.2f} GiB in all",
         state_bytes + ref_bytes + rm_bytes),
        ("reference forward", fns.ref_forward, (reference, *rollout_rows), forward_flops, shapes,
         state_bytes + rm_bytes),
        ("policy + values forward", fns.policy_forward, (state.params, *rollout_rows), forward_flops,
         shapes, state_bytes - shard_bytes(state.params) + ref_bytes + rm_bytes),
        *[(*phase[:5], state_bytes + ref_bytes) for phase in phases_rm],
        ("update", fns.update, (state, update_batch),
         passes * forward_flops * config.ppo.ppo_epochs,
         f"{shapes}, {config.ppo.ppo_epochs} epoch(s) of minibatches of {config.ppo.mini_batch_size}",
         ref_bytes + rm_bytes),
    ]
    out = []
    for name, fn, args, flops, note, resident in plan:
        jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
        on_rollout = name == "sampler"
        read = response * (rollout_bytes + kv_bytes) if on_rollout else 0.0
        out.append(compile_phase(name, jitted, args, mesh=rollout.mesh if on_rollout else mesh,
                                 rules=rollout.rules if on_rollout else sharding.DEFAULT_RULES,
                                 chip=chip, num_chips=n, flops=flops, read_bytes=read,
                                 resident_bytes=resident, note=note))
    return out


def _init_state(params, tx):
    from rlhf_jax.training import init_state
    return init_state(params, tx)


STAGES = {"sft": fit_sft, "rm": fit_reward_model, "ppo": fit_ppo}
"""The stage fitters by config section; a study config (several sections) fits each."""


def stages_of(config) -> list:
    """``[(section name, stage config)]``: the stage of a stage config (``model`` beside one of
    :data:`STAGES`' sections), or each stage of a study config (``sft``, ``rm``, ``ppo``)."""
    if "model" in config:
        names = [key for key in STAGES if key in config]
        if len(names) != 1:
            raise ConfigError(f"a stage config needs exactly one of the sections {sorted(STAGES)} "
                              f"beside 'model'; this one has {names}")
        return [(names[0], config)]
    found = [(key, config[key]) for key in STAGES if key in config and "model" in config[key]]
    if not found:
        raise ConfigError(f"the config has no stage to fit: expected a stage config ('model' and "
                          f"one of {sorted(STAGES)}) or a study config holding such stages")
    return found


# ----------------------------------------------------------------------------- report

@dataclasses.dataclass
class Report:
    slice_name: str
    topology: str
    chip: Chip
    num_chips: int
    hosts: int
    stage: str
    mesh: dict
    phases: list

    @property
    def fits(self) -> bool:
        return all(p.total_bytes <= self.chip.usable_gib * GIB for p in self.phases)

    @property
    def peak_gib(self) -> float:
        return max(p.total_bytes for p in self.phases) / GIB

    def table(self) -> str:
        head = (f"{self.stage} on {self.slice_name} ({self.topology}: {self.num_chips} × TPU "
                f"{self.chip.name}, {self.hosts} host(s), usable HBM {self.chip.usable_gib:.2f} "
                f"GiB/chip), mesh data={self.mesh['data']} fsdp={self.mesh['fsdp']} "
                f"tensor={self.mesh['tensor']}")
        rows = ["| phase | peak GiB/chip | of which resident | donated GiB/chip | FLOPs/step | "
                "roofline s/step | fits | shapes |", "|---|---|---|---|---|---|---|---|"]
        for p in self.phases:
            ok = p.total_bytes <= self.chip.usable_gib * GIB
            rows.append(f"| {p.name} | {_gib(p.total_bytes)} | {_gib(p.resident_bytes)} | "
                        f"{_gib(p.alias_bytes)} | {p.flops:.3g} | {p.roofline_s:.3g} | "
                        f"{'yes' if ok else 'NO'} | {p.note} |")
        headroom = self.chip.usable_gib - self.peak_gib
        verdict = (f"verdict: fits, {headroom:.2f} GiB/chip headroom" if self.fits else
                   f"verdict: does NOT fit, {-headroom:.2f} GiB/chip over")
        return "\n".join([head, *rows, verdict])


def _gib(n: int) -> str:
    """GiB with 2 decimals, or 3 significant digits below 0.1 GiB (tiny models stay legible)."""
    x = n / GIB
    return f"{x:.2f}" if x >= 0.1 or x == 0 else f"{x:.3g}"


def fit(config, slice_name: str, *, mesh: Optional[Sequence[int]] = None) -> list:
    """One :class:`Report` per stage of ``config`` on the slice (``mesh``: data, fsdp, tensor
    sizes replacing each stage's ``mesh`` section)."""
    devices, chip, topology = topology_devices(slice_name)
    reports = []
    for name, stage in stages_of(config):
        stage = stage.copy_and_resolve_references()
        if mesh is not None:
            with stage.unlocked():
                stage.mesh.data, stage.mesh.fsdp, stage.mesh.tensor = (int(m) for m in mesh)
        shape = sharding.resolve_mesh_shape(**dict(stage.mesh), num_devices=len(devices))
        phases = STAGES[name](stage, devices, chip)
        reports.append(Report(slice_name=slice_name, topology=topology, chip=chip,
                              num_chips=len(devices), hosts=_hosts(devices), stage=name,
                              mesh=dict(zip(sharding.MESH_AXES, shape)), phases=phases))
    return reports
