"""Shared pieces of every training stage: state, optimizer, gradient accumulation, sharded steps.

A stage supplies ``loss_fn(params, batch) -> (loss, metrics)``;
:func:`make_train_step` turns it into one jitted ``(state, batch) -> (state,
metrics)`` with explicit input/output shardings over the mesh. Gradient
accumulation is a ``lax.scan`` over ``accum_steps`` micro-batches inside that
step (the batch's leading axis is split), so one call = one optimizer update.

With LoRA adapters in the params (:mod:`rlhf_jax.models.lora`) the optimizer sees only the
trainable part (:func:`rlhf_jax.models.lora.split_trainable`: adapters and scalar heads): its
state covers those leaves alone, gradients are taken with respect to them alone, and the frozen
base passes through the step unchanged (donated, so aliased rather than copied).
"""

from __future__ import annotations

from typing import Callable

import flax
import jax
import jax.numpy as jnp
import optax

from rlhf_jax import sharding
from rlhf_jax.models import lora


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


def init_optimizer(tx: optax.GradientTransformation, params) -> optax.OptState:
    """``tx``'s state over the trainable part of ``params`` (all of it without adapters)."""
    return tx.init(lora.split_trainable(params)[0])


def optimizer_shardings(tx, params, param_shardings, mesh):
    """Shardings of :func:`init_optimizer`'s state: param-shaped leaves follow the params."""
    trainable_sh = lora.split_trainable(param_shardings)[0]  # same names as the params
    opt_shape = jax.eval_shape(lambda p: init_optimizer(tx, p), params)
    return sharding.optimizer_state_shardings(tx, opt_shape, trainable_sh, mesh)


def apply_optimizer(tx, grads, opt_state, params):
    """One optimizer update of the trainable ``params`` from their ``grads`` → ``(params,
    opt_state)``; frozen leaves come back as they were."""
    trainable, frozen = lora.split_trainable(params)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    return lora.join(optax.apply_updates(trainable, updates), frozen), opt_state


def init_state(params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=init_optimizer(tx, params))


def state_shardings(model, mesh, tx, params, rules=sharding.DEFAULT_RULES) -> TrainState:
    """``NamedSharding`` for every leaf of the :class:`TrainState` of ``params``."""
    param_sh = sharding.param_shardings(model, mesh, rules)
    return TrainState(step=sharding.replicated(mesh), params=param_sh,
                      opt_state=optimizer_shardings(tx, params, param_sh, mesh))


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


def trainable_loss(loss_fn: Callable, params) -> tuple:
    """``(loss of the trainable part, trainable params)``: ``loss_fn`` as a function of the
    leaves an optimizer updates, the frozen ones closed over (no gradients taken for them)."""
    trainable, frozen = lora.split_trainable(params)
    return (lambda tr, *args, **kw: loss_fn(lora.join(tr, frozen), *args, **kw)), trainable


def accumulated_gradients(loss_fn: Callable, params, batch, accum_steps: int, rng=None):
    """Loss, gradients and metrics over ``accum_steps`` micro-batches (a ``lax.scan``).

    ``loss_fn(params, batch) -> (loss, (scalars, per_example))`` where ``loss`` is
    a mean over the micro-batch's units (tokens, pairs) and ``scalars["weight"]``
    (optional, default 1) is their number. Loss, gradients and scalars are
    averaged over micro-batches weighted by it, so the result is the mean over
    the whole batch's units, whatever ``accum_steps`` is. The sums run in float32
    whatever the parameters' dtype (bfloat16 gradients are summed without bfloat16
    rounding), and the results come back in the dtypes one micro-batch gives.
    ``per_example`` arrays (leading axis = rows) come back for the whole batch, in order.
    Gradients are of the trainable params only (:func:`trainable_loss`). With ``rng`` (a key),
    ``loss_fn`` is called with ``rngs={"dropout": key}``, a fresh key per micro-batch.
    """
    loss_fn, params = trainable_loss(loss_fn, params)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    keys = None if rng is None else jax.random.split(rng, accum_steps)

    def grads_of(batch, key):
        return grad_fn(params, batch) if key is None else grad_fn(params, batch,
                                                                  rngs={"dropout": key})

    if accum_steps == 1:
        (loss, (scalars, per_example)), grads = grads_of(batch, None if keys is None else keys[0])
        return loss, grads, scalars, per_example

    def body(carry, xs):
        micro, key = xs
        (loss, (scalars, per_example)), grads = grads_of(micro, key)
        w = jnp.asarray(scalars.get("weight", 1.0), jnp.float32)
        weighted = jax.tree.map(lambda x: _accumulator(x) * w, (loss, grads, scalars))
        total, total_w = carry
        return (jax.tree.map(jnp.add, total, weighted), total_w + w), per_example

    micro = split_microbatches(batch, accum_steps)
    first = jax.tree.map(lambda x: x[0], micro)
    shapes = jax.eval_shape(lambda b: grads_of(b, None if keys is None else keys[0]), first)
    (loss_s, (scalars_s, _)), grads_s = shapes
    zeros = jax.tree.map(lambda s: _accumulator(jnp.zeros(s.shape, s.dtype)), (loss_s, grads_s, scalars_s))
    (total, total_w), per_example = jax.lax.scan(body, (zeros, jnp.float32(0.0)), (micro, keys))
    mean = jax.tree.map(lambda x: x / jnp.maximum(total_w, 1e-12), total)
    loss, grads, scalars = jax.tree.map(lambda x, s: x.astype(s.dtype), mean, (loss_s, grads_s, scalars_s))
    if "weight" in scalars:
        scalars = {**scalars, "weight": total_w}
    return loss, grads, scalars, merge_microbatches(per_example)


DROPOUT_SEED = 0
"""Dropout keys are ``fold_in(key(DROPOUT_SEED), step)``: a function of the step alone, so a
resumed run draws the masks an uninterrupted one would."""


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation, *, accum_steps: int = 1,
                    shardings: TrainState = None, batch_sharding=None, donate: bool = True,
                    dropout: bool = False):
    """``(state, batch) -> (state, metrics)``: one optimizer update, jitted with explicit shardings.

    ``loss_fn(params, batch[, rngs]) -> (loss, (scalars, per_example))`` (see
    :func:`accumulated_gradients`; ``dropout=True`` passes it dropout rngs, e.g. for LoRA's
    adapter dropout). ``metrics`` = the scalars (``loss``,
    ``grad_norm`` and the loss function's own) plus ``per_example`` rows (e.g.
    reward margins, for the cartography log).
    """
    def step(state: TrainState, batch):
        rng = (jax.random.fold_in(jax.random.key(DROPOUT_SEED), state.step) if dropout
               else None)
        loss, grads, scalars, per_example = accumulated_gradients(
            loss_fn, state.params, batch, accum_steps, rng=rng)
        params, opt_state = apply_optimizer(tx, grads, state.opt_state, state.params)
        metrics = {**scalars, "loss": loss, "grad_norm": optax.tree.norm(grads),
                   "per_example": per_example}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    if shardings is None:
        return jax.jit(step, donate_argnums=(0,) if donate else ())
    return jax.jit(step, in_shardings=(shardings, batch_sharding),
                   out_shardings=(shardings, None), donate_argnums=(0,) if donate else ())
