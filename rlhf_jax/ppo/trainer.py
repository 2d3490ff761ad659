"""The PPO stage (``rlhf-jax ppo``): rollout → scores → reference log-probs → values → update.

Singhal et al. 2023 §2.2 (TRL 0.5 as the paper's ``train_loop`` drives it). Per
step, for a batch of prompts:

1. ``time/generation``: sample with the KV-cached sampler; cut each row at its
   length cap (:func:`rlhf_jax.ppo.rollout.length_caps`); with
   ``shaping.omit_long = "replace"``, rows without EOS take a random ended row's
   tokens (:func:`rlhf_jax.ppo.shaping.omit_long_replacement`);
2. ``time/score``: decode the text and score it (:mod:`rlhf_jax.ppo.rewards`); a
   replaced row is scored as the paper's code does, on its own prompt and
   ``"OMMITTED " + its own response``;
3. ``time/ref_logprobs`` and ``time/values``: one forward each;
4. ``time/update``: :func:`rlhf_jax.ppo.update.ppo_update`, one compiled call.

The models and compiled functions come from :mod:`rlhf_jax.ppo.roles`.
Everything a resumed run needs is in the :class:`~rlhf_jax.ppo.update.PPOState`
(params, optimizer state, β, the reward window, the PRNG key, the step; prompts
and caps follow from the seed and the step), checkpointed with orbax every
``ppo.save_every`` steps and on SIGTERM / SIGINT; a rerun in the same workdir continues
exactly.
"""

from __future__ import annotations

import math
import time
from typing import Optional

import jax
import numpy as np
from tqdm.auto import tqdm

from rlhf_jax import sharding
from rlhf_jax.checkpoint import Checkpoints
from rlhf_jax.config import ConfigError
from rlhf_jax.data import pipeline
from rlhf_jax.generate import left_pad, sample
from rlhf_jax.models import save_pretrained
from rlhf_jax.models.heads import lm_params
from rlhf_jax.models.transformer import CausalLM
from rlhf_jax.ppo import algo, rollout, shaping
from rlhf_jax.ppo.prompts import prompt_set
from rlhf_jax.ppo.rewards import REWARD_KINDS, Rewards
from rlhf_jax.ppo.roles import VALUE_MODELS, build_roles
from rlhf_jax.ppo.update import RATIO_SKIP_MODES, PPOState
from rlhf_jax.loop import stop_on_signal
from rlhf_jax.preemption import PreemptionGuard
from rlhf_jax.stage import (experiment_tokenizer, finish_stage, keep_latest, open_stage,
                            stage_label, stage_mesh)

PHASES = ("time/generation", "time/score", "time/ref_logprobs", "time/values", "time/update")


def validate(config) -> None:
    """Config errors found before any model is built; each names its key and the choices."""
    c, s, p, g = config, config.shaping, config.ppo, config.generation
    try:
        shaping.check_shapers(s.shapers)
    except ValueError as err:
        raise ConfigError(f"config key 'shaping.shapers': {err}") from None
    choices = [("shaping.omit_long", s.omit_long, shaping.OMIT_LONG_MODES),
               ("shaping.length_penalty_variant", s.length_penalty_variant,
                shaping.LENGTH_PENALTY_VARIANTS),
               ("ppo.value_model", p.value_model, VALUE_MODELS),
               ("ppo.ratio_skip", p.ratio_skip, RATIO_SKIP_MODES),
               ("reward.kind", c.reward.kind, REWARD_KINDS)]
    for key, value, allowed in choices:
        if value not in allowed:
            raise ConfigError(f"config key {key!r} = {value!r}; expected one of {allowed}")
    if p.advantage_estimator not in algo.ADVANTAGE_ESTIMATORS:
        raise ConfigError(f"config key 'ppo.advantage_estimator' = {p.advantage_estimator!r}; "
                          f"expected one of {tuple(algo.ADVANTAGE_ESTIMATORS)}")
    if algo.ADVANTAGE_ESTIMATORS[p.advantage_estimator].group and (
            p.group_size < 2 or p.batch_size % p.group_size):
        raise ConfigError(f"ppo.advantage_estimator={p.advantage_estimator!r} needs "
                          f"ppo.group_size ≥ 2 responses per prompt dividing ppo.batch_size "
                          f"{p.batch_size}; got {p.group_size}")
    if algo.ADVANTAGE_ESTIMATORS[p.advantage_estimator].group and p.value_model != "shared":
        raise ConfigError(f"ppo.advantage_estimator={p.advantage_estimator!r} uses no value "
                          "model: keep ppo.value_model='shared' (a separate one would be built "
                          "and run for nothing)")
    if p.batch_size % p.mini_batch_size:
        raise ConfigError(f"ppo.batch_size {p.batch_size} is not a multiple of "
                          f"ppo.mini_batch_size {p.mini_batch_size}")
    if p.batch_size % s.window_groups or p.batch_size // s.window_groups < 2:
        raise ConfigError(f"shaping.window_groups {s.window_groups} must split ppo.batch_size "
                          f"{p.batch_size} into equal groups of at least 2 rows (a sample std)")
    if c.reward.kind == "length_only" and "length_only" not in s.shapers:
        raise ConfigError("reward.kind='length_only' needs 'length_only' in shaping.shapers (LPPO)")
    if not 1 <= g.min_new_tokens < g.max_new_tokens:
        raise ConfigError("need 1 ≤ generation.min_new_tokens < generation.max_new_tokens "
                          "(caps are drawn from min … max − 1)")
    if g.cap_chunk < 1:
        raise ConfigError(f"generation.cap_chunk = {g.cap_chunk}; expected ≥ 1 rows per draw")


class PPOTrainer:
    """A PPO run's tokenizer, prompts, rewards, roles and the step that uses them."""

    def __init__(self, config, workdir: str):
        validate(config)
        self.config = config
        self.mesh = stage_mesh(config)
        self.tokenizer = experiment_tokenizer(config)
        self.pad_id = pipeline.pad_token_id(self.tokenizer)
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ConfigError("the policy tokenizer has no EOS token: PPO needs one to end responses")
        self.eos_id = int(eos)
        self.prompts = prompt_set(config, self.tokenizer)
        self.rewards = Rewards(config.reward, mesh=self.mesh)

    def build(self) -> PPOState:
        try:
            self.roles, state = build_roles(self.config, self.tokenizer, self.mesh,
                                            eos_id=self.eos_id, pad_id=self.pad_id)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return state

    def step_prompts(self, step: int) -> list:
        """The prompt indices of ``step``: seeded shuffles of the prompt set, epoch after epoch.
        With a group estimator (GRPO), ``batch_size / group_size`` prompts, each repeated
        ``group_size`` times in consecutive rows (one group per prompt)."""
        p = self.config.ppo
        group = p.group_size if algo.ADVANTAGE_ESTIMATORS[p.advantage_estimator].group else 1
        n, b = len(self.prompts), p.batch_size // group
        per_epoch = n // b
        epoch, i = divmod(step, per_epoch)
        order = np.random.default_rng([self.config.seed, epoch]).permutation(n)
        return np.repeat(order[i * b:(i + 1) * b], group).tolist()

    def length_caps(self, step: int) -> np.ndarray:
        g = self.config.generation
        return rollout.length_caps(self.config.ppo.batch_size, g.min_new_tokens,
                                   g.max_new_tokens, g.cap_chunk, [self.config.seed, step, 1])

    def generate(self, policy_lm_params, prompt_ids, prompt_mask, key):
        """``(tokens, mask)`` sampled in the rollout layout (:class:`~rlhf_jax.ppo.roles.Rollout`):
        the policy copied into it, prompts and KV cache over its batch axes; both come back on
        the training mesh (the sampler's log-probs are not used: the update recomputes them)."""
        c, rollout = self.config, self.roles.rollout
        params = rollout.params(policy_lm_params)  # prompt rows: this process's
        ids, mask = rollout.batch(prompt_ids, prompt_mask)
        with sharding.use_mesh(rollout.mesh, rollout.rules):
            out = sample(self.roles.lm, params, ids, mask, key,
                         max_new_tokens=c.generation.max_new_tokens - 1,
                         temperature=c.generation.temperature, top_k=c.generation.top_k,
                         top_p=c.generation.top_p, eos_id=self.eos_id, pad_id=self.pad_id)
        rows = sharding.batch_sharding(self.mesh)
        return jax.device_put(out.tokens, rows), jax.device_put(out.mask, rows)

    def run_step(self, state: PPOState):
        """One PPO iteration; returns ``(state, metrics, responses)`` with per-phase seconds."""
        c, roles, timings = self.config, self.roles, {}
        step = int(state.step)
        # every process pads the step's whole prompt batch (one width for all), then keeps its
        # own rows: prompts, their rollouts and their scoring are split over the processes
        batch_rows = [self.prompts[i] for i in self.step_prompts(step)]
        all_ids, all_mask = left_pad([r["ids"] for r in batch_rows], self.pad_id,
                                     c.generation.prompt_bucket)
        mine = sharding.process_rows(len(batch_rows))
        rows, prompt_ids, prompt_mask = batch_rows[mine], all_ids[mine], all_mask[mine]
        t0 = time.perf_counter()
        sampled, sampled_mask = self.generate(lm_params(state.params["policy"]), prompt_ids,
                                              prompt_mask, jax.random.fold_in(state.key, 0))
        tokens, mask, lengths, ended = roles.cut(
            sampled, sampled_mask, sharding.shard_batch(self.length_caps(step)[mine], self.mesh))
        prompt_ids, prompt_mask = sharding.shard_batch((prompt_ids, prompt_mask), self.mesh)
        own_tokens, own_lengths = sharding.local_rows(tokens), sharding.local_rows(lengths)
        omitted = np.zeros(len(rows), bool)
        if c.shaping.omit_long == "replace":
            index = shaping.omit_long_replacement(ended, jax.random.fold_in(state.key, 2))
            omitted = sharding.local_rows(index) != np.arange(len(batch_rows))[mine]
            prompt_ids, prompt_mask, tokens, mask, lengths, ended = roles.take_rows(
                index, prompt_ids, prompt_mask, tokens, mask, lengths, ended)
        jax.block_until_ready(tokens)
        timings["time/generation"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        responses = [self.tokenizer.decode(t[:n], skip_special_tokens=True)
                     for t, n in zip(own_tokens, own_lengths)]
        scored = [shaping.OMITTED_PREFIX + r if o else r for r, o in zip(responses, omitted)]
        raw, rm_scores = self.rewards([r["text"] for r in rows], scored)
        timings["time/score"] = time.perf_counter() - t0
        args = (prompt_ids, prompt_mask, tokens, mask)
        t0 = time.perf_counter()
        ref_logprobs = jax.block_until_ready(roles.ref_forward(roles.reference_params(state),
                                                               *args))
        timings["time/ref_logprobs"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        logprobs, values = jax.block_until_ready(roles.policy_forward(state.params, *args))
        timings["time/values"] = time.perf_counter() - t0
        batch = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "response_ids": tokens,
                 "mask": mask, "logprobs": logprobs, "ref_logprobs": ref_logprobs,
                 "values": values, "raw_scores": sharding.shard_batch(raw, self.mesh),
                 "lengths": lengths, "ended": ended}
        t0 = time.perf_counter()
        with sharding.use_mesh(self.mesh):
            state, metrics = roles.update(
                state, jax.device_put(batch, sharding.batch_sharding(self.mesh)))
        metrics = sharding.to_host(metrics)
        timings["time/update"] = time.perf_counter() - t0
        total = sum(timings.values())
        metrics = {k: float(v) for k, v in metrics.items()}
        if rm_scores is not None:
            metrics["env/rm_score"] = float(np.mean(sharding.all_processes(rm_scores)))
        if c.shaping.omit_long == "replace":
            metrics["env/omitted_fraction"] = float(np.mean(sharding.all_processes(omitted)))
        tokens_sampled = float(np.sum(sharding.all_processes(own_lengths)))
        metrics.update(timings, **{"time/total": total, "time/tokens_per_s": tokens_sampled / total})
        check_finite(metrics)
        return state, metrics, responses


def check_finite(metrics: dict) -> None:
    """Stop (before any checkpoint of this step) when a loss or statistic is not finite."""
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"non-finite {', '.join(sorted(bad))} in this PPO step; the last "
                                 "good checkpoint is kept")


def train_ppo(config, workdir: str, *, stop_after: Optional[int] = None,
              resume_with_changes: bool = False) -> dict:
    """Run (or resume, or return the finished result of) a PPO stage in ``workdir``.

    ``stop_after``: stop once this many steps are done in total (for tests of
    resumption); the run stays resumable. ``resume_with_changes``: see
    :func:`rlhf_jax.workdir.start_stage`. On SIGTERM / SIGINT the step in progress is finished,
    saved, and :class:`~rlhf_jax.preemption.Preempted` raised. The summary and ``history`` are
    of the whole run, from ``metrics.jsonl`` (cut back to the checkpoint on resume), so a
    resumed run reports what an uninterrupted one would.
    """
    wd, done = open_stage(config, workdir, resume_with_changes=resume_with_changes)
    if done is not None:
        return done
    trainer = PPOTrainer(config, workdir)
    state = trainer.build()
    ckpt = Checkpoints(wd.checkpoints, keep_latest=keep_latest(config))
    start, state = ckpt.restore_latest(state)
    wd.resume_metrics(start)
    total = config.ppo.steps
    end = min(total, stop_after) if stop_after is not None else total
    label = stage_label("ppo", workdir)
    progress = tqdm(total=total, initial=start, desc=label, disable=jax.process_index() != 0)
    with PreemptionGuard() as guard:
        for step in range(start, end):
            state, metrics, _ = trainer.run_step(state)
            wd.log_metrics(step + 1, metrics)
            progress.update(1)
            progress.set_postfix(
                score=f"{metrics.get('env/rm_score', metrics['env/reward_raw']):.3f}",
                len=f"{metrics['env/response_length']:.1f}", kl=f"{metrics['objective/kl']:.3f}")
            if (step + 1) % config.ppo.save_every == 0 or step + 1 == end:
                ckpt.save(step + 1, state)
            if step + 1 < end and guard.should_stop():
                stop_on_signal(ckpt, step + 1, state, label, guard, progress)
    progress.close()
    ckpt.close()
    history = wd.read_metrics("train")
    if end < total:
        return {"stopped_at": end, "history": history}
    save_pretrained(CausalLM(trainer.roles.policy_model.config), lm_params(state.params["policy"]),
                    wd.export, tokenizer=trainer.tokenizer, base_model=config.model.init)
    first, last = history[:max(1, len(history) // 10)], history[-max(1, len(history) // 10):]
    summary = {k: {"first": float(np.mean([r[k] for r in first])),
                   "last": float(np.mean([r[k] for r in last]))}
               for k in ("env/reward_raw", "env/rm_score", "env/response_length", "objective/kl",
                         "objective/kl_coef", "env/eos_fraction") if history and k in history[0]}
    result = {"steps": total, "summary": summary, "history": history}
    if ckpt.set_aside:
        result["checkpoints_set_aside"] = [{"step": s, "why": w} for s, w in ckpt.set_aside]
    return finish_stage(wd, result)
