"""The models of a PPO run, their shardings and compiled functions (Singhal et al. 2023 §2.2, TRL 0.5).

- **policy**: the SFT checkpoint, with a scalar value head on its trunk
  (``ppo.value_model = "shared"``, TRL's ``AutoModelForCausalLMWithValueHead``), or
  with a separate value model initialised from the reward model (``"separate"``);
- **reference**: frozen; the initial policy (a copy of its weights) or the
  checkpoint ``ppo.reference`` (checked against the policy's shapes). With LoRA
  (``model.lora_rank > 0``, the paper's setup) the reference is the policy's own frozen
  base with the adapters off (:func:`rlhf_jax.models.lora.without_adapters`): no copy;
- the optimizer (:func:`rlhf_jax.training.optimizer_for` of the ``ppo`` section).

:func:`build_roles` returns the :class:`Roles` and the initial
:class:`~rlhf_jax.ppo.update.PPOState`, placed on the mesh: params and optimizer
state by their logical axes, the rest replicated. :class:`Roles` holds the
compiled functions a step calls: the update (explicit in/out shardings, state
donated), the reference and policy forwards, the cut at the length caps and the
row gather of ``omit_long="replace"``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from rlhf_jax import sharding, training
from rlhf_jax.config import ConfigError
from rlhf_jax.models import lora
from rlhf_jax.models.build import causal_lm, init_some_params, scalar_model
from rlhf_jax.models.heads import PolicyWithValue, ScalarModel, lm_params
from rlhf_jax.models.transformer import CausalLM
from rlhf_jax.ppo import rollout, shaping
from rlhf_jax.ppo.rewards import export_spec
from rlhf_jax.ppo.update import PPOState, ppo_update
from rlhf_jax.stage import check_vocab

VALUE_MODELS = ("shared", "separate")


@dataclasses.dataclass
class Roles:
    """The run's models and compiled functions (see the module docstring)."""

    lm: CausalLM                      # the policy's LM without adapters (sampling, reference)
    policy_model: Any                 # PolicyWithValue (shared) or a CausalLM (separate)
    value_model: Optional[ScalarModel]
    reference: Optional[dict]         # frozen reference params on the mesh; None: the base
    tx: Any
    shardings: PPOState
    update: Callable                  # (state, batch) -> (state, metrics)
    ref_forward: Callable             # (ref params, prompt_ids, prompt_mask, tokens, mask) -> logprobs
    policy_forward: Callable          # (params, ...) -> (logprobs, values)
    cut: Callable                     # (tokens, mask, caps [b]) -> (tokens, mask, lengths, ended)
    rollout: "Rollout"                # the sampler's mesh, rules and policy layout

    def reference_params(self, state) -> dict:
        """The reference's params: its own copy, or (LoRA) the state's base with adapters off."""
        if self.reference is not None:
            return self.reference
        return lora.without_adapters(lm_params(state.params["policy"]))

    @staticmethod
    @jax.jit
    def take_rows(index, *arrays):
        """Rows ``index`` of each array (``omit_long="replace"``)."""
        return tuple(a[index] for a in arrays)


def check_same_shapes(expected, actual, what: str) -> None:
    """``actual`` must have ``expected``'s parameters with the same shapes; the first difference is named."""
    want = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    got = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(actual)}
    for name in sorted(set(want) | set(got)):
        if want.get(name) != got.get(name):
            raise ConfigError(f"{what} does not match the policy: parameter {name} has shape "
                              f"{got.get(name)}, the policy's is {want.get(name)}")


def load_reference(config, policy_params):
    """A copy of the initial policy (the state is donated), or ``ppo.reference`` checked against it."""
    path = config.ppo.reference
    if not path:
        return jax.tree.map(jnp.copy, policy_params)
    _, reference = causal_lm(export_spec(path), jax.random.key(0))
    check_same_shapes(policy_params, reference, f"reference {path}")
    return reference


def reference_dtype(config) -> str:
    """The frozen reference's storage dtype: ``ppo.reference_param_dtype``, else the policy's."""
    return config.ppo.reference_param_dtype or config.model.param_dtype


def reference_is_base(config) -> bool:
    """LoRA with no ``ppo.reference``: the reference is the policy's frozen base, adapters off
    (TRL with PEFT: ``disable_adapter()``), stored once, in ``model.param_dtype``."""
    if not config.model.get("lora_rank", 0) or config.ppo.reference:
        return False
    if reference_dtype(config) != config.model.param_dtype:
        raise ConfigError(
            f"with LoRA the reference is the policy's frozen base, stored in model.param_dtype "
            f"({config.model.param_dtype}); ppo.reference_param_dtype = "
            f"{config.ppo.reference_param_dtype!r} would need a second copy: set it to '' or "
            f"to {config.model.param_dtype!r}")
    return True


def as_dtype(tree, dtype):
    """Floating leaves of ``tree`` (arrays or shapes) in ``dtype``."""
    def cast(x):
        if not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == jnp.dtype(dtype):
            return x
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(x.shape, jnp.dtype(dtype), sharding=x.sharding)
        return x.astype(dtype)
    return jax.tree.map(cast, tree)


def check_value_model(config) -> None:
    """``ppo.value_model``: ``shared``, or ``separate`` (initialised from ``reward.model``)."""
    if config.ppo.value_model not in VALUE_MODELS:
        raise ConfigError(f"config key 'ppo.value_model' = {config.ppo.value_model!r}; expected "
                          f"one of {VALUE_MODELS}")
    if config.ppo.value_model == "separate" and not config.reward.model:
        raise ConfigError("ppo.value_model='separate' initialises the value model from "
                          "reward.model, which is empty")


def initial_params(config, key):
    """``(lm, policy_model, value_model, params)`` with ``params = {"policy"[, "value"]}``;
    ``lm`` is the policy's LM without adapters (sampling and the reference use it)."""
    check_value_model(config)
    policy_lm, lm_p = causal_lm(config.model, key)
    lm = CausalLM(policy_lm.config.replace(lora=None))
    if config.ppo.value_model == "shared":
        policy_model = PolicyWithValue(policy_lm.config)
        head = init_some_params(policy_model, jax.random.key(1),
                                lambda path: path[0] == "value_head")
        return lm, policy_model, None, {"policy": {**lm_p, "value_head": head["value_head"]}}
    value_model, value_p = scalar_model(export_spec(config.reward.model), key, readout="all",
                                        heads=_value_init_head(config.reward.model))
    return (lm, CausalLM(policy_lm.config), ScalarModel(value_model.config, readout="all"),
            {"policy": lm_p, "value": value_p})


def state_shardings(state: PPOState, policy_model, value_model, tx, mesh) -> PPOState:
    """Params and optimizer state over the mesh by their logical axes; the rest replicated.
    ``state`` may hold shapes (``jax.eval_shape``) instead of arrays."""
    param_sh = {"policy": sharding.param_shardings(policy_model, mesh)}
    if value_model is not None:
        param_sh["value"] = sharding.param_shardings(value_model, mesh)
    replicated = sharding.replicated(mesh)
    opt_sh = training.optimizer_shardings(tx, state.params, param_sh, mesh)
    return PPOState(step=replicated, params=param_sh, opt_state=opt_sh, kl_coef=replicated,
                    window=jax.tree.map(lambda _: replicated, state.window), key=replicated)


def ppo_optimizer(config):
    """The ``ppo`` section's optimizer over the run's updates (steps × epochs × minibatches)."""
    p = config.ppo
    return training.optimizer_for(p, p.steps * p.ppo_epochs * (p.batch_size // p.mini_batch_size))


def initial_state(config, params, tx, key) -> PPOState:
    """The first :class:`PPOState` of ``params`` (arrays, or shapes under ``jax.eval_shape``)."""
    c = config
    return PPOState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=training.init_optimizer(tx, params),
                    kl_coef=jnp.float32(c.ppo.init_kl_coef),
                    window=shaping.RewardWindow.empty(c.shaping.window, c.shaping.window_groups),
                    key=jax.random.fold_in(key, 7))


@dataclasses.dataclass
class RoleFunctions:
    """What a PPO run compiles, from its models' shapes alone (:mod:`rlhf_jax.fit` lowers these
    for a TPU topology): the state's and the reference's shardings and the jitted functions."""

    shardings: PPOState
    reference_shardings: Optional[dict]   # None: the reference is the state's base (LoRA)
    update: Callable
    ref_forward: Callable
    policy_forward: Callable
    cut: Callable
    rollout: "Rollout"


@dataclasses.dataclass
class Rollout:
    """Where the sampler runs: the rollout mesh and rules, and the policy's copy laid out for it.

    The training layout shards weights over ``embed`` (FSDP): a decode loop under it would
    all-gather every weight for every token. The rollout layout (``generation.rollout_tensor``;
    :data:`rlhf_jax.sharding.ROLLOUT_RULES`) shards them over ``tensor`` only, with tensor-
    parallel groups inside a host and data parallelism across; the policy is copied into it
    once per PPO step, in the compute dtype (the sampler multiplies in that dtype anyway), with
    LoRA adapters merged into their projections (``adapters``: the policy's LoRA config).
    """

    mesh: Any
    rules: tuple
    param_shardings: dict
    dtype: Any
    adapters: Any = None

    def params(self, lm_params_training):
        """The policy's LM params, cast to the compute dtype and resharded for the rollout; with
        LoRA, merged in one jitted call whose output is already in the rollout layout (one
        copy of the weights, not a merged copy and then a resharded one)."""
        if lora.has_adapters(lm_params_training):
            return self._merge(lm_params_training)
        return jax.device_put(as_dtype(lm_params_training, self.dtype), self.param_shardings)

    @functools.cached_property
    def _merge(self):
        return jax.jit(lambda p: as_dtype(lora.merged(self.adapters, p), self.dtype),
                       out_shardings=self.param_shardings)

    def batch(self, *arrays):
        """This process's host rows placed as global arrays over the rollout mesh's batch axes."""
        return tuple(sharding.shard_batch(a, self.mesh) for a in arrays)


ROLLOUT_TRAINING_LAYOUT = -1


def make_rollout(config, lm, mesh, adapters=None) -> Rollout:
    """``generation.rollout_tensor``: 0 = :func:`~rlhf_jax.sharding.default_rollout_tensor`,
    ``t > 0`` = tensor groups of ``t`` devices, −1 = decode in the training layout (FSDP)."""
    tensor = config.generation.rollout_tensor
    if tensor == ROLLOUT_TRAINING_LAYOUT:
        r_mesh, rules = mesh, sharding.DEFAULT_RULES
    else:
        if tensor < 0:
            raise ConfigError(f"config key 'generation.rollout_tensor' = {tensor}: expected 0 "
                              f"(auto), a tensor size, or -1 (the training layout)")
        tensor = tensor or sharding.default_rollout_tensor(mesh, lm.config.num_kv_heads)
        try:
            r_mesh = sharding.rollout_mesh(mesh, tensor)
        except ValueError as err:
            raise ConfigError(f"config key 'generation.rollout_tensor': {err}") from None
        rules = sharding.ROLLOUT_RULES
    return Rollout(mesh=r_mesh, rules=rules,
                   param_shardings=sharding.param_shardings(lm, r_mesh, rules),
                   dtype=lm.config.compute_dtype, adapters=adapters)


def without_remat(model):
    """``model`` with ``remat="none"`` (``None`` stays ``None``): the same parameters and
    outputs; rematerialisation only changes what a backward pass recomputes."""
    if model is None or model.config.remat == "none":
        return model
    return model.clone(config=dataclasses.replace(model.config, remat="none"))


def role_functions(config, lm, policy_model, value_model, tx, state_shape, mesh, *,
                   eos_id: int, pad_id: int) -> RoleFunctions:
    """Shardings and compiled functions of the roles; ``state_shape``: the :class:`PPOState` or
    its shapes."""
    shardings = state_shardings(state_shape, policy_model, value_model, tx, mesh)
    ref_sh = (None if reference_is_base(config)
              else shardings.params["policy"] if value_model is not None
              else lm_params(shardings.params["policy"]))
    batch_sh = sharding.batch_sharding(mesh)
    update = jax.jit(functools.partial(ppo_update, policy_model=policy_model,
                                       value_model=value_model, tx=tx, cfg=config),
                     in_shardings=(shardings, batch_sh), out_shardings=(shardings, None),
                     donate_argnums=(0,))
    # forward-only roles: nothing is differentiated, so the models run without remat
    lm, policy_model, value_model = (without_remat(m) for m in (lm, policy_model, value_model))
    ref_forward = jax.jit(lambda ref, *a: rollout.policy_outputs(lm, ref, *a, with_values=False)[0])
    if value_model is None:
        policy_forward = jax.jit(lambda prm, *a: rollout.policy_outputs(
            policy_model, prm["policy"], *a, with_values=True)[:2])
    else:
        policy_forward = jax.jit(lambda prm, *a: (
            rollout.policy_outputs(policy_model, prm["policy"], *a, with_values=False)[0],
            rollout.scalar_values(value_model, prm["value"], *a)))
    cut = jax.jit(functools.partial(rollout.cut_to_length, eos_ids=(eos_id,), pad_id=pad_id))
    return RoleFunctions(shardings=shardings, reference_shardings=ref_sh, update=update,
                         ref_forward=ref_forward, policy_forward=policy_forward, cut=cut,
                         rollout=make_rollout(config, lm, mesh, policy_model.config.lora))


def build_roles(config, tokenizer, mesh, *, eos_id: int, pad_id: int) -> tuple[Roles, PPOState]:
    """The run's :class:`Roles` and its initial state on ``mesh``."""
    c = config
    key = jax.random.key(c.seed)
    lm, policy_model, value_model, params = initial_params(c, key)
    check_vocab(tokenizer, lm.config, role="policy")
    reference = (None if reference_is_base(c) else
                 as_dtype(load_reference(c, lm_params(params["policy"])), reference_dtype(c)))
    tx = ppo_optimizer(c)
    state = initial_state(c, params, tx, key)
    fns = role_functions(c, lm, policy_model, value_model, tx, state, mesh, eos_id=eos_id,
                         pad_id=pad_id)
    with sharding.use_mesh(mesh):
        state = sharding.shard_params(state, fns.shardings)
        if reference is not None:
            reference = sharding.shard_params(reference, fns.reference_shardings)
    roles = Roles(lm=lm, policy_model=policy_model, value_model=value_model, reference=reference,
                  tx=tx, shardings=fns.shardings, update=fns.update, ref_forward=fns.ref_forward,
                  policy_forward=fns.policy_forward, cut=fns.cut, rollout=fns.rollout)
    return roles, state


def _value_init_head(reward_model: str) -> str:
    """A separate value model starts from the reward model's trunk and head: of an ODIN export,
    its quality head (one head, as every value model has)."""
    from rlhf_jax.models.build import is_scalar_export, resolve_init_path, scalar_export_heads
    path = resolve_init_path(reward_model)
    two = not path.startswith("preset:") and is_scalar_export(path) and scalar_export_heads(path) == 2
    return "quality" if two else "sum"


def role_models(config) -> tuple:
    """``(lm, policy_model, value_model)`` from the configs alone (no weights read)."""
    from rlhf_jax.models.build import model_config
    check_value_model(config)
    cfg = model_config(config.model)
    lm = CausalLM(cfg.replace(lora=None))
    if config.ppo.value_model == "shared":
        return lm, PolicyWithValue(cfg), None
    value_cfg = model_config(export_spec(config.reward.model))
    return lm, CausalLM(cfg), ScalarModel(value_cfg, readout="all")
