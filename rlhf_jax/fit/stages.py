"""Each stage's compiled functions, built from shapes and compiled for a slice's devices."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import sharding
from rlhf_jax.training import init_state
from rlhf_jax.fit.chips import GIB, Chip
from rlhf_jax.fit.counting import (_forward_flops, decoder_forward_flops, shard_bytes,
                                   train_flops, training_passes)
from rlhf_jax.models.lora import without_adapters
from rlhf_jax.fit.phases import _batch_struct, _hosts, abstract, compile_phases

def _width(data) -> int:
    return int(max(data.buckets))


def fit_reward_model(config, devices, chip: Chip, stop_at_first_miss: bool = False) -> list:
    """The reward-model stage: the Bradley–Terry step and the eval scoring."""
    from rlhf_jax.data import pipeline
    from rlhf_jax.models import ScalarModel
    from rlhf_jax.models.build import abstract_params, model_config
    from rlhf_jax.reward.losses import reward_objective
    from rlhf_jax.reward.train import reward_loss_for, score_step_for
    from rlhf_jax.stage import stage_mesh, supervised_steps

    mesh = stage_mesh(config, devices)
    cfg = model_config(config.model)
    two_heads = reward_objective(config.rm).length_head  # ODIN: both heads, read together
    model = ScalarModel(cfg, readout="last", length_head=two_heads,
                        heads="both" if two_heads else "sum")
    params = abstract_params(model)
    steps = supervised_steps(model, params, config.rm, loss_fn=reward_loss_for(config.rm),
                             total_steps=1000, mesh=mesh)
    state = abstract(jax.eval_shape(lambda p: init_state(p, steps.tx), params), steps.shardings)
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
    return compile_phases([
        dict(name="rm step", fn=steps.train_step, args=(state, pair_batch(config.rm.batch_size)),
             mesh=mesh, num_chips=n, flops=train_flops(cfg, step_tokens, width, lm_head=False),
             note=f"{config.rm.batch_size * hosts} pairs × {width}, accum {config.rm.accum_steps}"),
        dict(name="rm eval", fn=score_step_for(model, steps),
             args=(state.params, pair_batch(config.rm.eval_batch_size)), mesh=mesh, num_chips=n,
             flops=decoder_forward_flops(cfg, eval_tokens, width, lm_head=False),
             resident_bytes=shard_bytes(state.opt_state),
             note=f"{config.rm.eval_batch_size * hosts} pairs × {width}"),
    ], chip=chip, stop_at_first_miss=stop_at_first_miss)


def fit_sft(config, devices, chip: Chip, stop_at_first_miss: bool = False) -> list:
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
    state = abstract(jax.eval_shape(lambda p: init_state(p, steps.tx), params), steps.shardings)
    width, hosts = _width(config.data), _hosts(devices)

    def sft_batch(rows):
        example = {"ids": np.zeros(width, np.int32), "loss_mask": np.ones(width, np.int32)}
        return _batch_struct(pipeline.collate_sft([example], batch_size=rows * hosts, width=width,
                                                  pad_id=0), mesh)

    n = len(devices)
    return compile_phases([
        dict(name="sft step", fn=steps.train_step, args=(state, sft_batch(config.sft.batch_size)),
             mesh=mesh, num_chips=n,
             flops=train_flops(cfg, config.sft.batch_size * hosts * width, width),
             note=f"{config.sft.batch_size * hosts} × {width}, accum {config.sft.accum_steps}"),
        dict(name="sft eval", fn=eval_step_for(model, steps),
             args=(state.params, sft_batch(config.sft.eval_batch_size)), mesh=mesh, num_chips=n,
             resident_bytes=shard_bytes(state.opt_state),
             flops=decoder_forward_flops(cfg, config.sft.eval_batch_size * hosts * width, width),
             note=f"{config.sft.eval_batch_size * hosts} × {width}"),
    ], chip=chip, stop_at_first_miss=stop_at_first_miss)


def fit_dpo(config, devices, chip: Chip, stop_at_first_miss: bool = False) -> list:
    """The DPO stage: the step (both responses of each pair in one forward, plus the reference
    forward inside it with LoRA), the reference forward of a frozen copy (without LoRA), and
    the eval."""
    from rlhf_jax.data import pipeline
    from rlhf_jax.dpo.losses import preference_loss
    from rlhf_jax.dpo.train import pair_logprobs, pair_sums, preference_objective, reference_mode
    from rlhf_jax.models import CausalLM
    from rlhf_jax.models.build import abstract_params, model_config
    from rlhf_jax.stage import stage_mesh, supervised_steps

    mesh = stage_mesh(config, devices)
    cfg = model_config(config.model)
    model = CausalLM(cfg)
    params = abstract_params(model)
    loss, reference = preference_loss(config.dpo.loss, config.dpo), reference_mode(config)
    objective = functools.partial(preference_objective, loss=loss, reference=reference)
    steps = supervised_steps(model, params, config.dpo, loss_fn=objective, total_steps=1000,
                             mesh=mesh)
    state = abstract(jax.eval_shape(lambda p: init_state(p, steps.tx), params), steps.shardings)
    width, hosts = _width(config.data), _hosts(devices)

    def pair_batch(rows):
        ids, mask = np.zeros(width, np.int32), np.ones(width, np.int32)
        example = {"index": 0, "chosen_ids": ids, "rejected_ids": ids, "chosen_loss_mask": mask,
                   "rejected_loss_mask": mask}
        batch = pipeline.collate_preference_responses([example], batch_size=rows * hosts,
                                                      width=width, pad_id=0)
        if reference == "batch":
            batch["ref_chosen"] = batch["ref_rejected"] = np.zeros(rows * hosts, np.float32)
        return _batch_struct(batch, mesh)

    n, rows = len(devices), config.dpo.batch_size * hosts
    step_tokens = 2 * rows * width
    step_flops = train_flops(cfg, step_tokens, width)
    if reference == "base":  # the frozen base's forward runs inside the step
        step_flops += decoder_forward_flops(cfg, step_tokens, width)
    frozen_copy = shard_bytes(state.params) if reference == "batch" else 0
    phases = [dict(name="dpo step", fn=steps.train_step,
                   args=(state, pair_batch(config.dpo.batch_size)), mesh=mesh, num_chips=n,
                   flops=step_flops, resident_bytes=frozen_copy,
                   note=f"{rows} pairs × {width} ({config.dpo.loss}, reference: {reference}), "
                        f"accum {config.dpo.accum_steps}")]
    if reference == "batch":  # a frozen copy of the initial weights, beside the train state
        phases.append(dict(
            name="dpo reference", fn=jax.jit(lambda p, b: pair_logprobs(p, b, model=model)[:2]),
            args=(state.params, pair_batch(config.dpo.batch_size)), mesh=mesh, num_chips=n,
            resident_bytes=shard_bytes(state), flops=decoder_forward_flops(cfg, step_tokens, width),
            note=f"{rows} pairs × {width}, the frozen copy beside the train state"))
    eval_rows = config.dpo.eval_batch_size * hosts
    phases.append(dict(
        name="dpo eval", fn=jax.jit(functools.partial(pair_sums, model=model, loss=loss,
                                                      reference=reference)),
        args=(state.params, pair_batch(config.dpo.eval_batch_size)), mesh=mesh, num_chips=n,
        resident_bytes=shard_bytes(state.opt_state) + frozen_copy,
        flops=decoder_forward_flops(cfg, 2 * eval_rows * width, width)
        * (2 if reference == "base" else 1),
        note=f"{eval_rows} pairs × {width}"))
    return compile_phases(phases, chip=chip, stop_at_first_miss=stop_at_first_miss)


def fit_ppo(config, devices, chip: Chip, stop_at_first_miss: bool = False) -> list:
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
    if fns.reference_shardings is None:  # LoRA: the reference is the state's base, adapters off
        reference = without_adapters(lm_params(state.params["policy"]))
    else:
        reference = roles.as_dtype(abstract(lm_params(state_shape.params["policy"]) if value_model is None
                                            else state_shape.params["policy"], fns.reference_shardings),
                                   roles.reference_dtype(config))
    cfg, n = lm.config, len(devices)
    g, rows = config.generation, config.ppo.batch_size  # the global batch, whatever the hosts
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
    state_bytes = shard_bytes(state)
    reference_in_state = fns.reference_shardings is None
    ref_bytes = 0 if reference_in_state else shard_bytes(reference)  # resident beside the state
    rollout = fns.rollout  # adapters merged: the base's shapes
    rollout_params = roles.as_dtype(abstract(without_adapters(lm_params(state_shape.params["policy"])),
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
    passes = training_passes(policy_model.config)
    shapes = f"{rows} prompts × {prompt} + {response} new"
    plan = [
        ("sampler", lambda *a: sampler(*a, penalty=jnp.float32(1.0)),
         sample_args, sample_flops,
         f"{shapes}; rollout mesh data={rollout.mesh.shape['data']} tensor="
         f"{rollout.mesh.shape['tensor']}; KV cache {kv_bytes * n / GIB:.2f} GiB in all",
         state_bytes + ref_bytes + rm_bytes),
        ("reference forward", fns.ref_forward, (reference, *rollout_rows), forward_flops, shapes,
         # its argument is part of the state under LoRA: the rest of the state is what stays
         state_bytes + rm_bytes - (shard_bytes(reference) if reference_in_state else 0)),
        ("policy + values forward", fns.policy_forward, (state.params, *rollout_rows), forward_flops,
         shapes, state_bytes - shard_bytes(state.params) + ref_bytes + rm_bytes),
        *[(*phase[:5], state_bytes + ref_bytes) for phase in phases_rm],
        ("update", fns.update, (state, update_batch),
         passes * forward_flops * config.ppo.ppo_epochs,
         f"{shapes}, {config.ppo.ppo_epochs} epoch(s) of minibatches of {config.ppo.mini_batch_size}",
         ref_bytes + rm_bytes),
    ]
    compiled_plan = []
    for name, fn, args, flops, note, resident in plan:
        on_rollout = name == "sampler"
        compiled_plan.append(dict(
            name=name, fn=fn if hasattr(fn, "lower") else jax.jit(fn), args=args,
            mesh=rollout.mesh if on_rollout else mesh,
            rules=rollout.rules if on_rollout else sharding.DEFAULT_RULES, num_chips=n, flops=flops,
            read_bytes=response * (rollout_bytes + kv_bytes) if on_rollout else 0.0,
            resident_bytes=resident, note=note))
    return compile_phases(compiled_plan, chip=chip, stop_at_first_miss=stop_at_first_miss)
