"""Shared pieces of every training stage: state, optimizer, gradient accumulation, sharded steps.

A stage supplies ``loss_fn(params, batch) -> (loss, metrics)``;
:func:`make_train_step` turns it into one jitted ``(state, batch) -> (state,
metrics)`` with explicit input/output shardings over the mesh. Gradient
accumulation is a ``lax.scan`` over ``accum_steps`` micro-batches inside that
step (the batch's leading axis is split), so one call = one optimizer update.
"""

from __future__ import annotations

from typing import Callable

import flax
import jax
import jax.numpy as jnp
import optax

from rlhf_jax import sharding


def masked_mean(x, mask, axis=None):
    """``Σ x·mask / max(Σ mask, 1)``: the mean over positions (or rows) with weight ``mask``
    (0 where none). The one masked mean of every stage's losses and metrics."""
    return jnp.sum(x * mask, axis=axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1.0)


@flax.struct.dataclass
class TrainState:
    """``step`` (optimizer updates done), ``params``, ``opt_state``."""

    step: jax.Array
    params: dict
    opt_state: optax.OptState


def learning_rate_schedule(lr: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to ``lr`` over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""
    warmup_steps = max(0, min(warmup_steps, total_steps))
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, max(warmup_steps, 1)),
         optax.linear_schedule(lr, 0.0, max(total_steps - warmup_steps, 1))],
        [warmup_steps])


LR_SCHEDULES = ("linear", "constant")
"""``linear``: warm-up then linear decay to 0 (HF Trainer's default, the paper's reward models);
``constant``: ``lr`` throughout (TRL 0.5's PPOTrainer without a scheduler, the paper's PPO)."""


def make_optimizer(*, lr: float, warmup_steps: int, total_steps: int, weight_decay: float = 0.0,
                   max_grad_norm: float = 0.0, schedule: str = "linear", b1: float = 0.9,
                   b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """AdamW (``lr_schedule``), after global-norm clipping when ``max_grad_norm > 0`` (else none).

    With ``weight_decay = 0`` this is Adam, as TRL 0.5 builds it
    (``torch.optim.Adam(lr)``: β 0.9/0.999, ε 1e-8, no clipping unless
    ``max_grad_norm`` is set).
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected one of "
                         f"{LR_SCHEDULES}")
    rate = (learning_rate_schedule(lr, warmup_steps, total_steps) if schedule == "linear"
            else optax.constant_schedule(lr))
    adamw = optax.adamw(rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    if max_grad_norm and max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(max_grad_norm), adamw)
    return adamw


def optimizer_for(section, total_steps: int) -> optax.GradientTransformation:
    """The optimizer a stage's config section asks for (``lr``, ``lr_schedule``, ``warmup_steps``,
    ``weight_decay``, ``max_grad_norm``): the one place every stage builds its optimizer."""
    return make_optimizer(lr=section.lr, schedule=section.lr_schedule,
                          warmup_steps=section.warmup_steps, total_steps=max(total_steps, 1),
                          weight_decay=section.weight_decay, max_grad_norm=section.max_grad_norm)


def init_state(params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def state_shardings(model, mesh, tx, params, rules=sharding.DEFAULT_RULES) -> TrainState:
    """``NamedSharding`` for every leaf of the :class:`TrainState` of ``params``."""
    param_sh = sharding.param_shardings(model, mesh, rules)
    opt_shape = jax.eval_shape(tx.init, params)
    return TrainState(step=sharding.replicated(mesh), params=param_sh,
                      opt_state=sharding.optimizer_state_shardings(tx, opt_shape, param_sh, mesh))


def split_microbatches(batch, accum_steps: int):
    """``[rows, ...]`` leaves → ``[accum, rows/accum, ...]``, micro-batch ``k`` = rows ``k, k+accum, …``.

    Strided, so that every micro-batch takes rows from every data shard: with
    the batch split over devices, each scan step keeps all devices busy without
    resharding. :func:`merge_microbatches` restores the original row order.
    """
    def split(x):
        if x.shape[0] % accum_steps:
            raise ValueError(f"batch of {x.shape[0]} rows is not divisible into {accum_steps} "
                             "gradient-accumulation micro-batches")
        return jnp.swapaxes(x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]), 0, 1)
    return jax.tree.map(split, batch)


def merge_microbatches(tree):
    """Inverse of :func:`split_microbatches` for per-row outputs ``[accum, micro, ...]``."""
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:]), tree)


def _accumulator(x):
    """``x`` as it is summed over micro-batches: floating values in float32 (bfloat16 params and
    their gradients included), integers as they are."""
    return x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x


def accumulated_gradients(loss_fn: Callable, params, batch, accum_steps: int):
    """Loss, gradients and metrics over ``accum_steps`` micro-batches (a ``lax.scan``).

    ``loss_fn(params, batch) -> (loss, (scalars, per_example))`` where ``loss`` is
    a mean over the micro-batch's units (tokens, pairs) and ``scalars["weight"]``
    (optional, default 1) is their number. Loss, gradients and scalars are
    averaged over micro-batches weighted by it, so the result is the mean over
    the whole batch's units, whatever ``accum_steps`` is. The sums run in float32
    whatever the parameters' dtype (bfloat16 gradients are summed without bfloat16
    rounding), and the results come back in the dtypes one micro-batch gives.
    ``per_example`` arrays (leading axis = rows) come back for the whole batch, in order.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if accum_steps == 1:
        (loss, (scalars, per_example)), grads = grad_fn(params, batch)
        return loss, grads, scalars, per_example

    def body(carry, micro):
        (loss, (scalars, per_example)), grads = grad_fn(params, micro)
        w = jnp.asarray(scalars.get("weight", 1.0), jnp.float32)
        weighted = jax.tree.map(lambda x: _accumulator(x) * w, (loss, grads, scalars))
        total, total_w = carry
        return (jax.tree.map(jnp.add, total, weighted), total_w + w), per_example

    micro = split_microbatches(batch, accum_steps)
    first = jax.tree.map(lambda x: x[0], micro)
    shapes = jax.eval_shape(grad_fn, params, first)
    (loss_s, (scalars_s, _)), grads_s = shapes
    zeros = jax.tree.map(lambda s: _accumulator(jnp.zeros(s.shape, s.dtype)), (loss_s, grads_s, scalars_s))
    (total, total_w), per_example = jax.lax.scan(body, (zeros, jnp.float32(0.0)), micro)
    mean = jax.tree.map(lambda x: x / jnp.maximum(total_w, 1e-12), total)
    loss, grads, scalars = jax.tree.map(lambda x, s: x.astype(s.dtype), mean, (loss_s, grads_s, scalars_s))
    if "weight" in scalars:
        scalars = {**scalars, "weight": total_w}
    return loss, grads, scalars, merge_microbatches(per_example)


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation, *, accum_steps: int = 1,
                    shardings: TrainState = None, batch_sharding=None, donate: bool = True):
    """``(state, batch) -> (state, metrics)``: one optimizer update, jitted with explicit shardings.

    ``loss_fn(params, batch) -> (loss, (scalars, per_example))`` (see
    :func:`accumulated_gradients`). ``metrics`` = the scalars (``loss``,
    ``grad_norm`` and the loss function's own) plus ``per_example`` rows (e.g.
    reward margins, for the cartography log).
    """
    def step(state: TrainState, batch):
        loss, grads, scalars, per_example = accumulated_gradients(
            loss_fn, state.params, batch, accum_steps)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**scalars, "loss": loss, "grad_norm": optax.tree.norm(grads),
                   "per_example": per_example}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    if shardings is None:
        return jax.jit(step, donate_argnums=(0,) if donate else ())
    return jax.jit(step, in_shardings=(shardings, batch_sharding),
                   out_shardings=(shardings, None), donate_argnums=(0,) if donate else ())
