"""Orbax checkpoints of a training state: the last K and the best kept, verified on restore.

Thin layer over ``orbax.checkpoint.CheckpointManager``:

- saves are atomic (orbax writes to a temporary directory and renames it when committed);
- the preservation policy keeps the ``keep_latest`` most recent steps (config key
  ``checkpoint.keep_latest``, default 2) plus the ``keep_best`` steps with the highest
  ``best_metric`` (e.g. reward-model eval accuracy);
- every save records a :func:`fingerprint` of the state in the step's metadata, and a restore
  recomputes it: a checkpoint whose files cannot be read (truncated, missing, bad JSON) or
  whose values do not match it (flipped bits) is *unreadable*;
- :meth:`Checkpoints.restore_latest` sets an unreadable checkpoint aside (renames
  ``checkpoints/N`` to ``checkpoints/N.unreadable``: never deleted), logs which one and why,
  and falls back to the newest readable one; when none is readable it raises
  :class:`~rlhf_jax.models.errors.CheckpointError` naming the directory.

Restores put each leaf back onto the shardings of an abstract target state.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as preservation

from rlhf_jax.models.errors import CheckpointError

log = logging.getLogger(__name__)

SET_ASIDE_SUFFIX = ".unreadable"
REASON_FILE = "SET_ASIDE_REASON.txt"
DEFAULT_KEEP_LATEST = 2


def fingerprint(state) -> int:
    """A 32-bit checksum of every leaf's bits: ``Σ_i (2i + 1) · Σ bits(leaf_i) mod 2³²``.

    Each leaf's raw bits are summed as unsigned 32-bit integers (sub-32-bit dtypes widened, a
    64-bit leaf as two words) and the sums are weighted by odd numbers, so any single flipped bit
    anywhere changes the result (``±2ᵏ · odd`` is never ``0 mod 2³²``). Computed on device,
    where the state lives; one pass over it.
    """
    leaves = [x for x in jax.tree.leaves(state) if isinstance(x, (jax.Array, np.ndarray))]
    return int(_fingerprint(leaves)) if leaves else 0


@jax.jit
def _fingerprint(leaves):
    total = jnp.uint32(0)
    for i, leaf in enumerate(leaves):
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        if leaf.dtype == jnp.bool_:
            leaf = leaf.astype(jnp.uint8)
        size = leaf.dtype.itemsize
        if size == 8:
            words = jax.lax.bitcast_convert_type(leaf, jnp.uint32)  # [..., 2]
        elif size == 4:
            words = jax.lax.bitcast_convert_type(leaf, jnp.uint32)
        else:
            words = jax.lax.bitcast_convert_type(leaf, jnp.dtype(f"uint{8 * size}")).astype(
                jnp.uint32)
        total = total + jnp.uint32(2 * i + 1) * jnp.sum(words, dtype=jnp.uint32)
    return total


class Checkpoints:
    """Checkpoints of one stage under ``directory``."""

    def __init__(self, directory: str, *, keep_latest: int = DEFAULT_KEEP_LATEST,
                 keep_best: int = 1, best_metric: Optional[str] = None, best_mode: str = "max"):
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        if keep_latest < 1:
            raise ValueError(f"checkpoint.keep_latest must be ≥ 1, got {keep_latest}")
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
        self.directory = os.path.abspath(directory)
        self.best_metric = best_metric
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state, metrics: Optional[dict] = None) -> None:
        """Save ``state`` at ``step`` and wait until it is committed (``metrics`` rank it for the
        best-kept policy; a step already saved is left as it is)."""
        if step in self.manager.all_steps():
            return
        metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
        self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True,
                          custom_metadata={"fingerprint": fingerprint(state)})
        self.manager.wait_until_finished()

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def best_step(self) -> Optional[int]:
        return self.manager.best_step() if self.best_metric else self.latest_step()

    def restore(self, step: int, target):
        """Restore ``step`` into the structure, dtypes and shardings of ``target``, verified
        against its fingerprint; an unreadable one raises :class:`CheckpointError`."""
        abstract = jax.tree.map(_abstract, target)
        where = os.path.join(self.directory, str(step))
        try:
            state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
            recorded = (self.manager.metadata(step).custom_metadata or {}).get("fingerprint")
        except Exception as err:  # orbax/tensorstore raise many kinds for bad files
            raise CheckpointError(f"{where}: unreadable ({type(err).__name__}: "
                                  f"{_first_line(err)})") from None
        if recorded is not None and fingerprint(state) != int(recorded):
            raise CheckpointError(f"{where}: its values do not match the fingerprint recorded "
                                  f"when it was saved ({fingerprint(state)} vs {recorded}): "
                                  "the files changed after the save")
        return state

    def restore_latest(self, target) -> tuple:
        """``(step, state)`` of the newest readable checkpoint, or ``(0, target)`` when there is
        none. Unreadable ones are set aside on the way (:meth:`set_aside_step`); if checkpoints
        exist but none is readable, :class:`CheckpointError` names the directory."""
        return self._restore_first(target, lambda: self.latest_step())

    def restore_best(self, target) -> tuple:
        """``(step, state)`` of the best readable checkpoint (by ``best_metric``; else the
        latest), setting unreadable ones aside as :meth:`restore_latest` does."""
        return self._restore_first(target, lambda: self.best_step())

    def _restore_first(self, target, pick) -> tuple:
        while True:
            step = pick()
            if step is None:
                if self.set_aside:
                    raise CheckpointError(
                        f"{self.directory}: no readable checkpoint left; set aside: "
                        + "; ".join(f"step {s} ({why})" for s, why in self.set_aside)
                        + ". Move one back (rename N.unreadable to N) or start in a new workdir")
                return 0, target
            try:
                return step, self._restore_agreed(step, target)
            except CheckpointError as err:
                self.set_aside_step(step, str(err))

    def _restore_agreed(self, step: int, target):
        """:meth:`restore` on every process; unreadable on any one = unreadable for all."""
        error, state = None, None
        try:
            state = self.restore(step, target)
        except CheckpointError as err:
            error = err
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            bad = multihost_utils.process_allgather(np.asarray([error is not None], np.int32))
            if bad.any() and error is None:
                error = CheckpointError(f"{os.path.join(self.directory, str(step))}: unreadable "
                                        "on another process")
        if error is not None:
            raise error
        return state

    def set_aside_step(self, step: int, reason: str) -> str:
        """Rename ``checkpoints/step`` to ``checkpoints/step.unreadable`` (``.unreadable-2``, …
        if taken), log it, and forget the step. Returns the new path."""
        source = os.path.join(self.directory, str(step))
        target, n = source + SET_ASIDE_SUFFIX, 1
        while os.path.exists(target):
            n += 1
            target = f"{source}{SET_ASIDE_SUFFIX}-{n}"
        if jax.process_index() == 0:
            os.rename(source, target)
            with open(os.path.join(target, REASON_FILE), "w") as f:
                f.write(reason + "\n")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        log.warning("checkpoint %s is unreadable, set aside as %s: %s", source, target, reason)
        self.manager.reload()
        return target

    @property
    def set_aside(self) -> list:
        """``[(step, reason)]`` of every checkpoint set aside in this directory, by any run."""
        found = []
        if not os.path.isdir(self.directory):
            return found
        for name in sorted(os.listdir(self.directory)):
            step, _, rest = name.partition(SET_ASIDE_SUFFIX)
            if rest.startswith(("", "-")) and name != step and step.isdigit():
                try:
                    with open(os.path.join(self.directory, name, REASON_FILE)) as f:
                        reason = f.read().strip()
                except OSError:
                    reason = "(no reason recorded)"
                found.append((int(step), reason))
        return sorted(found)

    def close(self) -> None:
        self.manager.close()


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else repr(err)


def _abstract(x):
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x
