"""The reward-model stage (``rlhf-jax train-rm``): Bradley–Terry training, eval, interventions, export.

Singhal et al. 2023 §2.1/§4.2: a decoder trunk with a scalar head read at the
last non-pad token, trained with ``−log σ(r⁺ − r⁻)`` on preference pairs (or, with
``rm.loss = "odin"``, ODIN's quality and length heads: :mod:`rlhf_jax.reward.losses`), and
three reward-model-side interventions selected by ``rm.intervention``:
``"bal"`` (:func:`~rlhf_jax.reward.interventions.balance_by_length`),
``"rda"`` (:func:`~rlhf_jax.reward.interventions.random_data_augmentation`),
``"ctr"`` (:func:`~rlhf_jax.reward.cartography.select_by_confidence`, on the
cartography of a first, standard run). Eval reports accuracy, reward mean/std
and the Pearson correlation of reward with response length (Table 4's columns).

The loop is host orchestration only: one jitted, sharded step per optimizer
update, metrics fetched every ``rm.log_every`` steps, eval + checkpoint every
``rm.eval_every`` steps; a rerun in the same workdir resumes from the latest
checkpoint, and a finished workdir (``result.json``) is returned as is.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats as scipy_stats

from rlhf_jax import sharding, training
from rlhf_jax.config import ConfigError
from rlhf_jax.data import pipeline
from rlhf_jax.data.preferences import preference_splits
from rlhf_jax.data.records import DataError, DropCounter
from rlhf_jax.loop import LoopSpec, run_training
from rlhf_jax.models.build import save_scalar_model, scalar_model
from rlhf_jax.stage import (count_params, experiment_tokenizer, finish_stage, keep_latest,
                            open_stage, stage_label, stage_mesh, supervised_setup)
from rlhf_jax.reward import cartography, interventions
from rlhf_jax.reward.calibration import CALIBRATIONS, calibrate_export
from rlhf_jax.reward.losses import REWARD_LOSSES, reward_objective
from rlhf_jax.reward.scoring import RewardScorer
from rlhf_jax.workdir import Workdir

log = logging.getLogger(__name__)

CARTOGRAPHY_LOG = "cartography.jsonl"


def reward_loss(params, batch, *, model, margin: float, center_coef: float, rngs=None,
                objective: str = "bradley_terry", options: Optional[dict] = None):
    """The reward-model loss of one batch (``objective``: a name in
    :data:`~rlhf_jax.reward.losses.REWARD_LOSSES`, with its ``options``): chosen and rejected
    rows in one forward (``rngs``: dropout keys, for LoRA's adapter dropout)."""
    rewards_c, rewards_r = score_pairs(model, params, batch, rngs=rngs)
    loss, diff, extra = REWARD_LOSSES[objective].fn(
        rewards_c, rewards_r, batch, params, margin=margin, center_coef=center_coef,
        **(options or {}))
    w = batch["weight"]
    summed = (rewards_c + rewards_r) if rewards_c.ndim == 1 else jnp.sum(rewards_c + rewards_r, -1)
    scalars = {"accuracy": training.masked_mean((diff > 0).astype(jnp.float32), w),
               "reward_mean": training.masked_mean(summed, w) / 2,
               "weight": jnp.sum(w), **extra}
    return loss, (scalars, {"margin": diff, "index": batch["index"], "weight": w})


def reward_loss_for(rm_section):
    """:func:`reward_loss` with the section's objective (``rm.loss``), margin and centring
    coefficient."""
    objective = reward_objective(rm_section)
    options = dict(rm_section[objective.options]) if objective.options else {}
    return functools.partial(reward_loss, margin=rm_section.margin,
                             center_coef=rm_section.center_coef,
                             objective=rm_section.get("loss", "bradley_terry"), options=options)


def score_step_for(model, steps):
    """The jitted eval scoring of a pair batch (``steps``: the stage's :class:`~rlhf_jax.stage.
    SupervisedSteps`), sharded as the train step is."""
    return jax.jit(functools.partial(score_rows, model),
                   in_shardings=(steps.shardings.params, steps.batch_sharding))


def score_pairs(model, params, batch, rngs=None):
    """``(r_chosen, r_rejected)`` from one forward over the ``2b`` stacked rows: ``[b]`` each,
    or ``[b, 2]`` (quality, length) for ODIN's two-head model."""
    ids = jnp.concatenate([batch["chosen_ids"], batch["rejected_ids"]])
    mask = jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]])
    rewards = model.apply({"params": params}, ids, attention_mask=mask, rngs=rngs).values
    n = batch["chosen_ids"].shape[0]
    return rewards[:n].astype(jnp.float32), rewards[n:].astype(jnp.float32)


def eval_metrics(rewards_c, rewards_r, len_c, len_r) -> dict:
    """Accuracy ``P(r⁺ > r⁻)``, reward mean/std and Pearson(reward, response length) over both
    responses. With ODIN's two heads (rewards ``[n, 2]``: quality, length) these are of their
    sum, the reward it was trained with, and ``quality_*`` / ``length_head_*`` give the
    accuracy and length correlation of each head alone (Chen et al. 2024, Table 1's columns)."""
    if rewards_c.ndim == 2:
        out = eval_metrics(rewards_c.sum(-1), rewards_r.sum(-1), len_c, len_r)
        for i, name in enumerate(("quality", "length_head")):
            head = eval_metrics(rewards_c[:, i], rewards_r[:, i], len_c, len_r)
            out.update({f"{name}_accuracy": head["accuracy"],
                        f"{name}_length_corr": head["reward_length_corr"]})
        return out
    rewards = np.concatenate([rewards_c, rewards_r])
    lengths = np.concatenate([len_c, len_r]).astype(np.float64)
    corr = (scipy_stats.pearsonr(rewards, lengths).statistic
            if np.std(rewards) > 0 and np.std(lengths) > 0 else float("nan"))
    return {"accuracy": float(np.mean(rewards_c > rewards_r)), "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()), "reward_length_corr": float(corr),
            "length_heuristic": interventions.length_heuristic(len_c, len_r),
            "num_pairs": int(len(rewards_c))}


def score_rows(model, params, batch) -> dict:
    """Rewards of a batch with the row data eval needs, all as (globally sharded) device arrays."""
    rewards_c, rewards_r = score_pairs(model, params, batch)
    return {"r_c": rewards_c, "r_r": rewards_r, "weight": batch["weight"],
            "len_c": batch["chosen_len"], "len_r": batch["rejected_len"]}


class RewardTrainer:
    """Builds the model, data, mesh and compiled steps of one reward-model run."""

    def __init__(self, config, workdir: str):
        if config.rm.intervention not in interventions.RM_INTERVENTIONS:
            raise ConfigError(f"config key 'rm.intervention' = {config.rm.intervention!r}; "
                              f"expected one of {sorted(interventions.RM_INTERVENTIONS)}")
        self.objective = reward_objective(config.rm)
        self.config = config
        self.rm = config.rm
        self.workdir = Workdir(workdir)
        self.mesh = stage_mesh(config)
        self.tokenizer = experiment_tokenizer(config)
        self.pad_id = pipeline.pad_token_id(self.tokenizer)
        self.buckets = tuple(sorted(config.data.buckets))

    # ----- data ---------------------------------------------------------------------------
    def prepare_data(self, cartography_stats=None) -> dict:
        """Tokenised train/eval examples after the configured intervention, with their statistics."""
        data = self.config.data
        train_pairs, eval_pairs = preference_splits(data)
        tokenize = functools.partial(pipeline.tokenize_pairs, tokenizer=self.tokenizer,
                                     template=data.template, max_length=data.max_length,
                                     append_eos=self.rm.append_eos)
        train, train_drops = tokenize(train_pairs, source=f"{data.source} train")
        evals, eval_drops = tokenize(eval_pairs, source=f"{data.source} eval")
        before = dataset_stats(train)
        intervention_drops = DropCounter()
        context = interventions.InterventionData(
            pairs=train_pairs, seed=self.config.seed, drops=intervention_drops,
            cartography=cartography_stats,
            tokenize=lambda pairs: tokenize(pairs, source=f"{data.source} train (augmented)")[0])
        chosen = interventions.RM_INTERVENTIONS[self.rm.intervention]
        train = chosen.fn(train, context, self.rm)
        if len(train) < self.rm.batch_size * jax.process_count():
            raise DataError(f"only {len(train)} training pairs left after filtering; need at least "
                            f"one batch of {self.rm.batch_size} per process")
        return {"train": train, "eval": evals, "eval_pairs": eval_pairs,
                "stats": {"train_before_intervention": before, "train": dataset_stats(train),
                          "eval": dataset_stats(evals), "dropped_train": train_drops.counts,
                          "dropped_eval": eval_drops.counts,
                          "dropped_by_intervention": intervention_drops.counts}}

    # ----- model and steps ----------------------------------------------------------------
    def build(self, num_train: int):
        rm = self.rm
        key = jax.random.key(self.config.seed)
        model, params = scalar_model(self.config.model, key, readout="last",
                                     length_head=self.objective.length_head)
        self.model = model
        self.spec = LoopSpec(
            steps_per_epoch=pipeline.steps_per_epoch(num_train, rm.batch_size, jax.process_count()),
            epochs=rm.epochs, log_every=rm.log_every, eval_every=rm.eval_every,
            best_metric="accuracy", best_mode="max",
            desc=stage_label("reward model", self.workdir.path),
            keep_latest=keep_latest(self.config))
        setup = supervised_setup(model, params, self.tokenizer, rm, total_steps=self.spec.total_steps,
                                 mesh=self.mesh, loss_fn=reward_loss_for(rm))
        self.tx, self.shardings, self.train_step = setup.tx, setup.shardings, setup.train_step
        self.score_step = score_step_for(model, setup)
        return setup.state

    def batches(self, examples, *, epoch: int = 0, train: bool = True, batch_size: int = None):
        return pipeline.batches(
            examples, pipeline.collate_pairs, batch_size=batch_size or self.rm.batch_size,
            buckets=self.buckets, pad_id=self.pad_id, seed=self.config.seed, epoch=epoch,
            train=train, process_index=jax.process_index(), process_count=jax.process_count())

    def evaluate(self, params, examples) -> dict:
        """Eval metrics of ``params`` over ``examples`` (every example once; on every process)."""
        parts = []
        with sharding.use_mesh(self.mesh):
            for batch in self.batches(examples, train=False, batch_size=self.rm.eval_batch_size):
                parts.append(sharding.to_host(
                    self.score_step(params, sharding.shard_batch(batch, self.mesh))))
        rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        keep = rows["weight"] > 0
        return eval_metrics(rows["r_c"][keep], rows["r_r"][keep], rows["len_c"][keep],
                            rows["len_r"][keep])

    # ----- the loop ------------------------------------------------------------------------
    def fit(self, data: dict, *, cartography_log: str = None) -> tuple:
        state = self.build(len(data["train"]))
        ids = {e["index"]: e["id"] for e in data["train"]}

        def log_pass(epoch, per_example):
            rows = [(int(i), float(m)) for p in per_example
                    for i, m, w in zip(p["index"], p["margin"], p["weight"]) if w > 0]
            if self.workdir.is_writer:
                cartography.append_pass(cartography_log, epoch, [ids[i] for i, _ in rows],
                                        [m for _, m in rows])

        return run_training(
            state, step_fn=self.train_step, spec=self.spec, mesh=self.mesh, workdir=self.workdir,
            epoch_batches=lambda epoch: self.batches(data["train"], epoch=epoch),
            evaluate=lambda params: self.evaluate(params, data["eval"]),
            on_epoch_end=log_pass if cartography_log else None)


def dataset_stats(examples) -> dict:
    """Pairs, the length heuristic and mean chosen/rejected response lengths (tokens)."""
    if not examples:
        return {"pairs": 0}
    c = np.asarray([e["chosen_len"] for e in examples])
    r = np.asarray([e["rejected_len"] for e in examples])
    return {"pairs": len(examples), "length_heuristic": interventions.length_heuristic(c, r),
            "mean_chosen_len": float(c.mean()), "mean_rejected_len": float(r.mean())}


def train_reward_model(config, workdir: str, *, resume_with_changes: bool = False) -> dict:
    """Run (or resume, or return the finished result of) a reward-model stage in ``workdir``
    (``resume_with_changes``: see :func:`rlhf_jax.workdir.start_stage`)."""
    wd, done = open_stage(config, workdir, resume_with_changes=resume_with_changes)
    if done is not None:
        return done
    if config.rm.calibration not in CALIBRATIONS:
        raise ConfigError(f"rm.calibration = {config.rm.calibration!r}; expected one of "
                          f"{CALIBRATIONS}")
    if config.rm.calibration == "lowess" and jax.process_count() > 1:
        raise ConfigError("rm.calibration='lowess' is fitted on one process; run "
                          "`rlhf-jax train-rm` on one host, or fit it there afterwards")
    trainer = RewardTrainer(config, workdir)
    needs = interventions.RM_INTERVENTIONS[config.rm.intervention].needs_cartography
    stats = _cartography_stats(config, wd, resume_with_changes) if needs else None
    data = trainer.prepare_data(stats)
    carto = wd.file(CARTOGRAPHY_LOG) if config.rm.cartography else None
    state, outcome = trainer.fit(data, cartography_log=carto)
    result = {"data": data["stats"], **outcome, "model_family": trainer.model.config.family,
              "num_params": count_params(state.params)}
    if carto and os.path.exists(carto) and wd.is_writer:
        passes = cartography.read_passes(carto)
        if len(passes) >= 2:
            stats = cartography.confidence_and_variability(passes)
            lengths = {e["id"]: (e["chosen_len"], e["rejected_len"]) for e in data["train"]}
            result["cartography"] = cartography.plot_cartography(stats, lengths,
                                                                  wd.file("cartography.png"))
    save_scalar_model(trainer.model, state.params, wd.export, tokenizer=trainer.tokenizer)
    trainer.model = trainer.model.clone(heads="sum")  # calibration: the reward it was trained with
    if config.rm.calibration == "lowess":
        result["calibration"] = fit_calibration(config, trainer, state.params, data["eval_pairs"],
                                                wd.export)
    return finish_stage(wd, result)


def fit_calibration(config, trainer, params, eval_pairs, export: str) -> dict:
    """``rm.calibration = "lowess"``: the trained model scores both responses of its eval pairs,
    and the length trend of those scores is stored with the export
    (:mod:`rlhf_jax.reward.calibration`)."""
    scorer = RewardScorer(trainer.model, params, trainer.tokenizer,
                          template=config.data.template, max_length=config.data.max_length,
                          buckets=tuple(sorted(config.data.buckets)),
                          append_eos=config.rm.append_eos, batch_size=config.rm.eval_batch_size,
                          mesh=trainer.mesh)  # sharded as the eval step: a 7B model fits
    return calibrate_export(scorer, eval_pairs, export, frac=config.rm.calibration_frac,
                            it=config.rm.calibration_it)


def _cartography_stats(config, wd: Workdir, resume_with_changes: bool = False) -> dict:
    """C-TR's statistics: from ``rm.ctr.cartography_from``, or a standard run in ``WORKDIR/cartography``.

    The standard run trains ``rm.ctr.cartography_epochs`` (≥ 2) epochs with the
    cartography log on; confidence averages the passes after the first.
    """
    source = config.rm.ctr.cartography_from
    if not source:
        if config.rm.ctr.cartography_epochs < 2:
            raise ConfigError("config key 'rm.ctr.cartography_epochs' must be ≥ 2 (confidence "
                              f"averages the passes after the first); got "
                              f"{config.rm.ctr.cartography_epochs}")
        base = config.copy_and_resolve_references()
        with base.unlocked():
            base.rm.intervention = "none"
            base.rm.cartography = True
            base.rm.epochs = config.rm.ctr.cartography_epochs
        source = wd.file("cartography")
        train_reward_model(base, source, resume_with_changes=resume_with_changes)
    return cartography.confidence_and_variability(
        cartography.read_passes(os.path.join(source, CARTOGRAPHY_LOG)))
