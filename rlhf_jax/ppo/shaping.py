"""Reward shaping: the paper's PPO-side interventions and the length-only reward (Singhal et al. 2023 §4.1, §5).

Every shaper is one function ``shaper(scores [b], inputs: ShapingInputs, cfg) ->
scores [b]`` registered by name in :data:`SHAPERS` (:func:`register_shaper`);
``cfg`` is the config's ``shaping`` section. ``shaping.shapers`` lists the ones to
apply, in order (the paper's code applies the length penalty, then reward
scaling, when both are on). All are pure and jittable. To add one::

    @register_shaper("my_bonus")
    def my_bonus(scores, inputs, cfg):
        return scores + cfg.my_bonus * inputs.ended

(its config key added to ``shaping`` in your config file), then
``shaping.shapers = ("my_bonus",)``.

Registered here:

- ``reward_scaling``: ``r' = clip((r − μ)/σ, −c, c)``, c = 0.3 (the paper's code,
  after "Secrets of RLHF").
- ``length_penalty``: the paper code's ``r + 2σ·(1 − 0.01·len)`` (``variant="code"``,
  the default: what the runs used) or the text's ``r + (1 − len/N)·σ`` (``"paper"``).
- ``length_only`` (LPPO, §5): ``r = 1 − |len/N − 1|``, the reward model unused.
- beyond the paper: ``eos_penalty`` (``r − p`` without EOS) and ``overlong_penalty``
  (a soft linear penalty over the last ``buffer`` tokens before the cap).

``μ`` and ``σ`` come from :class:`RewardWindow`: the means of the last 10 batches'
reward means and sample standard deviations (``statistics.stdev``, n − 1), the
current batch included, as the paper's ``train_loop`` keeps them. The paper keeps
one window per process over its own 32 rows; ``shaping.window_groups`` splits the
batch into that many contiguous groups, each with its own window (2 reproduces
the paper's 2 processes × 32).

``omit_long`` (:data:`OMIT_LONG_MODES`) is not a score transform: it decides which
rows the update uses (see :func:`omit_long_replacement`).
"""

from __future__ import annotations

from typing import Callable

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class RewardWindow:
    """Per group, the last ``size`` batches' reward means and sample standard deviations (a ring)."""

    means: jax.Array   # [groups, size]
    stds: jax.Array    # [groups, size]
    count: jax.Array   # batches pushed

    @classmethod
    def empty(cls, size: int = 10, groups: int = 1) -> "RewardWindow":
        return cls(means=jnp.zeros((groups, size), jnp.float32),
                   stds=jnp.zeros((groups, size), jnp.float32), count=jnp.zeros((), jnp.int32))

    @property
    def groups(self) -> int:
        return self.means.shape[0]

    def push(self, scores) -> "RewardWindow":
        """Add each group's mean and sample standard deviation (n − 1) of this batch's ``scores``."""
        per_group = scores.astype(jnp.float32).reshape(self.groups, -1)  # contiguous rows
        mean = jnp.mean(per_group, axis=1)
        std = jnp.std(per_group, axis=1, ddof=1)
        slot = self.count % self.means.shape[1]
        return RewardWindow(means=self.means.at[:, slot].set(mean),
                            stds=self.stds.at[:, slot].set(std), count=self.count + 1)

    def statistics(self, rows: int):
        """``(μ [rows], σ [rows])``: each row's group's means over the filled slots."""
        filled = (jnp.arange(self.means.shape[1]) < self.count).astype(jnp.float32)
        n = jnp.maximum(jnp.sum(filled), 1.0)
        mean = jnp.sum(self.means * filled, axis=1) / n
        std = jnp.sum(self.stds * filled, axis=1) / n
        return jnp.repeat(mean, rows // self.groups), jnp.repeat(std, rows // self.groups)


@flax.struct.dataclass
class ShapingInputs:
    """What a shaper may read besides the scores: ``lengths [b]`` (response tokens, EOS
    included), ``ended [b]`` (the response emitted EOS), the window's ``mean``/``std``
    ``[b]`` (this batch pushed), and ``max_length``, the sampler's token cap."""

    lengths: jax.Array
    ended: jax.Array
    mean: jax.Array
    std: jax.Array
    max_length: int = flax.struct.field(pytree_node=False)


Shaper = Callable[[jax.Array, ShapingInputs, object], jax.Array]
SHAPERS: dict[str, Shaper] = {}
"""Score shapers by name (``shaping.shapers``)."""


def register_shaper(name: str) -> Callable[[Shaper], Shaper]:
    """Register ``fn(scores, inputs, cfg) -> scores`` as shaper ``name``.

    Re-registering the same function (a re-imported module) replaces it; another
    function under a taken name is an error.
    """
    def register(fn: Shaper) -> Shaper:
        old = SHAPERS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__,
                                                                       fn.__qualname__):
            raise ValueError(f"a shaper named {name!r} is already registered "
                             f"({old.__module__}.{old.__qualname__})")
        SHAPERS[name] = fn
        return fn
    return register


def check_shapers(names) -> None:
    """Every name in ``names`` must be registered; the error lists the known ones."""
    unknown = [n for n in names if n not in SHAPERS]
    if unknown:
        raise ValueError(f"unknown shaper(s) {unknown}; registered: {sorted(SHAPERS)}")


def shape_scores(names, scores, inputs: ShapingInputs, cfg):
    """Apply the shapers ``names`` in order."""
    for name in names:
        scores = SHAPERS[name](scores, inputs, cfg)
    return scores


@register_shaper("reward_scaling")
def reward_scaling(scores, inputs: ShapingInputs, cfg):
    """``clip((r − μ)/σ, −c, c)``, ``c = cfg.scaling_clip`` (paper code: 0.3)."""
    c = cfg.scaling_clip
    return jnp.clip((scores - inputs.mean) / jnp.maximum(inputs.std, 1e-8), -c, c)


LENGTH_PENALTY_VARIANTS = ("code", "paper")


@register_shaper("length_penalty")
def length_penalty(scores, inputs: ShapingInputs, cfg):
    """``r + 2σ·(1 − 0.01·len)`` (``cfg.length_penalty_variant = "code"``, what the runs used)
    or ``r + (1 − len/N)·σ`` (``"paper"``, §4.1's text; ``N = cfg.target_length``)."""
    lengths = inputs.lengths.astype(jnp.float32)
    if cfg.length_penalty_variant == "code":
        return scores + 2.0 * inputs.std * (1.0 - 0.01 * lengths)
    if cfg.length_penalty_variant == "paper":
        return scores + (1.0 - lengths / cfg.target_length) * inputs.std
    raise ValueError(f"unknown length_penalty variant {cfg.length_penalty_variant!r}; expected "
                     f"one of {LENGTH_PENALTY_VARIANTS}")


@register_shaper("length_only")
def length_only_reward(scores, inputs: ShapingInputs, cfg):
    """LPPO (§5; the code's ``lensco``): ``r = 1 − |len/N − 1|``, highest at ``len = N``."""
    del scores
    return 1.0 - jnp.abs(inputs.lengths.astype(jnp.float32) / cfg.target_length - 1.0)


@register_shaper("eos_penalty")
def eos_penalty(scores, inputs: ShapingInputs, cfg):
    """``r − cfg.eos_penalty`` for responses that did not emit EOS (beyond the paper)."""
    return scores - cfg.eos_penalty * (1.0 - inputs.ended.astype(jnp.float32))


@register_shaper("overlong_penalty")
def overlong_penalty(scores, inputs: ShapingInputs, cfg):
    """Soft overlong penalty (beyond the paper): linear from 0 at ``cap − buffer`` to
    ``−cfg.overlong_penalty`` at the cap (``buffer = cfg.overlong_buffer``)."""
    buffer = max(cfg.overlong_buffer, 1)
    excess = jnp.clip((inputs.lengths.astype(jnp.float32) - (inputs.max_length - buffer)) / buffer,
                      0.0, 1.0)
    return scores - cfg.overlong_penalty * excess


OMIT_LONG_MODES = ("off", "mask", "replace")
"""``mask``: rows without EOS get weight 0 in the update (ours); ``replace``: the paper's
code (its ``omit_long``): such a row trains on a random ended row's tokens, but its
score is the reward model's on the original prompt and ``"OMMITTED " + response``."""

OMITTED_PREFIX = "OMMITTED "
"""What the paper's code prefixes to a replaced response's text before scoring it (sic)."""


def omit_long_replacement(ended, key):
    """For each row, the row whose tokens it trains on: itself if it ended, else a uniformly
    drawn row that ended (``random.choice(safeinds)``). With no ended row, every row keeps
    its own (the paper's code would fail there)."""
    b = ended.shape[0]
    logits = jnp.where(ended, 0.0, -jnp.inf)
    draws = jax.random.categorical(key, logits, shape=(b,))
    own = jnp.arange(b)
    return jnp.where(ended | ~jnp.any(ended), own, draws)
