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
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rlhf_jax import sharding, training
from rlhf_jax.checkpoint import Checkpoints
from rlhf_jax.config import save_config
from rlhf_jax.data import pipeline
from rlhf_jax.data.preferences import hold_out, synthetic_task
from rlhf_jax.data.records import require_text
from rlhf_jax.models import save_pretrained
from rlhf_jax.models.build import causal_lm
from rlhf_jax.reward.train import _host, load_tokenizer_for
from rlhf_jax.workdir import Workdir

log = logging.getLogger(__name__)


def response_nll(params, batch, *, model):
    """Mean next-token NLL over ``loss_mask`` positions (float32 log-softmax)."""
    logits = model.apply({"params": params}, batch["ids"], attention_mask=batch["mask"]).logits
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, batch["ids"][:, 1:, None], axis=-1)[..., 0]
    weights = batch["loss_mask"][:, 1:].astype(jnp.float32)
    count = jnp.maximum(jnp.sum(weights), 1.0)
    loss = jnp.sum(nll * weights) / count
    return loss, ({"tokens": count}, {})


def read_sft_jsonl(path: str) -> list:
    """``{id, prompt, response}`` rows of a JSONL file; bad rows name the file and line."""
    rows = []
    with open(path) as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {line_number}: broken JSON ({err.msg})") from None
            rows.append({"id": str(row.get("id", f"sft-{line_number:06d}")),
                         "prompt": require_text(row, "prompt", file=path, row_index=line_number),
                         "response": require_text(row, "response", file=path,
                                                  row_index=line_number)})
    return rows


def sft_examples(config) -> tuple:
    """``(train, eval)`` demonstrations for the config."""
    if config.sft.train_file:
        rows = read_sft_jsonl(config.sft.train_file)
    elif config.data.source == "synthetic":
        rows = synthetic_task(config.data).sft_examples(config.data.synthetic.num_sft,
                                                        seed=config.data.synthetic.seed)
    else:
        raise ValueError("sft needs sft.train_file (JSONL of {prompt, response}) unless "
                         "data.source='synthetic'")
    return hold_out(rows, config.sft.eval_fraction, config.seed)


def train_sft(config, workdir: str) -> dict:
    """Run (or resume, or return the finished result of) an SFT stage in ``workdir``."""
    wd = Workdir(workdir)
    done = wd.read_json("result.json")
    if done is not None:
        return done
    if wd.is_writer:
        save_config(config, wd.file("config.json"))
    cfg, mesh = config.sft, sharding.make_mesh(**dict(config.mesh))
    tokenizer = load_tokenizer_for(config)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_rows, eval_rows = sft_examples(config)
    tokenize = functools.partial(pipeline.tokenize_sft, tokenizer=tokenizer,
                                 template=config.data.prompt_template,
                                 max_length=config.data.max_length)
    train, _ = tokenize(train_rows, source="sft train")
    evals, _ = tokenize(eval_rows, source="sft eval")
    model, params = causal_lm(config.model, jax.random.key(config.seed))
    steps_per_epoch = pipeline.steps_per_epoch(len(train), cfg.batch_size, jax.process_count())
    total = steps_per_epoch * cfg.epochs
    tx = training.make_optimizer(lr=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=total,
                                 weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm)
    shardings = training.state_shardings(model, mesh, tx, params)
    loss_fn = functools.partial(response_nll, model=model)
    batch_sh = sharding.batch_sharding(mesh)
    step_fn = training.make_train_step(loss_fn, tx, accum_steps=cfg.accum_steps,
                                       shardings=shardings, batch_sharding=batch_sh)
    eval_fn = jax.jit(lambda p, b: loss_fn(p, b)[0], in_shardings=(shardings.params, batch_sh))
    batches = functools.partial(pipeline.batches, collate=pipeline.collate_sft,
                                buckets=tuple(sorted(config.data.buckets)), pad_id=pad_id,
                                seed=config.seed, process_index=jax.process_index(),
                                process_count=jax.process_count())

    def evaluate(params):
        losses = [float(_host(eval_fn(params, sharding.shard_batch(b, mesh))))
                  for b in batches(evals, batch_size=cfg.eval_batch_size, train=False)]
        return {"loss": float(np.mean(losses))}

    ckpt = Checkpoints(wd.checkpoints, best_metric="neg_loss")
    with sharding.use_mesh(mesh):
        state = jax.jit(lambda p: training.init_state(p, tx), out_shardings=shardings)(
            jax.device_put(params, shardings.params))
        start = ckpt.latest_step() or 0
        if start:
            state = ckpt.restore(start, state)
        progress = tqdm(total=total, initial=start, desc="sft", disable=jax.process_index() != 0)
        for step in range(start, total):
            epoch, i = divmod(step, steps_per_epoch)
            if i == 0 or step == start:
                epoch_batches = batches(train, batch_size=cfg.batch_size, epoch=epoch)
            state, metrics = step_fn(state, sharding.shard_batch(epoch_batches[i], mesh))
            progress.update(1)
            if (step + 1) % cfg.log_every == 0:
                scalars = _host({k: v for k, v in metrics.items() if k != "per_example"})
                wd.log_metrics(step + 1, scalars)
                progress.set_postfix(loss=f"{scalars['loss']:.3f}")
            if (step + 1) % cfg.eval_every == 0 or step + 1 == total:
                metrics = evaluate(state.params)
                wd.log_metrics(step + 1, metrics, split="eval")
                ckpt.save(step + 1, state, {"neg_loss": -metrics["loss"]})
        progress.close()
        final = evaluate(state.params)
    ckpt.close()
    save_pretrained(model, state.params, wd.export, tokenizer=tokenizer)
    result = {"eval": final, "steps": total, "train_examples": len(train),
              "num_params": int(sum(x.size for x in jax.tree.leaves(state.params)))}
    wd.write_json("result.json", result)
    wd.close()
    return result
