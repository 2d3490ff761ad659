"""How each method of a study makes its policy from the SFT policy (``config.methods``).

The study (:mod:`rlhf_jax.study`) trains the SFT policy and the standard reward model once; each
name in ``config.methods`` is then one registered function (:data:`STUDY_METHODS`) that trains
its own policy in ``WORKDIR/<name>/`` from those, and returns where the policy's export is (and
its PPO curves, for the report). The paper's PPO-side variants stay in ``config.ppo_variants``
(:mod:`rlhf_jax.ppo.variants`); the methods here are the length-debiasing ones that followed
the paper:

- ``odin``: PPO on the quality head of an ODIN reward model (Chen et al. 2024 §4), trained in
  ``WORKDIR/rm_odin`` on the standard reward model's pairs;
- ``calibrated``: PPO on the standard reward model's calibrated reward ``r − b̂(len)`` (Huang et
  al. 2024; the study's ``rm.rm.calibration`` must be ``lowess``, fitted with it);
- ``grpo`` / ``dr_grpo``: group-relative estimators against the standard reward model
  (``study.group_size`` responses per prompt; Shao et al. 2024; Liu et al. 2025);
- ``dpo`` / ``rdpo`` / ``simpo``: the ``config.dpo`` stage on the reward model's preference
  pairs, with that loss (Rafailov et al. 2023; Park et al. 2024; Meng et al. 2024).

A new method is one function and one registry line.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

from rlhf_jax.config import ConfigError


@dataclasses.dataclass
class StudyContext:
    """What every method starts from: the study's config and workdir, the SFT policy's export and
    the standard reward model's workdir; ``again``: the resume options of the study."""

    config: object
    workdir: str
    sft_export: str
    rm_workdir: str
    again: dict

    def stage(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    @property
    def rm_export(self) -> str:
        return os.path.join(self.rm_workdir, "export")

    def ppo_config(self, reward_model: Optional[str] = None, **overrides):
        """``config.ppo`` from the SFT policy against ``reward_model`` (the standard one by
        default), with ``overrides`` (dotted keys)."""
        from rlhf_jax.study import _stage_config
        return _stage_config(self.config, "ppo", **{
            "model.init": self.sft_export, "reward.model": reward_model or self.rm_export,
            "reward.append_eos": self.config.rm.rm.append_eos, **overrides})


@dataclasses.dataclass(frozen=True)
class MethodOutput:
    export: str
    curves: Optional[list] = None   # PPO metrics rows, for the report's training curves


def run_ppo(ctx: StudyContext, name: str, config) -> MethodOutput:
    """Train ``config`` (a PPO stage) in ``WORKDIR/<name>``: its export and its curves."""
    from rlhf_jax.ppo.trainer import train_ppo
    from rlhf_jax.workdir import Workdir
    train_ppo(config, ctx.stage(name), **ctx.again)
    return MethodOutput(os.path.join(ctx.stage(name), "export"),
                        Workdir(ctx.stage(name)).read_metrics())


def odin(ctx: StudyContext, name: str) -> MethodOutput:
    """ODIN: a two-head reward model on the standard one's pairs (``rm.loss = "odin"``), then
    PPO on its quality head alone (``reward.head = "quality"``)."""
    from rlhf_jax.reward.train import train_reward_model
    from rlhf_jax.study import _stage_config
    rm = _stage_config(ctx.config, "rm", **{"rm.loss": "odin", "rm.calibration": "none"})
    train_reward_model(rm, ctx.stage("rm_odin"), **ctx.again)
    return run_ppo(ctx, name, ctx.ppo_config(os.path.join(ctx.stage("rm_odin"), "export"),
                                             **{"reward.head": "quality"}))


def calibrated(ctx: StudyContext, name: str) -> MethodOutput:
    """PPO on the standard reward model's LOWESS-calibrated reward, ``r − b̂(len)`` (the trend
    is fitted with that model: :func:`check_methods` requires ``rm.rm.calibration = lowess``)."""
    return run_ppo(ctx, name, ctx.ppo_config(**{"reward.calibration": "lowess"}))


def _group(estimator: str) -> Callable:
    def method(ctx: StudyContext, name: str) -> MethodOutput:
        from rlhf_jax.ppo.variants import PPO_VARIANTS
        config = ctx.ppo_config()
        with config.unlocked():
            PPO_VARIANTS[estimator](config)   # the estimator and its KL, as each paper has it
            config.ppo.group_size = ctx.config.study.group_size
        return run_ppo(ctx, name, config)
    method.__doc__ = (f"PPO's loop with the ``{estimator}`` variant (its estimator and KL, "
                      ":mod:`rlhf_jax.ppo.variants`) and ``study.group_size`` responses per "
                      "prompt: group-relative advantages, no value loss.")
    return method


def _direct(loss: str) -> Callable:
    def method(ctx: StudyContext, name: str) -> MethodOutput:
        from rlhf_jax.dpo.train import train_dpo
        from rlhf_jax.study import _stage_config
        own = dict(ctx.config.get("dpo_losses", {}).get(loss, {}))
        dpo = _stage_config(ctx.config, "dpo", **{"model.init": ctx.sft_export, "dpo.loss": loss,
                                                  **{f"dpo.{k}": v for k, v in own.items()}})
        train_dpo(dpo, ctx.stage(name), **ctx.again)
        return MethodOutput(os.path.join(ctx.stage(name), "export"))
    method.__doc__ = (f"The ``{loss}`` loss on the preference pairs, from the SFT policy "
                      f"(``config.dpo_losses.{loss}``: that loss's own ``dpo.*`` values).")
    return method


NEEDS_ITS_OWN_REWARD_MODEL = ("odin", "calibrated")
"""PPO variants that read a sibling reward-model run; in a study they are methods."""
PAIR_KEYS = ("source", "path", "train_split", "eval_split", "eval_fraction", "max_train_pairs",
             "max_eval_pairs", "max_length", "seed", "synthetic", "options")
"""The ``data`` keys that decide which preference pairs a stage reads."""

STUDY_METHODS = {"odin": odin, "calibrated": calibrated,
                 "grpo": _group("grpo"), "dr_grpo": _group("dr_grpo"),
                 "dpo": _direct("dpo"), "rdpo": _direct("rdpo"), "simpo": _direct("simpo")}
"""``config.methods`` → ``fn(ctx, name) -> MethodOutput``."""


def check_methods(config) -> tuple:
    """The study's methods (``config.methods``, none by default), checked before any training."""
    methods = tuple(config.get("methods", ()))
    unknown = [m for m in methods if m not in STUDY_METHODS]
    if unknown:
        raise ConfigError(f"config key 'methods' names {unknown}; expected names in "
                          f"{sorted(STUDY_METHODS)}")
    clash = set(methods) & set(config.ppo_variants)
    if clash:
        raise ConfigError(f"{sorted(clash)} are both a PPO variant and a method: one row each")
    elsewhere = set(config.ppo_variants) & set(NEEDS_ITS_OWN_REWARD_MODEL)
    if elsewhere:
        raise ConfigError(f"config.ppo_variants {sorted(elsewhere)} read a reward-model run the "
                          "study does not train; list them in config.methods instead")
    if any(m in ("grpo", "dr_grpo") for m in methods):
        group, batch = config.study.get("group_size", 0), config.ppo.ppo.batch_size
        if group < 2 or batch % group:
            raise ConfigError(f"study.group_size = {group}: the group methods need ≥ 2 "
                              f"responses per prompt dividing ppo.ppo.batch_size {batch}")
    if any(m in ("dpo", "rdpo", "simpo") for m in methods):
        if "dpo" not in config:
            raise ConfigError("config.methods has a DPO-family method but the config has no "
                              "'dpo' section (e.g. load_config('configs/synthetic/dpo.py'))")
        differ = [k for k in PAIR_KEYS if config.dpo.data.get(k) != config.rm.data.get(k)]
        if differ:
            raise ConfigError(f"dpo.data and rm.data differ in {differ}: the DPO methods must "
                              "train on the reward model's preference pairs")
    if "calibrated" in methods and config.rm.rm.calibration != "lowess":
        raise ConfigError("method 'calibrated' needs rm.rm.calibration = 'lowess' (the length "
                          "trend is fitted with the reward model)")
    return methods
