"""The PPO stage (``rlhf-jax ppo``): rollout → reference log-probs → values → shaped rewards → PPO epochs.

Singhal et al. 2023 §2.2 (TRL 0.5 defaults): the policy starts from an SFT
checkpoint and carries a value head on its trunk (``ppo.value_model = "shared"``)
or trains a separate value model initialised from the reward model
(``"separate"``); the frozen reference is the initial policy. Per step, for a
batch of prompts:

1. ``time/generation``: sample with the KV-cached sampler, cut at a cap drawn from
   ``[min_new_tokens, max_new_tokens)``;
2. ``time/score``: decode the text, re-template and re-tokenise it for the reward
   model and score it (or compute a length-only reward);
3. ``time/ref_logprobs``: reference log-probs of the response tokens;
4. ``time/values``: the policy's own log-probs and values;
5. ``time/update``: one jitted, sharded function that shapes the scores
   (:mod:`rlhf_jax.ppo.shaping`), forms per-token rewards ``−β·KL`` (+ score at
   the last token), GAE, whitened advantages, then ``ppo_epochs`` × minibatches of
   clipped policy + value updates as a ``lax.scan``, and the adaptive KL update.

Everything a resumed run needs is in :class:`PPOState` (params, optimizer state,
β, the reward window, the PRNG key, the step; prompts and length caps follow
from the seed and the step), checkpointed with orbax every ``ppo.save_every``
steps; a rerun in the same workdir continues exactly.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import Callable, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from rlhf_jax import sharding, training
from rlhf_jax.checkpoint import Checkpoints
from rlhf_jax.config import ConfigError
from rlhf_jax.data import pipeline
from rlhf_jax.reward.scoring import RewardScorer
from rlhf_jax.generate import left_pad, sample
from rlhf_jax.models import save_pretrained
from rlhf_jax.models.build import causal_lm, load_tokenizer_for, scalar_model, tokenizer_for
from rlhf_jax.models.heads import PolicyWithValue, ScalarModel, lm_params
from rlhf_jax.models.transformer import CausalLM
from rlhf_jax.ppo import algo, rollout, shaping
from rlhf_jax.ppo.prompts import prompt_set
from rlhf_jax.workdir import Workdir, start_stage

log = logging.getLogger(__name__)

PHASES = ("time/generation", "time/score", "time/ref_logprobs", "time/values", "time/update")


@flax.struct.dataclass
class PPOState:
    """All a PPO run carries from step to step (and checkpoints)."""

    step: jax.Array
    params: dict          # {"policy": ...} (+ {"value": ...} with a separate value model)
    opt_state: optax.OptState
    kl_coef: jax.Array
    window: shaping.RewardWindow
    key: jax.Array


# ----- the update: pure, jitted -----------------------------------------------------------------


def shape_scores(cfg, raw_scores, lengths, ended, window, key):
    """Apply the configured shaping; returns ``(scores, sample_weight, replacement_index)``."""
    s = cfg.shaping
    scores = raw_scores
    if s.name == "reward_scaling":
        scores = shaping.reward_scaling(scores, window, s.scaling_clip)
    elif s.name == "length_penalty":
        scores = shaping.length_penalty(scores, lengths, window, s.target_length, s.length_penalty_variant)
    elif s.name == "length_only":
        scores = shaping.length_only_reward(lengths, s.target_length)
    if s.eos_penalty:
        scores = shaping.eos_penalty(scores, ended, s.eos_penalty)
    if s.overlong_buffer:
        scores = shaping.overlong_penalty(scores, lengths, cfg.generation.max_new_tokens - 1,
                                          s.overlong_buffer, s.overlong_penalty)
    b = raw_scores.shape[0]
    weight, index = jnp.ones(b, jnp.float32), jnp.arange(b)
    if s.omit_long == "mask":
        weight = shaping.omit_long_mask(ended)
    elif s.omit_long == "replace":
        index = shaping.omit_long_replacement(ended, key)
    return scores, weight, index


def ppo_loss(params, mb, *, policy_model, value_model, cfg):
    """``pg + vf_coef·vf − entropy_coef·H`` on one minibatch, with diagnostics."""
    p = cfg.ppo
    shared = value_model is None
    logprobs, values, entropy = rollout.policy_outputs(
        policy_model, params["policy"], mb["prompt_ids"], mb["prompt_mask"], mb["response_ids"],
        mb["mask"], with_values=shared, with_entropy=True)
    if not shared:
        values = rollout.scalar_values(value_model, params["value"], mb["prompt_ids"],
                                       mb["prompt_mask"], mb["response_ids"], mb["mask"])
    mask = mb["mask"].astype(jnp.float32)
    pg, clip_frac, approx_kl = algo.policy_loss(logprobs, mb["logprobs"], mb["advantages"], mask,
                                                p.clip_range)
    vf, vf_clip_frac = algo.value_loss(values, mb["values"], mb["returns"], mask, p.clip_range_value)
    ent = algo.masked_mean(entropy, mask)
    loss = pg + p.vf_coef * vf - p.entropy_coef * ent
    ratio = algo.masked_mean(jnp.exp(logprobs - mb["logprobs"]), mask)
    return loss, {"loss/policy": pg, "loss/value": vf, "loss/total": loss, "policy/entropy": ent,
                  "policy/clipfrac": clip_frac, "policy/approxkl": approx_kl,
                  "val/clipfrac": vf_clip_frac, "policy/ratio": ratio}


def ppo_update(state: PPOState, batch: dict, *, policy_model, value_model, tx, cfg):
    """Shaping, rewards, GAE and ``ppo_epochs × minibatches`` updates: one jitted call."""
    p = cfg.ppo
    key, shaping_key, perm_key = jax.random.split(state.key, 3)
    window = state.window.push(batch["raw_scores"])
    scores, weight, index = shape_scores(cfg, batch["raw_scores"], batch["lengths"],
                                         batch["ended"], window, shaping_key)
    rows = {k: batch[k][index] for k in ("prompt_ids", "prompt_mask", "response_ids", "mask",
                                         "logprobs", "ref_logprobs", "values")}
    scores = scores[index]
    mask = rows["mask"].astype(jnp.float32) * weight[:, None]
    kl = algo.kl_estimate(rows["logprobs"], rows["ref_logprobs"], p.kl_estimator) * mask
    rewards = algo.token_rewards(scores, kl, mask, state.kl_coef)
    if p.whiten_rewards:
        rewards = algo.masked_whiten(rewards, mask, shift_mean=False) * mask
    advantages, returns = algo.gae(rewards, rows["values"], mask, p.gamma, p.lam)
    if p.whiten_advantages:
        advantages = algo.masked_whiten(advantages, mask) * mask
    data = {**rows, "mask": mask, "advantages": advantages, "returns": returns}
    b = mask.shape[0]
    n_mb = b // p.mini_batch_size
    perms = jnp.stack([jax.random.permutation(k, b) for k in jax.random.split(perm_key, p.ppo_epochs)])
    order = perms.reshape(p.ppo_epochs * n_mb, p.mini_batch_size)
    loss_fn = functools.partial(ppo_loss, policy_model=policy_model, value_model=value_model, cfg=cfg)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def minibatch(carry, idx):
        params, opt_state = carry
        mb = {k: v[idx] for k, v in data.items()}
        (_, stats), grads = grad_fn(params, mb)
        updates, new_opt = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        skip = stats["policy/ratio"] > p.ratio_threshold  # a runaway ratio: drop this minibatch
        params = jax.tree.map(lambda a, b_: jnp.where(skip, a, b_), params, new_params)
        opt_state = jax.tree.map(lambda a, b_: jnp.where(skip, a, b_), opt_state, new_opt)
        stats = {**stats, "policy/skipped": skip.astype(jnp.float32),
                 "policy/grad_norm": optax.tree.norm(grads)}
        return (params, opt_state), stats

    (params, opt_state), stats = jax.lax.scan(minibatch, (state.params, state.opt_state), order)
    stats = jax.tree.map(jnp.mean, stats)
    sample_kl = jnp.sum(kl, axis=1)
    mean_kl = jnp.sum(sample_kl * weight) / jnp.maximum(jnp.sum(weight), 1.0)
    if p.adaptive_kl:
        kl_coef = algo.adaptive_kl_update(state.kl_coef, mean_kl, b, p.kl_target, p.kl_horizon)
    else:
        kl_coef = state.kl_coef
    metrics = {**stats, "objective/kl": mean_kl, "objective/kl_coef": state.kl_coef,
               "env/score_shaped": jnp.mean(scores), "env/reward_raw": jnp.mean(batch["raw_scores"]),
               "env/response_length": jnp.mean(batch["lengths"].astype(jnp.float32)),
               "env/eos_fraction": jnp.mean(batch["ended"].astype(jnp.float32)),
               "ppo/returns": algo.masked_mean(returns, mask),
               "ppo/values": algo.masked_mean(rows["values"], mask),
               "ppo/advantages_raw_mean": algo.masked_mean(advantages, mask)}
    new_state = PPOState(step=state.step + 1, params=params, opt_state=opt_state, kl_coef=kl_coef,
                         window=window, key=key)
    return new_state, metrics


# ----- the stage ---------------------------------------------------------------------------------


REWARD_KINDS = ("model", "length_only", "function")


def import_reward_function(spec: str) -> Callable:
    """``"package.module:name"`` → the function ``name(prompts, responses) -> scores``."""
    import importlib
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"config key 'reward.function' = {spec!r}; expected 'module:function'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"config key 'reward.function' = {spec!r}: {err}") from None


class Scorer:
    """Sequence rewards of (prompt, response) texts.

    ``reward.kind``: ``"model"`` — a reward model's scores, the text re-templated
    and re-tokenised for it; ``"function"`` — ``reward.function`` (``module:name``),
    a Python function of the prompt and response texts returning one score each;
    ``"length_only"`` (LPPO) — the reward comes from the response length (in the
    update). A reward model set in ``reward.model`` is scored in every case
    (``env/rm_score``): the reward itself or a monitor.
    """

    def __init__(self, cfg, mesh):
        self.cfg, self.mesh = cfg.reward, mesh
        self.kind = cfg.reward.kind
        if self.kind not in REWARD_KINDS:
            raise ConfigError(f"config key 'reward.kind' = {self.kind!r}; expected one of "
                              f"{REWARD_KINDS}")
        self.function = import_reward_function(cfg.reward.function) if self.kind == "function" \
            else None
        if self.kind == "model" and not cfg.reward.model:
            raise ConfigError("config key 'reward.model' is empty: set the reward model's "
                              "export directory (or reward.kind='length_only')")
        self.enabled = bool(cfg.reward.model)
        if self.enabled:
            model, params = scalar_model(ml_spec(cfg.reward.model), jax.random.key(0))
            tokenizer = tokenizer_for(cfg.reward.tokenizer, cfg.reward.model)
            try:
                self.score = RewardScorer(model, jax.device_put(params), tokenizer,
                                          template=cfg.reward.template,
                                          max_length=cfg.reward.max_length,
                                          buckets=cfg.reward.buckets,
                                          append_eos=cfg.reward.append_eos)
            except ValueError as err:
                raise ConfigError(f"reward model {cfg.reward.model}: {err}") from None

    def __call__(self, prompts, responses) -> Optional[np.ndarray]:
        """Reward-model scores ``[b]``, or ``None`` without a reward model."""
        return self.score(prompts, responses) if self.enabled else None


def ml_spec(init: str):
    import ml_collections
    return ml_collections.ConfigDict({"init": init, "overrides": {}, "dtype": "float32",
                                      "param_dtype": "float32", "remat": "none"})


class PPOTrainer:
    """Builds the roles, compiled functions and data of a PPO run."""

    def __init__(self, config, workdir: str):
        self.config = config
        self.workdir = Workdir(workdir)
        self.mesh = sharding.make_mesh(**dict(config.mesh))
        self.tokenizer = load_tokenizer_for(config)
        self.pad_id = pipeline.pad_token_id(self.tokenizer)
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ConfigError("the policy tokenizer has no EOS token: PPO needs one to end responses")
        self.eos_id = int(eos)
        self._validate()
        self.prompts = prompt_set(config, self.tokenizer)
        self.scorer = Scorer(config, self.mesh)

    def _validate(self):
        c = self.config
        if c.shaping.name not in shaping.SHAPERS:
            raise ConfigError(f"config key 'shaping.name' = {c.shaping.name!r}; expected one of "
                              f"{shaping.SHAPERS}")
        if c.shaping.omit_long not in ("off", "mask", "replace"):
            raise ConfigError(f"config key 'shaping.omit_long' = {c.shaping.omit_long!r}; expected "
                              "'off', 'mask' or 'replace'")
        if c.ppo.value_model not in ("shared", "separate"):
            raise ConfigError(f"config key 'ppo.value_model' = {c.ppo.value_model!r}; expected "
                              "'shared' or 'separate'")
        if c.ppo.batch_size % c.ppo.mini_batch_size:
            raise ConfigError(f"ppo.batch_size {c.ppo.batch_size} is not a multiple of "
                              f"ppo.mini_batch_size {c.ppo.mini_batch_size}")
        if c.reward.kind == "length_only" and c.shaping.name != "length_only":
            raise ConfigError("reward.kind='length_only' needs shaping.name='length_only' (LPPO)")
        if not 1 <= c.generation.min_new_tokens < c.generation.max_new_tokens:
            raise ConfigError("need 1 ≤ generation.min_new_tokens < generation.max_new_tokens "
                              "(caps are drawn from [min, max))")

    def build(self) -> PPOState:
        c = self.config
        key = jax.random.key(c.seed)
        lm, lm_p = causal_lm(c.model, key)
        if len(self.tokenizer) > lm.config.vocab_size:
            raise ConfigError(f"policy tokenizer has {len(self.tokenizer)} tokens, the model's "
                              f"vocab_size is {lm.config.vocab_size}")
        self.lm = CausalLM(lm.config)
        self.reference = self.load_reference(lm_p)
        if c.ppo.value_model == "shared":
            self.policy_model = PolicyWithValue(lm.config)
            head = PolicyWithValue(lm.config).init(jax.random.key(1), jnp.zeros((1, 2), jnp.int32))
            params = {"policy": {**lm_p, "value_head": flax.linen.unbox(head)["params"]["value_head"]}}
            self.value_model = None
        else:
            self.policy_model = self.lm
            if not c.reward.model:
                raise ConfigError("ppo.value_model='separate' initialises the value model from "
                                  "reward.model, which is empty")
            self.value_model, value_p = scalar_model(ml_spec(c.reward.model), key, readout="all")
            self.value_model = ScalarModel(self.value_model.config, readout="all")
            params = {"policy": lm_p, "value": value_p}
        p = c.ppo
        updates = c.ppo.steps * p.ppo_epochs * (p.batch_size // p.mini_batch_size)
        self.tx = training.optimizer_for(p, updates)
        state = PPOState(step=jnp.zeros((), jnp.int32), params=params,
                         opt_state=self.tx.init(params), kl_coef=jnp.float32(p.init_kl_coef),
                         window=shaping.RewardWindow.empty(c.shaping.window),
                         key=jax.random.fold_in(key, 7))
        self.shardings = self.state_shardings(state)
        batch_sh = sharding.batch_sharding(self.mesh)
        with sharding.use_mesh(self.mesh):
            state = jax.device_put(state, self.shardings)
            self.reference = jax.device_put(self.reference, self.shardings.params["policy"]
                                            if self.value_model is not None else
                                            lm_params(self.shardings.params["policy"]))
        self.update = jax.jit(functools.partial(ppo_update, policy_model=self.policy_model,
                                                value_model=self.value_model, tx=self.tx, cfg=c),
                              in_shardings=(self.shardings, batch_sh),
                              out_shardings=(self.shardings, None), donate_argnums=(0,))
        self.ref_forward = jax.jit(lambda params, *a: rollout.policy_outputs(
            self.lm, params, *a, with_values=False)[0])
        if self.value_model is None:
            self.policy_forward = jax.jit(lambda params, *a: rollout.policy_outputs(
                self.policy_model, params["policy"], *a, with_values=True)[:2])
        else:
            self.policy_forward = jax.jit(lambda params, *a: (
                rollout.policy_outputs(self.lm, params["policy"], *a, with_values=False)[0],
                rollout.scalar_values(self.value_model, params["value"], *a)))
        self.cut = jax.jit(functools.partial(rollout.cut_to_length, eos_ids=(self.eos_id,),
                                             pad_id=self.pad_id))
        return state

    def load_reference(self, policy_params):
        """The frozen reference: a copy of the initial policy, or ``ppo.reference`` (which must match it)."""
        path = self.config.ppo.reference
        if not path:
            return jax.tree.map(jnp.copy, policy_params)  # a copy: the state is donated
        _, reference = causal_lm(ml_spec(path), jax.random.key(0))
        check_same_shapes(policy_params, reference, f"reference {path}")
        return reference

    def state_shardings(self, state: PPOState) -> PPOState:
        """Params and optimizer state over the mesh by their logical axes; the rest replicated."""
        param_sh = {"policy": sharding.param_shardings(self.policy_model, self.mesh)}
        if self.value_model is not None:
            param_sh["value"] = sharding.param_shardings(self.value_model, self.mesh)
        replicated = sharding.replicated(self.mesh)
        opt_sh = sharding.optimizer_state_shardings(self.tx, jax.eval_shape(lambda: state.opt_state),
                                                    param_sh, self.mesh)
        return PPOState(step=replicated, params=param_sh, opt_state=opt_sh, kl_coef=replicated,
                        window=jax.tree.map(lambda _: replicated, state.window), key=replicated)

    def step_prompts(self, step: int) -> list:
        """The prompt indices of ``step``: seeded shuffles of the prompt set, epoch after epoch."""
        n, b = len(self.prompts), self.config.ppo.batch_size
        per_epoch = n // b
        epoch, i = divmod(step, per_epoch)
        order = np.random.default_rng([self.config.seed, epoch]).permutation(n)
        return order[i * b:(i + 1) * b].tolist()

    def length_cap(self, step: int) -> int:
        g = self.config.generation
        return int(np.random.default_rng([self.config.seed, step, 1]).integers(
            g.min_new_tokens, g.max_new_tokens))

    def run_step(self, state: PPOState):
        """One PPO iteration; returns ``(state, metrics)`` with per-phase seconds."""
        c, timings = self.config, {}
        step = int(state.step)
        rows = [self.prompts[i] for i in self.step_prompts(step)]
        prompt_ids, prompt_mask = left_pad([r["ids"] for r in rows], self.pad_id,
                                           c.generation.prompt_bucket)
        sample_key = jax.random.fold_in(state.key, 0)
        t0 = time.perf_counter()
        out = sample(self.lm, lm_params(state.params["policy"]), prompt_ids, prompt_mask,
                     sample_key, max_new_tokens=c.generation.max_new_tokens - 1,
                     temperature=c.generation.temperature, top_k=c.generation.top_k,
                     top_p=c.generation.top_p, eos_id=self.eos_id, pad_id=self.pad_id)
        tokens, mask, lengths, ended = self.cut(out.tokens, out.mask, self.length_cap(step))
        jax.block_until_ready(tokens)
        timings["time/generation"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        host_tokens, host_lengths = np.asarray(tokens), np.asarray(lengths)
        responses = [self.tokenizer.decode(t[:n], skip_special_tokens=True)
                     for t, n in zip(host_tokens, host_lengths)]
        prompt_texts = [r["text"] for r in rows]
        rm_scores = self.scorer(prompt_texts, responses)
        if c.reward.kind == "model":
            raw = rm_scores
        elif c.reward.kind == "function":
            raw = function_scores(self.scorer.function, prompt_texts, responses, c.reward.function)
        else:
            raw = np.zeros(len(rows), np.float32)
        timings["time/score"] = time.perf_counter() - t0
        args = (jnp.asarray(prompt_ids), jnp.asarray(prompt_mask), tokens, mask)
        t0 = time.perf_counter()
        ref_logprobs = jax.block_until_ready(self.ref_forward(self.reference, *args))
        timings["time/ref_logprobs"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        logprobs, values = jax.block_until_ready(self.policy_forward(state.params, *args))
        timings["time/values"] = time.perf_counter() - t0
        batch = {"prompt_ids": args[0], "prompt_mask": args[1], "response_ids": tokens,
                 "mask": mask, "logprobs": logprobs, "ref_logprobs": ref_logprobs,
                 "values": values, "raw_scores": jnp.asarray(raw), "lengths": lengths,
                 "ended": ended}
        t0 = time.perf_counter()
        with sharding.use_mesh(self.mesh):
            state, metrics = self.update(state, sharding.shard_batch(batch, self.mesh))
        metrics = sharding.to_host(metrics)
        timings["time/update"] = time.perf_counter() - t0
        total = sum(timings.values())
        tokens_generated = float(np.sum(host_lengths))
        metrics = {k: float(v) for k, v in metrics.items()}
        if rm_scores is not None:
            metrics["env/rm_score"] = float(np.mean(rm_scores))
        metrics.update(timings, **{"time/total": total, "time/tokens_per_s": tokens_generated / total})
        check_finite(metrics)
        return state, metrics, responses


def function_scores(fn, prompts, responses, name: str) -> np.ndarray:
    """Call a user reward function and check it returned one finite float per response."""
    scores = np.asarray(fn(prompts, responses), np.float32)
    if scores.shape != (len(responses),) or not np.all(np.isfinite(scores)):
        raise ValueError(f"reward function {name} must return {len(responses)} finite scores; "
                         f"got shape {scores.shape}")
    return scores


def check_same_shapes(expected, actual, what: str) -> None:
    """``actual`` must have ``expected``'s parameters with the same shapes; the first difference is named."""
    want = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    got = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(actual)}
    for name in sorted(set(want) | set(got)):
        if want.get(name) != got.get(name):
            raise ConfigError(f"{what} does not match the policy: parameter {name} has shape "
                              f"{got.get(name)}, the policy's is {want.get(name)}")


def check_finite(metrics: dict) -> None:
    """Stop (before any checkpoint of this step) when a loss or statistic is not finite."""
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"non-finite {', '.join(sorted(bad))} in this PPO step; the last "
                                 "good checkpoint is kept")


def train_ppo(config, workdir: str, *, stop_after: Optional[int] = None) -> dict:
    """Run (or resume, or return the finished result of) a PPO stage in ``workdir``.

    ``stop_after``: stop once this many steps are done in total (for tests of
    resumption); the run stays resumable.
    """
    wd, done = start_stage(config, workdir)
    if done is not None:
        log.info("%s already finished; delete its result.json to rerun", workdir)
        return done
    trainer = PPOTrainer(config, workdir)
    state = trainer.build()
    ckpt = Checkpoints(wd.checkpoints)
    start = ckpt.latest_step() or 0
    if start:
        state = ckpt.restore(start, state)
    total = config.ppo.steps
    end = min(total, stop_after) if stop_after is not None else total
    progress = tqdm(total=total, initial=start, desc="ppo", disable=jax.process_index() != 0)
    history = []
    for step in range(start, end):
        state, metrics, _ = trainer.run_step(state)
        history.append(metrics)
        wd.log_metrics(step + 1, metrics)
        progress.update(1)
        progress.set_postfix(score=f"{metrics.get('env/rm_score', metrics['env/reward_raw']):.3f}",
                             len=f"{metrics['env/response_length']:.1f}",
                             kl=f"{metrics['objective/kl']:.3f}")
        if (step + 1) % config.ppo.save_every == 0 or step + 1 == end:
            ckpt.save(step + 1, state)
    progress.close()
    ckpt.close()
    if end < total:
        return {"stopped_at": end, "history": history}
    save_pretrained(trainer.lm, lm_params(state.params["policy"]), wd.export,
                    tokenizer=trainer.tokenizer)
    logged = wd.read_metrics("train")
    first, last = logged[:max(1, len(logged) // 10)], logged[-max(1, len(logged) // 10):]
    summary = {k: {"first": float(np.mean([r[k] for r in first])),
                   "last": float(np.mean([r[k] for r in last]))}
               for k in ("env/reward_raw", "env/rm_score", "env/response_length", "objective/kl",
                         "objective/kl_coef", "env/eos_fraction") if k in logged[0]}
    result = {"steps": total, "summary": summary, "history": history}
    wd.write_json("result.json", result)
    wd.close()
    return result

