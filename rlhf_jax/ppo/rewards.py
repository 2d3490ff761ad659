"""Where a PPO step's sequence scores come from (``reward.kind``, :data:`REWARD_KINDS`).

- ``model``: a reward-model export, scored through
  :class:`rlhf_jax.reward.scoring.RewardScorer` (the text decoded, re-templated
  with ``reward.template`` and re-tokenised with the reward model's tokenizer);
- ``function``: ``reward.function = "module:name"``, a Python function of the
  prompt and response texts returning one finite score each (e.g.
  ``rlhf_jax.data.synthetic:gold_reward``);
- ``length_only`` (LPPO): no score here; the ``length_only`` shaper computes it
  from the response length inside the update.

A reward model named in ``reward.model`` is scored with every kind, as the reward
itself or as a monitor (``env/rm_score``).
"""

from __future__ import annotations

import importlib
from typing import Callable, Optional

import jax
import ml_collections
import numpy as np

from rlhf_jax.config import ConfigError
from rlhf_jax.models.build import (check_scalar_export, is_scalar_export, resolve_init_path,
                                   scalar_export_heads, scalar_model, tokenizer_for)
from rlhf_jax.reward.calibration import (CALIBRATION_FILE, CALIBRATIONS, load_calibration,
                                         response_lengths)
from rlhf_jax.reward.scoring import RewardScorer

REWARD_KINDS = ("model", "length_only", "function")


def import_reward_function(spec: str) -> Callable:
    """``"package.module:name"`` → the function ``name(prompts, responses) -> scores``."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"config key 'reward.function' = {spec!r}; expected 'module:function'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"config key 'reward.function' = {spec!r}: {err}") from None


def export_spec(init: str) -> ml_collections.ConfigDict:
    """A model spec that loads a previous stage's export as it was saved (float32)."""
    return ml_collections.ConfigDict({"init": init, "overrides": {}, "dtype": "float32",
                                      "param_dtype": "float32", "remat": "none"})


def reward_model_spec(reward_cfg) -> ml_collections.ConfigDict:
    """The frozen reward model's spec: its export, in ``reward.dtype`` / ``reward.param_dtype``."""
    spec = export_spec(reward_cfg.model)
    spec.dtype, spec.param_dtype = reward_cfg.dtype, reward_cfg.param_dtype
    return spec


class Rewards:
    """``rewards(prompts, responses) -> (raw scores [b], reward-model scores [b] or None)``.

    With a ``mesh`` the reward model's params are sharded over it by their logical axes and
    scoring is one sharded jit (:func:`rlhf_jax.reward.scoring.sharded_forward`)."""

    def __init__(self, reward_cfg, mesh=None):
        self.cfg = reward_cfg
        self.kind = reward_cfg.kind  # checked against REWARD_KINDS by trainer.validate
        if self.kind == "model" and not reward_cfg.model:
            raise ConfigError("config key 'reward.model' is empty: set the reward model's "
                              "export directory (or reward.kind='length_only')")
        self.function = (import_reward_function(reward_cfg.function) if self.kind == "function"
                         else None)
        self.scorer = None
        if reward_cfg.model:
            check_scalar_export(reward_cfg.model, role="config key 'reward.model'")
            model, params = reward_model_of(reward_cfg)
            params = jax.tree.map(lambda x: np.asarray(x, model.config.params_dtype), params)
            tokenizer = tokenizer_for(reward_cfg.tokenizer, reward_cfg.model)
            try:
                self.scorer = RewardScorer(model, params, tokenizer, template=reward_cfg.template,
                                           max_length=reward_cfg.max_length,
                                           buckets=reward_cfg.buckets,
                                           append_eos=reward_cfg.append_eos, mesh=mesh)
            except ValueError as err:
                raise ConfigError(f"reward model {reward_cfg.model}: {err}") from None
        self.calibration = calibration_of(reward_cfg)

    def __call__(self, prompts, responses) -> tuple[np.ndarray, Optional[np.ndarray]]:
        rm_scores = self.scorer(prompts, responses) if self.scorer is not None else None
        if self.calibration is not None:  # r − b̂(len): the stored length trend removed
            rm_scores = self.calibration.calibrate(rm_scores, response_lengths(responses))
        if self.kind == "model":
            return rm_scores, rm_scores
        if self.kind == "function":
            return function_scores(self.function, prompts, responses, self.cfg.function), rm_scores
        return np.zeros(len(responses), np.float32), rm_scores


def reward_model_of(reward_cfg) -> tuple:
    """``(ScalarModel, params)`` of the frozen reward model, reading ``reward.head``: ``sum``
    (the reward it was trained with), or, of an ODIN export (``rm.loss = "odin"``), its
    ``quality`` head alone (Chen et al. 2024 §4: the length head is dropped for RL) or its
    ``length`` head."""
    head = reward_cfg.get("head", "sum")
    if head not in ("sum", "quality", "length"):
        raise ConfigError(f"config key 'reward.head' = {head!r}; expected sum, quality or length")
    if head != "sum" and reward_cfg.get("calibration", "none") != "none":
        raise ConfigError(f"reward.calibration={reward_cfg.calibration!r} was fitted on the "
                          f"summed reward; it cannot calibrate reward.head={head!r}")
    path = resolve_init_path(reward_cfg.model)
    if head != "sum" and is_scalar_export(path) and scalar_export_heads(path) == 1:
        raise ConfigError(f"config key 'reward.head' = {head!r}: {path} is a one-head reward "
                          "model; a head needs an ODIN export (train-rm with rm.loss='odin'), "
                          "else use 'sum'")
    return scalar_model(reward_model_spec(reward_cfg), jax.random.key(0), heads=head)


def calibration_of(reward_cfg):
    """``reward.calibration``: ``none``, or ``lowess``, the length trend stored with the reward
    model's export (:mod:`rlhf_jax.reward.calibration`), which then replaces its scores by
    r − b̂(len) wherever they are used (the reward itself, or the ``env/rm_score`` monitor)."""
    method = reward_cfg.get("calibration", "none")
    if method not in CALIBRATIONS:
        raise ConfigError(f"config key 'reward.calibration' = {method!r}; expected one of "
                          f"{CALIBRATIONS}")
    if method == "none":
        return None
    if not reward_cfg.model:
        raise ConfigError("reward.calibration='lowess' calibrates a reward model's scores: set "
                          "reward.model")
    calibration = load_calibration(reward_cfg.model)
    if calibration is None:
        raise ConfigError(f"reward.calibration='lowess': {reward_cfg.model} has no "
                          f"{CALIBRATION_FILE}; train the reward model with "
                          "rm.calibration='lowess' (it is fitted on its eval pairs)")
    return calibration


def function_scores(fn, prompts, responses, name: str) -> np.ndarray:
    """Call a user reward function and check it returned one finite float per response."""
    scores = np.asarray(fn(prompts, responses), np.float32)
    if scores.shape != (len(responses),) or not np.all(np.isfinite(scores)):
        raise ValueError(f"reward function {name} must return {len(responses)} finite scores; "
                         f"got shape {scores.shape}")
    return scores
