"""Orbax checkpoints of a training state: every N steps, the latest and the best kept, resumable.

Thin layer over ``orbax.checkpoint.CheckpointManager``: saves are atomic (orbax
writes to a temporary directory and renames), the preservation policy keeps the
``keep_latest`` most recent steps plus the ``keep_best`` steps with the highest
``best_metric`` (e.g. reward-model eval accuracy), and :meth:`Checkpoints.restore`
puts each leaf back onto the shardings of an abstract target state.
"""

from __future__ import annotations

import os
from typing import Optional

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as preservation


class Checkpoints:
    """Checkpoints of one stage under ``directory``."""

    def __init__(self, directory: str, *, keep_latest: int = 1, keep_best: int = 1,
                 best_metric: Optional[str] = None, best_mode: str = "max"):
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        sign = 1.0 if best_mode == "max" else -1.0
        score = lambda metrics: sign * metrics[best_metric]  # noqa: E731  higher = better
        policies = [preservation.LatestN(keep_latest)]
        if best_metric is not None:
            policies.append(preservation.BestN(get_metric_fn=score, n=keep_best,
                                               keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=preservation.AnyPreservationPolicy(policies),
            best_fn=score if best_metric is not None else None, best_mode="max",
            enable_async_checkpointing=False, create=True)
        self.best_metric = best_metric
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def save(self, step: int, state, metrics: Optional[dict] = None) -> None:
        """Save ``state`` at ``step`` (``metrics`` rank it for the best-kept policy)."""
        metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
        self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
        self.manager.wait_until_finished()

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def best_step(self) -> Optional[int]:
        return self.manager.best_step() if self.best_metric else self.latest_step()

    def restore(self, step: int, target):
        """Restore ``step`` into the structure, dtypes and shardings of ``target``."""
        abstract = jax.tree.map(_abstract, target)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self.manager.close()


def _abstract(x):
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x
