"""What every training stage (SFT, reward model, PPO) shares, so each stage reads as data + loss + loop.

- :func:`open_stage` / :func:`finish_stage`: the workdir contract (``config.json``
  written once and checked on rerun, ``result.json`` marks done and is returned on rerun);
  :func:`keep_latest`: how many checkpoints it keeps;
- :func:`stage_mesh`, :func:`experiment_tokenizer` (the synthetic task's own, else
  ``data.tokenizer``, else the checkpoint's: an experiment-level choice that lives
  here because models never import data), :func:`check_vocab`;
- :func:`supervised_setup`: optimizer, train state placed by logical axes, and the
  compiled step of SFT and reward-model training.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Callable

import jax

from rlhf_jax import sharding, training
from rlhf_jax.config import ConfigError
from rlhf_jax.models import lora
from rlhf_jax.models.build import tokenizer_for
from rlhf_jax.workdir import start_stage

log = logging.getLogger(__name__)


def check_data_source(config) -> None:
    """``data.source`` names the synthetic task or a source of the registry: checked before
    anything that depends on it (the tokenizer, the data)."""
    from rlhf_jax.data.sources import SOURCES
    if config.data.source != "synthetic" and config.data.source not in SOURCES:
        raise ConfigError(f"data.source = {config.data.source!r}: no such source (expected "
                          f"'synthetic' or one of {sorted(SOURCES)})")


def experiment_tokenizer(config):
    """The experiment's tokenizer: the synthetic task's own, or ``data.tokenizer`` / the model's."""
    check_data_source(config)
    if config.data.source == "synthetic" and not config.data.tokenizer:
        from rlhf_jax.data.preferences import synthetic_task
        return synthetic_task(config.data).tokenizer()
    return tokenizer_for(config.data.tokenizer, config.model.init)


def check_vocab(tokenizer, model_config, role: str = "model") -> None:
    """The tokenizer's ids must fit the model's embedding (``role`` names the model in the error)."""
    if len(tokenizer) > model_config.vocab_size:
        raise ConfigError(f"tokenizer has {len(tokenizer)} tokens but the {role}'s vocab_size is "
                          f"{model_config.vocab_size}: set model.overrides.vocab_size (presets) "
                          "or use the checkpoint's own tokenizer")


def open_stage(config, workdir: str, *, resume_with_changes: bool = False) -> tuple:
    """``(workdir, finished result or None)`` under the workdir contract
    (:func:`rlhf_jax.workdir.start_stage`): a new stage records its resolved config, a rerun
    with a result-changing difference is refused unless ``resume_with_changes``, and a
    finished one (``result.json``) is returned as it is."""
    return start_stage(config, workdir, resume_with_changes=resume_with_changes)


def stage_label(stage: str, workdir: str) -> str:
    """The stage and its workdir's name (``"ppo (ppo_lppo)"``): progress bars and messages of a
    study's many runs say which one they belong to."""
    return f"{stage} ({os.path.basename(os.path.abspath(workdir))})"


def keep_latest(config) -> int:
    """How many of the latest checkpoints the stage keeps (``checkpoint.keep_latest``)."""
    from rlhf_jax.checkpoint import DEFAULT_KEEP_LATEST
    section = config.get("checkpoint") or {}
    return int(section.get("keep_latest", DEFAULT_KEEP_LATEST))


def stage_mesh(config, devices=None):
    """The stage's device mesh from its ``mesh`` section (``data``, ``fsdp``, ``tensor``), over
    ``devices`` (default ``jax.devices()``; :mod:`rlhf_jax.fit` passes a TPU topology's)."""
    return sharding.make_mesh(**dict(config.mesh), devices=devices)


@dataclasses.dataclass
class SupervisedSteps:
    """What an SFT or reward-model stage compiles, before any weights exist: the optimizer,
    the train state's shardings, the jitted step and the batch sharding."""

    shardings: training.TrainState
    tx: object
    train_step: Callable
    batch_sharding: object


@dataclasses.dataclass
class SupervisedSetup(SupervisedSteps):
    """:class:`SupervisedSteps` plus the initial train state placed on the mesh."""

    state: training.TrainState = None


def supervised_steps(model, params_shape, section, *, loss_fn: Callable, total_steps: int,
                     mesh) -> SupervisedSteps:
    """The optimizer (``section``: ``lr``, ``lr_schedule``, …, ``accum_steps``), the train
    state's shardings by logical axes and the jitted step of ``loss_fn(params, batch,
    model=model)``. ``params_shape``: the params or their shapes (``jax.eval_shape``): this
    needs no weights, so :mod:`rlhf_jax.fit` compiles it for a TPU topology from a CPU."""
    tx = training.optimizer_for(section, total_steps)
    shardings = training.state_shardings(model, mesh, tx, params_shape)
    batch_sh = sharding.batch_sharding(mesh)
    step = training.make_train_step(functools.partial(loss_fn, model=model), tx,
                                    accum_steps=section.accum_steps, shardings=shardings,
                                    batch_sharding=batch_sh, dropout=lora.uses_dropout(model.config.lora))
    return SupervisedSteps(shardings=shardings, tx=tx, train_step=step, batch_sharding=batch_sh)


def supervised_setup(model, params, tokenizer, section, *, loss_fn: Callable, total_steps: int,
                     mesh) -> SupervisedSetup:
    """Check the vocabulary, build :func:`supervised_steps` and place the initial train state."""
    check_vocab(tokenizer, model.config)
    steps = supervised_steps(model, params, section, loss_fn=loss_fn, total_steps=total_steps,
                             mesh=mesh)
    with sharding.use_mesh(mesh):
        state = jax.jit(lambda p: training.init_state(p, steps.tx), out_shardings=steps.shardings)(
            sharding.shard_params(params, steps.shardings.params))
    return SupervisedSetup(**vars(steps), state=state)


def count_params(params) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))


def finish_stage(wd, result: dict) -> dict:
    """Write ``result.json`` (its presence marks the stage done) and close the workdir."""
    wd.write_json("result.json", result)
    wd.close()
    return result
