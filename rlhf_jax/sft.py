"""The supervised fine-tuning stage (``rlhf-jax sft``): next-token loss on response tokens.

The paper's policies start from a supervised model (Singhal et al. 2023, §2.2);
the demo makes its tiny initial policy here. Loss: mean over response tokens
(and the EOS after them) of ``−log p(y_t | x, y_<t)``; prompt tokens and padding
carry no loss. Data: the synthetic task's demonstrations, or a JSONL file of
``{prompt, response}`` (``sft.train_file``). The workdir layout, resume and
checkpointing are those of :mod:`rlhf_jax.reward.train`; the export is an HF
causal-LM directory with the tokenizer.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import sharding
from rlhf_jax.config import ConfigError
from rlhf_jax.data import pipeline
from rlhf_jax.data.preferences import hold_out, synthetic_task
from rlhf_jax.data.records import require_text
from rlhf_jax.loop import LoopSpec, run_training
from rlhf_jax.models import save_pretrained
from rlhf_jax.models.build import causal_lm
from rlhf_jax.models.transformer import lm_head_weight
from rlhf_jax.models.vocab_logprobs import head_logprobs
from rlhf_jax.samples import read_jsonl
from rlhf_jax.stage import (count_params, experiment_tokenizer, finish_stage, keep_latest,
                            open_stage, stage_label, stage_mesh, supervised_setup)


def response_nll(params, batch, *, model, rngs=None):
    """Mean next-token NLL over ``loss_mask`` positions (float32 log-softmax).

    ``weight`` (the token count) makes gradient accumulation a token mean over
    the whole batch (:func:`rlhf_jax.training.accumulated_gradients`). ``rngs``: dropout keys
    (LoRA's adapter dropout). The LM head runs a chunk of positions at a time on accelerators
    (:func:`~rlhf_jax.models.vocab_logprobs.head_logprobs`): no ``[b, t, vocab]`` float32
    array there, forward or backward.
    """
    hidden = model.apply({"params": params}, batch["ids"], attention_mask=batch["mask"],
                         last_token_only=True, rngs=rngs).hidden_states
    weight, vocab_major = lm_head_weight(params, model.config)
    logprobs, _ = head_logprobs(hidden[:, :-1].astype(weight.dtype), weight, batch["ids"][:, 1:],
                                vocab_major=vocab_major)
    nll = -logprobs
    weights = batch["loss_mask"][:, 1:].astype(jnp.float32)
    count = jnp.sum(weights)
    loss = jnp.sum(nll * weights) / jnp.maximum(count, 1.0)
    return loss, ({"weight": count}, {})


def nll_sum_and_count(params, batch, *, model):
    """``(Σ NLL, tokens)`` of a batch: eval sums these over batches for an exact token mean."""
    loss, (scalars, _) = response_nll(params, batch, model=model)
    return loss * scalars["weight"], scalars["weight"]


def read_sft_jsonl(path: str) -> list:
    """``{id, prompt, response}`` rows of a JSONL file; bad rows name the file and line."""
    rows = []
    for row in read_jsonl(path):
        at = dict(file=path, row_index=row["_line"] - 1, line=row["_line"])
        rows.append({"id": str(row.get("id", f"sft-{row['_line']:06d}")),
                     "prompt": require_text(row, "prompt", **at),
                     "response": require_text(row, "response", **at)})
    return rows


def sft_examples(config) -> tuple:
    """``(train, eval)`` demonstrations for the config."""
    if config.sft.train_file:
        rows = read_sft_jsonl(config.sft.train_file)
    elif config.data.source == "synthetic":
        rows = synthetic_task(config.data).sft_examples(config.data.synthetic.num_sft,
                                                        seed=config.data.synthetic.seed)
    else:
        raise ConfigError("sft needs sft.train_file (JSONL of {prompt, response}) unless "
                          "data.source='synthetic'")
    return hold_out(rows, config.sft.eval_fraction, config.seed)


def eval_step_for(model, steps):
    """The jitted eval of a batch (summed response NLL and token count), sharded as the step is."""
    return jax.jit(functools.partial(nll_sum_and_count, model=model),
                   in_shardings=(steps.shardings.params, steps.batch_sharding))


def train_sft(config, workdir: str, *, resume_with_changes: bool = False) -> dict:
    """Run (or resume, or return the finished result of) an SFT stage in ``workdir``
    (``resume_with_changes``: see :func:`rlhf_jax.workdir.start_stage`)."""
    wd, done = open_stage(config, workdir, resume_with_changes=resume_with_changes)
    if done is not None:
        return done
    cfg, mesh = config.sft, stage_mesh(config)
    tokenizer = experiment_tokenizer(config)
    train_rows, eval_rows = sft_examples(config)
    tokenize = functools.partial(pipeline.tokenize_sft, tokenizer=tokenizer,
                                 template=config.data.prompt_template,
                                 max_length=config.data.max_length)
    train, train_drops = tokenize(train_rows, source="sft train")
    evals, eval_drops = tokenize(eval_rows, source="sft eval")
    model, params = causal_lm(config.model, jax.random.key(config.seed))
    spec = LoopSpec(steps_per_epoch=pipeline.steps_per_epoch(len(train), cfg.batch_size,
                                                             jax.process_count()),
                    epochs=cfg.epochs, log_every=cfg.log_every, eval_every=cfg.eval_every,
                    best_metric="loss", best_mode="min", desc=stage_label("sft", workdir),
                    keep_latest=keep_latest(config))
    setup = supervised_setup(model, params, tokenizer, cfg, loss_fn=response_nll,
                             total_steps=spec.total_steps, mesh=mesh)
    eval_fn = eval_step_for(model, setup)
    batches = functools.partial(
        pipeline.batches, collate=pipeline.collate_sft, buckets=tuple(sorted(config.data.buckets)),
        pad_id=pipeline.pad_token_id(tokenizer), seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count())

    def evaluate(params):
        sums = [sharding.to_host(eval_fn(params, sharding.shard_batch(b, mesh)))
                for b in batches(evals, batch_size=cfg.eval_batch_size, train=False)]
        total, tokens = np.sum([s for s, _ in sums]), np.sum([n for _, n in sums])
        return {"loss": float(total / max(tokens, 1.0)), "tokens": float(tokens)}

    state, outcome = run_training(
        setup.state, step_fn=setup.train_step, spec=spec, mesh=mesh, workdir=wd, evaluate=evaluate,
        epoch_batches=lambda epoch: batches(train, batch_size=cfg.batch_size, epoch=epoch))
    save_pretrained(model, state.params, wd.export, tokenizer=tokenizer, base_model=config.model.init)
    result = {**outcome, "steps": spec.total_steps, "train_examples": len(train),
              "eval_examples": len(evals), "dropped_train": train_drops.counts,
              "dropped_eval": eval_drops.counts,
              "num_params": count_params(state.params)}
    return finish_stage(wd, result)
