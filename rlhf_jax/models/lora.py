"""Low-rank adapters (LoRA, Hu et al. 2021), as the paper's code used them through PEFT.

A targeted projection ``y = x·W`` becomes

    y = x·W + (α / r) · (dropout(x) · A) · B,      A: [in, r],  B: [r, out],

with ``W`` frozen, ``A`` drawn like PEFT's (``kaiming_uniform(a=√5)``: uniform in ±1/√in) and
``B = 0``, so a fresh adapter leaves the model unchanged. The paper (PrasannS/rlhf-length-biases,
``rlhfutils/ppo.py`` and ``rmcode.py``) used r = 16, α = 32, dropout 0.05 for the PPO policy and
r = 8, α = 32, dropout 0.1 for reward models, on PEFT's default Llama targets ``q_proj`` and
``v_proj``; the reward model's score head and PPO's value head train in full (PEFT's
``modules_to_save`` for ``SEQ_CLS``; TRL's ``v_head``).

Why our own adapter and not ``qwix``: qwix's LoRA intercepts ``nn.Dense`` / ``einsum`` calls by
their parameter shapes, while our projections keep multi-axis logical shapes (``[embed, heads,
head_dim]``) and multiply a free 2-D reshape (:func:`rlhf_jax.models.layers.linear`): the
interception sees neither the logical axes nor the reshape, so its adapters would be neither
sharded by our rules nor exportable to PEFT's names. Here an adapter is two extra parameters
beside its projection (``q_proj_lora_a``, ``q_proj_lora_b``), sharded by the same logical axes
(the rank axis replicated) and stored in float32 whatever the base's dtype. One deviation from
PEFT: the projections multiplied together in one :func:`rlhf_jax.models.layers.linears` call
(q/k/v, or gate/up) share one dropout mask on their common input, where PEFT draws one per
module; with the paper's targets, q_proj and v_proj share it.

Adapters are part of the model's :class:`~rlhf_jax.models.DecoderConfig` (``lora``): a config
without ``lora`` over the same params minus the adapters is the base model, which is how PPO's
reference is computed (adapters off, no second copy of the weights). What trains is
:func:`trainable_mask`: with adapters present, the adapters and the scalar heads; without, all.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np

ADAPTER_A, ADAPTER_B = "_lora_a", "_lora_b"
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The projections an adapter can sit on (HF Llama module names)."""
RANK_AXIS = "lora_rank"
"""Logical axis of the adapter rank: replicated (r is 8–16)."""
PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
_MODEL_KEYS = ("model", "lm_head")  # a model's trunk and LM head: frozen under LoRA


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """``rank`` r, ``alpha`` α (the update is scaled by α/r), ``dropout`` on the adapter's input
    (active only where the caller passes a ``dropout`` rng, i.e. in training steps) and
    ``targets`` (names from :data:`TARGETS`)."""

    rank: int
    alpha: float
    dropout: float = 0.0
    targets: tuple = ("q_proj", "v_proj")

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"lora rank {self.rank}: expected ≥ 1 (0 means no adapters)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora dropout {self.dropout}: expected a rate in [0, 1)")
        unknown = sorted(set(self.targets) - set(TARGETS))
        if unknown or not self.targets:
            raise ValueError(f"lora targets {tuple(self.targets)}: expected a non-empty subset of "
                             f"{TARGETS}" + (f" (unknown: {unknown})" if unknown else ""))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def uses_dropout(lora: Optional[LoraConfig]) -> bool:
    """Whether a model with these adapters draws dropout masks in its training forwards."""
    return lora is not None and lora.dropout > 0


def lora_config_from_spec(spec) -> Optional[LoraConfig]:
    """The :class:`LoraConfig` of a model spec's ``lora_rank`` / ``lora_alpha`` / ``lora_dropout``
    / ``lora_targets`` (comma-separated), or ``None`` when ``lora_rank`` is 0 or absent."""
    rank = int(spec.get("lora_rank", 0) or 0)
    if rank == 0:
        return None
    targets = tuple(t.strip() for t in str(spec.get("lora_targets", "q_proj,v_proj")).split(",")
                    if t.strip())
    try:
        return LoraConfig(rank=rank, alpha=float(spec.get("lora_alpha", 2 * rank)),
                          dropout=float(spec.get("lora_dropout", 0.0)), targets=targets)
    except ValueError as err:
        raise ValueError(f"config keys model.lora_*: {err}") from None


def adapter_init(fan_in: int):
    """PEFT's ``A`` init, ``kaiming_uniform_(a=√5)``: uniform in ±√(6 / ((1 + 5)·fan_in)) = ±1/√fan_in."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound)


def is_adapter(name: str) -> bool:
    return name.endswith(ADAPTER_A) or name.endswith(ADAPTER_B)


def has_adapters(params) -> bool:
    return any(is_adapter(str(path[-1])) for path in
               flax.traverse_util.flatten_dict(_plain(params)).keys())


def _plain(params):
    return flax.core.unfreeze(params) if isinstance(params, flax.core.FrozenDict) else params


def _model_roots(params, prefix=()):
    """Key paths of the model subtrees of ``params`` (dicts holding a ``"model"`` trunk): the
    params themselves, or each role's of PPO's ``{"policy": …, "value": …}``."""
    if not isinstance(params, dict):
        return []
    if "model" in params:
        return [prefix]
    return [root for key, sub in params.items() for root in _model_roots(sub, prefix + (key,))]


def trainable_mask(params) -> dict:
    """A tree of booleans shaped like ``params``: which leaves an optimizer updates.

    In each model subtree with adapters: the adapters and whatever is outside the trunk and LM
    head (the reward model's ``score``, PPO's ``value_head``). In a model without adapters, and
    outside models: everything.
    """
    flat = flax.traverse_util.flatten_dict(_plain(params))
    roots = [r for r in _model_roots(_plain(params))
             if any(p[:len(r)] == r and is_adapter(str(p[-1])) for p in flat)]

    def trainable(path):
        for root in roots:
            if path[:len(root)] == root:
                inside = path[len(root):]
                return is_adapter(str(path[-1])) or inside[0] not in _MODEL_KEYS
        return True
    return flax.traverse_util.unflatten_dict({p: trainable(p) for p in flat})


def split_trainable(params) -> tuple:
    """``(trainable, frozen)``: two nested dicts that :func:`join` puts back together. Without
    adapters anywhere this is ``(params, {})`` (full fine-tuning)."""
    params = _plain(params)
    if not has_adapters(params):
        return params, {}
    flat = flax.traverse_util.flatten_dict(params)
    mask = flax.traverse_util.flatten_dict(trainable_mask(params))
    unflatten = flax.traverse_util.unflatten_dict
    return (unflatten({p: v for p, v in flat.items() if mask[p]}),
            unflatten({p: v for p, v in flat.items() if not mask[p]}))


def join(trainable, frozen) -> dict:
    """Inverse of :func:`split_trainable`."""
    if not frozen:
        return trainable
    flat = flax.traverse_util.flatten_dict(_plain(frozen))
    flat.update(flax.traverse_util.flatten_dict(_plain(trainable)))
    return flax.traverse_util.unflatten_dict(flat)


def without_adapters(params) -> dict:
    """``params`` minus every adapter leaf: the base model's params (the same arrays, no copy)."""
    flat = flax.traverse_util.flatten_dict(_plain(params))
    return flax.traverse_util.unflatten_dict(
        {p: v for p, v in flat.items() if not is_adapter(str(p[-1]))})


def merged(lora: LoraConfig, params) -> dict:
    """``W + (α/r)·A·B`` for every adapted projection, adapters removed: params of the base
    architecture that compute what the adapted model computes (export, sampling, scoring).
    Works on stacked (``[layers, …]``) and unrolled layers alike; ``W`` keeps its dtype."""
    if not has_adapters(params):
        return params
    flat = flax.traverse_util.flatten_dict(_plain(params))
    out = {}
    for path, w in flat.items():
        name = str(path[-1])
        if is_adapter(name):
            continue
        a = flat.get(path[:-1] + (name + ADAPTER_A,))
        if a is not None:
            b = flat[path[:-1] + (name + ADAPTER_B,)]
            w = (w.astype(jnp.float32) + lora.scale * _product(a, b, w.shape)).astype(w.dtype)
        out[path] = w
    return flax.traverse_util.unflatten_dict(out)


def _product(a, b, w_shape):
    """``A·B`` reshaped to ``W``'s shape; ``a``: ``[lead…, in…, r]``, ``b``: ``[lead…, r, out…]``
    where ``lead`` are the stacked-layer axes ``W`` has too."""
    r = a.shape[-1]
    lead = a.ndim + b.ndim - 2 - len(w_shape)  # stacked axes shared by a and b (0 or 1)
    lead_shape = a.shape[:lead]
    a2 = a.reshape(*lead_shape, -1, r).astype(jnp.float32)
    b2 = b.reshape(*lead_shape, r, -1).astype(jnp.float32)
    return jnp.matmul(a2, b2).reshape(w_shape)


def check_targets_exist(lora: Optional[LoraConfig], params, source: str) -> None:
    """Every LoRA target must have got its adapter in ``params``: a projection this model has
    (every family's attention is ``q/k/v/o_proj``; a plain MLP has no ``gate_proj``)."""
    if lora is None:
        return
    names = {str(p[-1]) for p in flax.traverse_util.flatten_dict(_plain(params))}
    missing = [t for t in lora.targets if t + ADAPTER_A not in names]
    if missing:
        raise ValueError(f"{source}: LoRA targets {missing} are not projections of this model")


# ---------------------------------------------------------------------------------------------
# PEFT export: adapter_config.json + adapter_model.safetensors that peft loads onto the HF base.


def peft_tensors(cfg, params) -> dict:
    """PEFT-named adapter tensors: ``base_model.model.<module>.lora_A.weight [r, in]`` and
    ``lora_B.weight [out, r]`` for every adapted HF ``Linear`` (Llama family)."""
    from rlhf_jax.models.families import family_named
    from rlhf_jax.models.hf import _get_path, _to_host
    if cfg.family != "llama":
        raise ValueError(f"PEFT adapter export supports the llama family, not {cfg.family!r} "
                         "(its projections are not one HF Linear each); export merged weights")
    host = jax.tree.map(_to_host, _plain(params))
    out = {}
    for tmap in family_named(cfg.family).tensor_maps(cfg):
        path = tmap.paths[0]
        if path[-1] not in cfg.lora.targets or not tmap.per_layer:
            continue
        parent = _get_path(host, path[:-1])
        a, b = parent[path[-1] + ADAPTER_A], parent[path[-1] + ADAPTER_B]
        module = tmap.hf_name[:-len(".weight")]
        for i in range(cfg.num_layers):
            a_i = a[i].reshape(-1, cfg.lora.rank)
            b_i = b[i].reshape(cfg.lora.rank, -1)
            prefix = "base_model.model." + module.format(i=i)
            out[prefix + ".lora_A.weight"] = np.ascontiguousarray(a_i.T)
            out[prefix + ".lora_B.weight"] = np.ascontiguousarray(b_i.T)
    return out


def peft_config(lora: LoraConfig, base_model: str, task_type: str = "CAUSAL_LM") -> dict:
    """The ``adapter_config.json`` PEFT reads for these adapters."""
    return {"peft_type": "LORA", "task_type": task_type, "r": lora.rank,
            "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
            "target_modules": sorted(lora.targets), "bias": "none", "fan_in_fan_out": False,
            "inference_mode": True, "base_model_name_or_path": base_model,
            "modules_to_save": None, "init_lora_weights": True, "use_rslora": False,
            "use_dora": False}


def save_peft_adapter(cfg, params, path: str, base_model: str) -> None:
    """Write the PEFT adapter directory ``path`` (process 0 writes; every process gathers)."""
    from safetensors.numpy import save_file

    from rlhf_jax.models.hf import _atomic_write, _write_json
    tensors = peft_tensors(cfg, params)
    if jax.process_index() != 0:
        return
    os.makedirs(path, exist_ok=True)
    _atomic_write(os.path.join(path, PEFT_WEIGHTS_FILE),
                  lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    _atomic_write(os.path.join(path, PEFT_CONFIG_FILE),
                  lambda tmp: _write_json(tmp, peft_config(cfg.lora, base_model)))

