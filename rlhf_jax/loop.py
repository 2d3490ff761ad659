"""The training loop every supervised stage shares: resume, steps, logging, eval, checkpoints.

Host orchestration only. Given a compiled ``step_fn(state, batch) -> (state,
metrics)`` and a function giving each epoch's batches, :func:`run_training`

- resumes from the newest readable checkpoint in the workdir (unreadable ones are set aside:
  :meth:`rlhf_jax.checkpoint.Checkpoints.restore_latest`), with ``metrics.jsonl`` cut back to
  that step (:meth:`rlhf_jax.workdir.Workdir.resume_metrics`); the data position follows
  from the step: epoch = step // steps_per_epoch, and each epoch's order depends
  only on the seed and the epoch;
- on SIGTERM / SIGINT (:mod:`rlhf_jax.preemption`) finishes the step, saves it and raises
  :class:`~rlhf_jax.preemption.Preempted`;
- logs scalars every ``log_every`` steps (the only host syncs besides eval);
- evaluates and checkpoints every ``eval_every`` steps and at the end, ranking
  checkpoints by ``best_metric``;
- hands each *complete* epoch's per-example outputs to ``on_epoch_end`` (an epoch
  resumed part-way is not reported);
- restores the best checkpoint at the end and evaluates it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Optional

import jax
from tqdm.auto import tqdm

from rlhf_jax import sharding
from rlhf_jax.checkpoint import DEFAULT_KEEP_LATEST, Checkpoints
from rlhf_jax.preemption import Preempted, PreemptionGuard
from rlhf_jax.workdir import Workdir

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoopSpec:
    steps_per_epoch: int
    epochs: int
    log_every: int
    eval_every: int
    best_metric: str
    best_mode: str = "max"
    desc: str = "train"
    keep_latest: int = DEFAULT_KEEP_LATEST

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def run_training(state, *, step_fn: Callable, epoch_batches: Callable[[int], object],
                 evaluate: Callable[[dict], dict], spec: LoopSpec, mesh, workdir: Workdir,
                 on_epoch_end: Optional[Callable[[int, list], None]] = None) -> tuple:
    """Train to ``spec.total_steps``; return ``(state at the best checkpoint, summary)``."""
    if spec.steps_per_epoch < 1:
        raise ValueError(f"{spec.desc}: fewer training examples than one batch (0 steps per epoch)")
    ckpt = Checkpoints(workdir.checkpoints, keep_latest=spec.keep_latest,
                       best_metric=spec.best_metric, best_mode=spec.best_mode)
    start, state = ckpt.restore_latest(state)
    workdir.resume_metrics(start)
    if start:
        log.info("%s: resumed from step %d of %d", spec.desc, start, spec.total_steps)
    progress = tqdm(total=spec.total_steps, initial=start, desc=spec.desc,
                    disable=jax.process_index() != 0)
    per_example, batches = [], None
    with sharding.use_mesh(mesh), PreemptionGuard() as guard:
        for step in range(start, spec.total_steps):
            epoch, i = divmod(step, spec.steps_per_epoch)
            if batches is None or i == 0:
                batches, per_example = epoch_batches(epoch), []
                complete_epoch = i == 0
            state, metrics = step_fn(state, sharding.shard_batch(batches[i], mesh))
            rows = metrics.pop("per_example", None)
            if on_epoch_end is not None and complete_epoch:
                per_example.append(rows)
            progress.update(1)
            if (step + 1) % spec.log_every == 0:
                scalars = sharding.to_host(metrics)
                workdir.log_metrics(step + 1, scalars)
                progress.set_postfix({k: f"{float(v):.3f}" for k, v in scalars.items()
                                      if k in ("loss", "accuracy")})
            if (step + 1) % spec.eval_every == 0 or step + 1 == spec.total_steps:
                result = evaluate(state.params)
                workdir.log_metrics(step + 1, result, split="eval")
                ckpt.save(step + 1, state, {spec.best_metric: result[spec.best_metric]})
            if i == spec.steps_per_epoch - 1 and on_epoch_end is not None and complete_epoch:
                on_epoch_end(epoch, sharding.to_host(per_example))
            if step + 1 < spec.total_steps and guard.should_stop():
                stop_on_signal(ckpt, step + 1, state, spec.desc, guard, progress)
        progress.close()
        latest = ckpt.latest_step()
        best = ckpt.best_step()
        if best is not None and best != latest:
            best, state = ckpt.restore_best(state)
        final = evaluate(state.params)
    ckpt.close()
    summary = {"best_step": best, "last_step": latest, "eval": final}
    if ckpt.set_aside:
        summary["checkpoints_set_aside"] = [{"step": s, "why": w} for s, w in ckpt.set_aside]
    return state, summary


def stop_on_signal(ckpt: Checkpoints, step: int, state, desc: str, guard: PreemptionGuard,
                   progress=None):
    """Save ``state`` as the checkpoint of ``step`` (committed before returning) and raise
    :class:`~rlhf_jax.preemption.Preempted`: the stop of every stage on SIGTERM / SIGINT."""
    if progress is not None:
        progress.close()
    ckpt.save(step, state)
    ckpt.close()
    log.warning("%s: preempted at step %d; rerun the same command to resume", desc, step)
    raise Preempted(desc, step, guard.received)
