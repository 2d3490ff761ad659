"""The direct preference stage (``rlhf-jax dpo``): DPO, R-DPO or SimPO on preference pairs.

The policy starts from ``model.init`` (an SFT export) and is trained on the reward model's
pairs (``data``, as :func:`rlhf_jax.data.preferences.preference_splits` reads them) with the
loss ``dpo.loss`` (:mod:`rlhf_jax.dpo.losses`). Per pair it needs the summed log-probability
of each response, and its length, under the policy and under the frozen reference:

* the reference is the initial policy. Its log-probs are computed once per batch, before the
  step: from a frozen copy of the initial weights, or, with LoRA, inside the step from the
  policy's own frozen base with the adapters off (no copy; at the start the adapters are
  zero, so it is the same function). SimPO needs no reference and skips it;
* one forward runs chosen and rejected responses together (``[2b, t]``); the LM head gives
  token log-probs without a ``[b, t, vocab]`` float32 array on accelerators
  (:func:`~rlhf_jax.models.vocab_logprobs.head_logprobs`).

Logged per step and at each evaluation: loss, the implicit rewards of the chosen and rejected
responses, their margin, accuracy (chosen reward above rejected), the policy's mean
log-probabilities, and, at evaluation, the mean length of responses sampled from the policy on
``dpo.eval_prompts`` distinct prompts of the eval pairs. The workdir, resume, checkpoints and
the HF export are SFT's (:mod:`rlhf_jax.sft`).
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import sharding
from rlhf_jax.data import pipeline
from rlhf_jax.data.preferences import preference_splits
from rlhf_jax.dpo.losses import PREFERENCE_LOSSES, preference_loss
from rlhf_jax.loop import LoopSpec, run_training
from rlhf_jax.models import lora, save_pretrained
from rlhf_jax.models.build import causal_lm
from rlhf_jax.models.transformer import lm_head_weight
from rlhf_jax.models.vocab_logprobs import head_logprobs
from rlhf_jax.stage import (count_params, experiment_tokenizer, finish_stage, keep_latest,
                            open_stage, stage_label, stage_mesh, supervised_setup)

log = logging.getLogger(__name__)
PAIR_METRICS = ("loss", "accuracy", "reward_chosen", "reward_rejected", "reward_margin",
                "logp_chosen", "logp_rejected")


def sequence_logprobs(params, ids, mask, loss_mask, *, model, rngs=None):
    """``(Σ_t log π(ids_t | ids_<t), count)`` per row over the ``loss_mask`` positions (the
    response and its EOS): ``[b]`` float32 each. ``rngs``: dropout keys (LoRA's)."""
    hidden = model.apply({"params": params}, ids, attention_mask=mask, last_token_only=True,
                         rngs=rngs).hidden_states
    weight, vocab_major = lm_head_weight(params, model.config)
    logprobs, _ = head_logprobs(hidden[:, :-1].astype(weight.dtype), weight, ids[:, 1:],
                                vocab_major=vocab_major)
    counted = loss_mask[:, 1:].astype(jnp.float32)
    return jnp.sum(logprobs * counted, axis=-1), jnp.sum(counted, axis=-1)


def pair_logprobs(params, batch, *, model, rngs=None) -> tuple:
    """``(log π(y_w), log π(y_l), |y_w|, |y_l|)``: both sides in one ``[2b, t]`` forward."""
    both = {k: jnp.concatenate([batch[f"chosen_{k}"], batch[f"rejected_{k}"]])
            for k in ("ids", "mask", "loss_mask")}
    logps, lengths = sequence_logprobs(params, both["ids"], both["mask"], both["loss_mask"],
                                       model=model, rngs=rngs)
    b = batch["chosen_ids"].shape[0]
    return logps[:b], logps[b:], lengths[:b], lengths[b:]


def reference_mode(config) -> str:
    """Where the reference log-probs come from: ``none`` (SimPO), ``base`` (LoRA: the frozen
    base inside the step) or ``batch`` (a frozen copy, computed before the step)."""
    if not PREFERENCE_LOSSES[config.dpo.loss].uses_reference:
        return "none"
    return "base" if lora.lora_config_from_spec(config.model) is not None else "batch"


def preference_objective(params, batch, *, model, loss, reference: str, rngs=None):
    """The mean of ``loss`` over the batch's real pairs, and the pair metrics (weighted by the
    pair count, so gradient accumulation gives the whole batch's mean)."""
    pc, pr, lc, lr = pair_logprobs(params, batch, model=model, rngs=rngs)
    if reference == "base":
        base = jax.lax.stop_gradient(lora.without_adapters(params))
        plain = model.clone(config=model.config.replace(lora=None))
        rc, rr, _, _ = pair_logprobs(base, batch, model=plain)
    elif reference == "batch":
        rc, rr = batch["ref_chosen"], batch["ref_rejected"]
    else:
        rc = rr = jnp.zeros_like(pc)
    losses, chosen, rejected = loss(pc, pr, rc, rr, lc, lr)
    weights = batch["weight"].astype(jnp.float32)
    count = jnp.sum(weights)

    def mean(x):
        return jnp.sum(x * weights) / jnp.maximum(count, 1.0)
    scalars = {"weight": count, "reward_chosen": mean(chosen), "reward_rejected": mean(rejected),
               "reward_margin": mean(chosen - rejected),
               "accuracy": mean((chosen > rejected).astype(jnp.float32)),
               "logp_chosen": mean(pc), "logp_rejected": mean(pr)}
    return mean(losses), (scalars, {})


def pair_sums(params, batch, *, model, loss, reference: str):
    """Eval: the pair metrics summed over the batch's real pairs, and their count."""
    value, (scalars, _) = preference_objective(params, batch, model=model, loss=loss,
                                               reference=reference)
    count = scalars.pop("weight")
    return {"loss": value * count, **{k: v * count for k, v in scalars.items()}}, count


def sampled_length(model, params, tokenizer, prompts, config) -> float:
    """Mean length in tokens of one response sampled per prompt (the policy's verbosity)."""
    from rlhf_jax.samples import generate_samples
    c = config.dpo
    rows = generate_samples(model, params, tokenizer, prompts, samples_per_prompt=1,
                            max_new_tokens=c.eval_max_new_tokens, temperature=c.eval_temperature,
                            top_p=1.0, template=config.data.prompt_template,
                            batch_size=c.eval_batch_size, seed=config.seed, desc="dpo eval samples")
    return float(np.mean([r["length"] for r in rows]))


def train_dpo(config, workdir: str, *, resume_with_changes: bool = False) -> dict:
    """Run (or resume, or return the finished result of) a DPO-family stage in ``workdir``."""
    wd, done = open_stage(config, workdir, resume_with_changes=resume_with_changes)
    if done is not None:
        return done
    cfg, mesh = config.dpo, stage_mesh(config)
    loss = preference_loss(cfg.loss, cfg)
    reference = reference_mode(config)
    tokenizer = experiment_tokenizer(config)
    train_pairs, eval_pairs = preference_splits(config.data)
    tokenize = functools.partial(pipeline.tokenize_preference_responses, tokenizer=tokenizer,
                                 template=config.data.prompt_template,
                                 max_length=config.data.max_length)
    train, train_drops = tokenize(train_pairs, source=f"{config.data.source} train")
    evals, eval_drops = tokenize(eval_pairs, source=f"{config.data.source} eval")
    model, params = causal_lm(config.model, jax.random.key(config.seed))
    spec = LoopSpec(steps_per_epoch=pipeline.steps_per_epoch(len(train), cfg.batch_size,
                                                             jax.process_count()),
                    epochs=cfg.epochs, log_every=cfg.log_every, eval_every=cfg.eval_every,
                    best_metric="loss", best_mode="min", desc=stage_label("dpo", workdir),
                    keep_latest=keep_latest(config))
    objective = functools.partial(preference_objective, loss=loss, reference=reference)
    frozen = (jax.tree.map(jnp.copy, params) if reference == "batch" else None)
    setup = supervised_setup(model, params, tokenizer, cfg, loss_fn=objective,
                             total_steps=spec.total_steps, mesh=mesh)
    reference_fn = None
    if frozen is not None:
        frozen = sharding.shard_params(frozen, setup.shardings.params)
        reference_fn = jax.jit(lambda p, b: pair_logprobs(p, b, model=model)[:2],
                               in_shardings=(setup.shardings.params, setup.batch_sharding),
                               out_shardings=(setup.batch_sharding, setup.batch_sharding))

    def with_reference(batch):
        if reference_fn is None:
            return batch
        chosen, rejected = reference_fn(frozen, sharding.shard_batch(batch, mesh))
        return {**batch, "ref_chosen": sharding.local_rows(chosen),
                "ref_rejected": sharding.local_rows(rejected)}

    batches = functools.partial(
        pipeline.batches, collate=pipeline.collate_preference_responses,
        buckets=tuple(sorted(config.data.buckets)), pad_id=pipeline.pad_token_id(tokenizer),
        seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count())
    eval_batches = [with_reference(b) for b in batches(evals, batch_size=cfg.eval_batch_size,
                                                       train=False)]
    eval_fn = jax.jit(functools.partial(pair_sums, model=model, loss=loss, reference=reference),
                      in_shardings=(setup.shardings.params, setup.batch_sharding))
    distinct = list(dict.fromkeys(p["prompt"] for p in eval_pairs))[:cfg.eval_prompts]
    eval_prompts = [{"id": f"eval-{i:04d}", "prompt": p} for i, p in enumerate(distinct)]
    if eval_prompts and jax.process_count() > 1:
        log.warning("dpo.eval_prompts: sampled lengths are measured on one process only; "
                    "skipped in this %d-process run", jax.process_count())
        eval_prompts = []

    def evaluate(params):
        sums = sharding.to_host([eval_fn(params, sharding.shard_batch(b, mesh))
                                 for b in eval_batches])  # one host transfer, after all batches
        pairs = max(float(np.sum([n for _, n in sums])), 1.0)
        result = {k: float(np.sum([s[k] for s, _ in sums]) / pairs) for k in PAIR_METRICS}
        result["pairs"] = pairs
        if eval_prompts:
            result["sampled_length"] = sampled_length(model, params, tokenizer, eval_prompts,
                                                      config)
        return result

    state, outcome = run_training(
        setup.state, step_fn=setup.train_step, spec=spec, mesh=mesh, workdir=wd,
        evaluate=evaluate,
        epoch_batches=lambda epoch: batches(train, batch_size=cfg.batch_size,
                                            epoch=epoch).map(with_reference))
    save_pretrained(model, state.params, wd.export, tokenizer=tokenizer,
                    base_model=config.model.init)
    result = {**outcome, "loss": cfg.loss, "reference": reference, "steps": spec.total_steps,
              "train_pairs": len(train), "eval_pairs": len(evals),
              "dropped_train": train_drops.counts, "dropped_eval": eval_drops.counts,
              "num_params": count_params(state.params)}
    return finish_stage(wd, result)
