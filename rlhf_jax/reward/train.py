"""The reward-model stage (``rlhf-jax train-rm``): Bradley–Terry training, eval, interventions, export.

Singhal et al. 2023 §2.1/§4.2: a decoder trunk with a scalar head read at the
last non-pad token, trained with ``−log σ(r⁺ − r⁻)`` on preference pairs, and
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

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats as scipy_stats
from tqdm.auto import tqdm

from rlhf_jax import sharding, training
from rlhf_jax.checkpoint import Checkpoints
from rlhf_jax.config import save_config
from rlhf_jax.data import pipeline
from rlhf_jax.data.preferences import preference_splits, synthetic_task
from rlhf_jax.models.build import save_scalar_model, scalar_model, tokenizer_for
from rlhf_jax.reward import cartography, interventions
from rlhf_jax.reward.losses import bradley_terry_loss
from rlhf_jax.workdir import Workdir

log = logging.getLogger(__name__)

CARTOGRAPHY_LOG = "cartography.jsonl"


def load_tokenizer_for(config):
    if config.data.source == "synthetic" and not config.data.tokenizer:
        return synthetic_task(config.data).tokenizer()
    return tokenizer_for(config.data.tokenizer, config.model.init)


def reward_loss(params, batch, *, model, margin: float, center_coef: float):
    """Bradley–Terry loss of one batch: chosen and rejected rows in one forward."""
    rewards_c, rewards_r = score_pairs(model, params, batch)
    loss, diff = bradley_terry_loss(rewards_c, rewards_r, batch["weight"], margin=margin,
                                    center_coef=center_coef)
    w = batch["weight"]
    scalars = {"accuracy": jnp.sum((diff > 0) * w) / jnp.maximum(jnp.sum(w), 1.0),
               "reward_mean": jnp.sum((rewards_c + rewards_r) * w) / jnp.maximum(2 * jnp.sum(w), 1.0)}
    return loss, (scalars, {"margin": diff, "index": batch["index"], "weight": w})


def score_pairs(model, params, batch):
    """``(r_chosen [b], r_rejected [b])`` from one forward over the ``2b`` stacked rows."""
    ids = jnp.concatenate([batch["chosen_ids"], batch["rejected_ids"]])
    mask = jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]])
    rewards = model.apply({"params": params}, ids, attention_mask=mask).values
    n = batch["chosen_ids"].shape[0]
    return rewards[:n].astype(jnp.float32), rewards[n:].astype(jnp.float32)


def eval_metrics(rewards_c, rewards_r, len_c, len_r) -> dict:
    """Accuracy ``P(r⁺ > r⁻)``, reward mean/std and Pearson(reward, response length) over both responses."""
    rewards = np.concatenate([rewards_c, rewards_r])
    lengths = np.concatenate([len_c, len_r]).astype(np.float64)
    corr = (scipy_stats.pearsonr(rewards, lengths).statistic
            if np.std(rewards) > 0 and np.std(lengths) > 0 else float("nan"))
    return {"accuracy": float(np.mean(rewards_c > rewards_r)), "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()), "reward_length_corr": float(corr),
            "length_heuristic": interventions.length_heuristic(len_c, len_r),
            "num_pairs": int(len(rewards_c))}


def _host(tree):
    """Device → host numpy, gathering across processes when needed."""
    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils
            x = multihost_utils.process_allgather(x, tiled=True)
        return np.asarray(jax.device_get(x))
    return jax.tree.map(fetch, tree)


class RewardTrainer:
    """Builds the model, data, mesh and compiled steps of one reward-model run."""

    def __init__(self, config, workdir: str):
        self.config = config
        self.rm = config.rm
        self.workdir = Workdir(workdir)
        self.mesh = sharding.make_mesh(**dict(config.mesh))
        self.tokenizer = load_tokenizer_for(config)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.buckets = tuple(sorted(config.data.buckets))

    # ----- data ---------------------------------------------------------------------------
    def prepare_data(self, cartography_stats=None) -> dict:
        """Tokenised train/eval examples after the configured intervention, with their statistics."""
        data = self.config.data
        train_pairs, eval_pairs = preference_splits(data)
        if self.rm.intervention == "rda":
            train_pairs = interventions.random_data_augmentation(
                train_pairs, fraction=self.rm.rda.fraction, seed=self.config.seed)
        tokenize = functools.partial(pipeline.tokenize_pairs, tokenizer=self.tokenizer,
                                     template=data.template, max_length=data.max_length,
                                     append_eos=self.rm.append_eos)
        train, train_drops = tokenize(train_pairs, source=f"{data.source} train")
        evals, eval_drops = tokenize(eval_pairs, source=f"{data.source} eval")
        before = dataset_stats(train)
        if self.rm.intervention == "bal":
            train = interventions.balance_by_length(train, seed=self.config.seed,
                                                    bin_width=self.rm.bal.bin_width,
                                                    limit=self.rm.bal.limit)
        elif self.rm.intervention == "ctr":
            train = cartography.select_by_confidence(train, cartography_stats,
                                                     low=self.rm.ctr.low, high=self.rm.ctr.high)
        if len(train) < self.rm.batch_size * jax.process_count():
            raise ValueError(f"only {len(train)} training pairs left after filtering; need at least "
                             f"one batch of {self.rm.batch_size}")
        return {"train": train, "eval": evals, "train_pairs": train_pairs,
                "stats": {"train_before_intervention": before, "train": dataset_stats(train),
                          "eval": dataset_stats(evals), "dropped_train": train_drops.counts,
                          "dropped_eval": eval_drops.counts}}

    # ----- model and steps ----------------------------------------------------------------
    def build(self, num_train: int):
        rm = self.rm
        key = jax.random.key(self.config.seed)
        model, params = scalar_model(self.config.model, key, readout="last")
        vocab = model.config.vocab_size
        if len(self.tokenizer) > vocab:
            raise ValueError(f"tokenizer has {len(self.tokenizer)} tokens but the model's vocab_size "
                             f"is {vocab}: set model.overrides.vocab_size (presets) or use the "
                             "checkpoint's tokenizer")
        self.model = model
        self.steps_per_epoch = pipeline.steps_per_epoch(num_train, rm.batch_size,
                                                        jax.process_count())
        self.total_steps = self.steps_per_epoch * rm.epochs
        self.tx = training.make_optimizer(
            lr=rm.lr, warmup_steps=rm.warmup_steps, total_steps=self.total_steps,
            weight_decay=rm.weight_decay, max_grad_norm=rm.max_grad_norm)
        self.shardings = training.state_shardings(model, self.mesh, self.tx, params)
        with sharding.use_mesh(self.mesh):
            params = jax.device_put(params, self.shardings.params)
            state = jax.jit(lambda p: training.init_state(p, self.tx),
                            out_shardings=self.shardings)(params)
        loss = functools.partial(reward_loss, model=model, margin=rm.margin,
                                 center_coef=rm.center_coef)
        self.train_step = training.make_train_step(
            loss, self.tx, accum_steps=rm.accum_steps, shardings=self.shardings,
            batch_sharding=sharding.batch_sharding(self.mesh))
        self.score_step = jax.jit(functools.partial(score_pairs, model),
                                  in_shardings=(self.shardings.params,
                                                sharding.batch_sharding(self.mesh)))
        return state

    def batches(self, examples, *, epoch: int = 0, train: bool = True, batch_size: int = None):
        return pipeline.batches(
            examples, pipeline.collate_pairs, batch_size=batch_size or self.rm.batch_size,
            buckets=self.buckets, pad_id=self.pad_id, seed=self.config.seed, epoch=epoch,
            train=train, process_index=jax.process_index(), process_count=jax.process_count())

    def evaluate(self, params, examples) -> dict:
        """Eval metrics of ``params`` over ``examples`` (every example once)."""
        out = {k: [] for k in ("r_c", "r_r", "len_c", "len_r", "w")}
        with sharding.use_mesh(self.mesh):
            for batch in self.batches(examples, train=False, batch_size=self.rm.eval_batch_size):
                r_c, r_r = _host(self.score_step(params, sharding.shard_batch(batch, self.mesh)))
                out["r_c"].append(r_c), out["r_r"].append(r_r), out["w"].append(batch["weight"])
                out["len_c"].append(batch["chosen_len"]), out["len_r"].append(batch["rejected_len"])
        keep = np.concatenate(out["w"]) > 0
        cat = {k: np.concatenate(v)[keep] for k, v in out.items() if k != "w"}
        return eval_metrics(cat["r_c"], cat["r_r"], cat["len_c"], cat["len_r"])

    # ----- the loop ------------------------------------------------------------------------
    def fit(self, data: dict, *, cartography_log: str = None) -> dict:
        rm, wd = self.rm, self.workdir
        state = self.build(len(data["train"]))
        ckpt = Checkpoints(wd.checkpoints, best_metric="accuracy")
        start = ckpt.latest_step() or 0
        if start:
            state = ckpt.restore(start, state)
            log.info("resumed from step %d of %d", start, self.total_steps)
        progress = tqdm(total=self.total_steps, initial=start, desc="reward model",
                        disable=jax.process_index() != 0)
        with sharding.use_mesh(self.mesh):
            for epoch in range(start // self.steps_per_epoch, rm.epochs):
                margins = []
                skip = start - epoch * self.steps_per_epoch if epoch == start // self.steps_per_epoch else 0
                epoch_batches = self.batches(data["train"], epoch=epoch)
                for i in range(max(skip, 0), self.steps_per_epoch):
                    state, metrics = self.train_step(
                        state, sharding.shard_batch(epoch_batches[i], self.mesh))
                    margins.append(metrics.pop("per_example"))
                    step = epoch * self.steps_per_epoch + i + 1
                    progress.update(1)
                    if step % rm.log_every == 0:
                        scalars = _host(metrics)
                        wd.log_metrics(step, scalars)
                        progress.set_postfix(loss=f"{scalars['loss']:.3f}",
                                             acc=f"{scalars['accuracy']:.2f}")
                    if step % rm.eval_every == 0 or step == self.total_steps:
                        metrics = self.evaluate(state.params, data["eval"])
                        wd.log_metrics(step, metrics, split="eval")
                        ckpt.save(step, state, {"accuracy": metrics["accuracy"]})
                if cartography_log and not skip and wd.is_writer:
                    per_example = _host(margins)
                    rows = [(int(idx), float(m)) for p in per_example
                            for idx, m, w in zip(p["index"], p["margin"], p["weight"]) if w > 0]
                    by_index = {e["index"]: e["id"] for e in data["train"]}
                    cartography.append_pass(cartography_log, epoch,
                                            [by_index[i] for i, _ in rows], [m for _, m in rows])
        progress.close()
        best = ckpt.best_step()
        if best is not None and best != ckpt.latest_step():
            state = ckpt.restore(best, state)
        final = self.evaluate(state.params, data["eval"])
        ckpt.close()
        return state, {"best_step": best, "eval": final}


def dataset_stats(examples) -> dict:
    """Pairs, the length heuristic and mean chosen/rejected response lengths (tokens)."""
    if not examples:
        return {"pairs": 0}
    c = np.asarray([e["chosen_len"] for e in examples])
    r = np.asarray([e["rejected_len"] for e in examples])
    return {"pairs": len(examples), "length_heuristic": interventions.length_heuristic(c, r),
            "mean_chosen_len": float(c.mean()), "mean_rejected_len": float(r.mean())}


def train_reward_model(config, workdir: str) -> dict:
    """Run (or resume, or return the finished result of) a reward-model stage in ``workdir``."""
    wd = Workdir(workdir)
    done = wd.read_json("result.json")
    if done is not None:
        log.info("%s already finished; delete result.json to rerun", workdir)
        return done
    if wd.is_writer:
        save_config(config, wd.file("config.json"))
    stats = None
    if config.rm.intervention == "ctr":
        stats = _cartography_stats(config, wd)
    trainer = RewardTrainer(config, workdir)
    data = trainer.prepare_data(stats)
    carto = wd.file(CARTOGRAPHY_LOG) if config.rm.cartography else None
    state, outcome = trainer.fit(data, cartography_log=carto)
    result = {"data": data["stats"], **outcome, "model_family": trainer.model.config.family,
              "num_params": int(sum(x.size for x in jax.tree.leaves(state.params)))}
    if carto and os.path.exists(carto) and config.rm.epochs >= 2:
        stats = cartography.confidence_and_variability(cartography.read_passes(carto))
        lengths = {e["id"]: (e["chosen_len"], e["rejected_len"]) for e in data["train"]}
        result["cartography"] = cartography.plot_cartography(stats, lengths,
                                                              wd.file("cartography.png"))
    save_scalar_model(trainer.model, state.params, wd.export, tokenizer=trainer.tokenizer)
    wd.write_json("result.json", result)
    wd.close()
    return result


def _cartography_stats(config, wd: Workdir) -> dict:
    """C-TR's statistics: from ``rm.ctr.cartography_from``, or a standard run in ``WORKDIR/cartography``."""
    source = config.rm.ctr.cartography_from
    if not source:
        base = config.copy_and_resolve_references()
        with base.unlocked():
            base.rm.intervention = "none"
            base.rm.cartography = True
        source = wd.file("cartography")
        train_reward_model(base, source)
    return cartography.confidence_and_variability(
        cartography.read_passes(os.path.join(source, CARTOGRAPHY_LOG)))
