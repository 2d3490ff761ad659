"""HuggingFace checkpoints: ``config.json`` + safetensors (single file or sharded index).

Import maps every HF tensor onto our parameter pytree through the family's
:class:`~rlhf_jax.models.families.base.TensorMap` list; export inverts it and
writes a directory that ``transformers`` loads. Any tensor that is missing,
misshapen or left over raises a :class:`CheckpointError` naming the file and
the tensor: nothing is skipped silently.
"""

from __future__ import annotations

import json
import os
import re
from typing import Callable, Mapping

import jax
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy: bf16 safetensors read as numpy)
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from rlhf_jax.models.config import DecoderConfig
from rlhf_jax.models.errors import CheckpointError
from rlhf_jax.models.families import Family, family_for, family_named

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"


class TensorSource:
    """Lazy access to named tensors, remembering which file each came from."""

    def __init__(self, getters: Mapping[str, Callable[[], np.ndarray]], files: Mapping[str, str]):
        self._getters, self._files = dict(getters), dict(files)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], source: str) -> "TensorSource":
        return cls({n: (lambda a=a: a) for n, a in arrays.items()}, {n: source for n in arrays})

    def names(self):
        return self._getters.keys()

    def file_of(self, name: str) -> str:
        return self._files[name]

    def get(self, name: str) -> np.ndarray:
        return np.asarray(self._getters[name]())

    def renamed(self, rename: Callable[[str], str]) -> "TensorSource":
        return TensorSource({rename(n): g for n, g in self._getters.items()},
                            {rename(n): f for n, f in self._files.items()})


def read_config(path: str) -> dict:
    """The ``config.json`` of an HF model directory, with errors naming the file."""
    file = os.path.join(path, CONFIG_FILE)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such model directory (expected {CONFIG_FILE} and "
                              f"{SAFETENSORS_FILE} or {SAFETENSORS_INDEX} inside)")
    if not os.path.isfile(file):
        raise CheckpointError(f"{file}: missing; an HF model directory needs a {CONFIG_FILE}")
    try:
        with open(file) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file}: not valid JSON ({err})") from err


def open_safetensors(path: str) -> TensorSource:
    """All tensors of a model directory, from ``model.safetensors`` or a sharded index."""
    index_file = os.path.join(path, SAFETENSORS_INDEX)
    if os.path.isfile(index_file):
        try:
            with open(index_file) as f:
                weight_map = json.load(f).get("weight_map")
        except (json.JSONDecodeError, AttributeError) as err:
            raise CheckpointError(f"{index_file}: not a JSON object with a 'weight_map' "
                                  f"({err})") from None
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index_file}: expected a 'weight_map' object")
        files = {n: os.path.join(path, shard) for n, shard in weight_map.items()}
    else:
        single = os.path.join(path, SAFETENSORS_FILE)
        if not os.path.isfile(single):
            raise CheckpointError(f"{path}: neither {SAFETENSORS_FILE} nor {SAFETENSORS_INDEX} found")
        try:
            with safe_open(single, framework="numpy") as f:
                files = {n: single for n in f.keys()}
        except SafetensorError as err:
            raise CheckpointError(f"{single}: not a readable safetensors file ({err}); was it "
                                  "truncated? Copy or export it again") from None
    for file in set(files.values()):
        if not os.path.isfile(file):
            raise CheckpointError(f"{index_file}: shard {file} is listed but missing")

    def getter(name, file):
        def load():
            try:
                with safe_open(file, framework="numpy") as f:
                    return f.get_tensor(name)
            except SafetensorError as err:
                raise CheckpointError(f"{file}: cannot read tensor {name!r} ({err})") from err
        return load

    return TensorSource({n: getter(n, f) for n, f in files.items()}, files)


def params_from_tensors(cfg: DecoderConfig, family: Family, tensors: TensorSource) -> dict:
    """Build the ``params`` pytree from HF-named tensors (float32 on host)."""
    tensors = tensors.renamed(family.canonical_hf_name)
    used, params = set(), {}
    for tmap in family.tensor_maps(cfg):
        names = [tmap.hf_name.format(i=i) for i in range(cfg.num_layers)] if tmap.per_layer \
            else [tmap.hf_name]
        converted = [tmap.to_ours(_take(tensors, n, tmap.hf_shape, cfg)) for n in names]
        used.update(names)
        for j, path in enumerate(tmap.paths):
            parts = [c[j] for c in converted]
            _set_path(params, path, np.stack(parts) if tmap.per_layer else parts[0])
    _check_leftovers(cfg, family, tensors, used, params)
    return params


def _take(tensors: TensorSource, name: str, shape: tuple, cfg: DecoderConfig) -> np.ndarray:
    if name not in tensors.names():
        files = sorted({tensors.file_of(n) for n in tensors.names()}) or ["(no tensors)"]
        raise CheckpointError(f"{', '.join(files)}: tensor {name!r} is missing; expected shape "
                              f"{shape} for this {cfg.family} config")
    array = tensors.get(name)
    if tuple(array.shape) != tuple(shape):
        raise CheckpointError(f"{tensors.file_of(name)}: tensor {name!r} has shape "
                              f"{tuple(array.shape)}, expected {tuple(shape)} from the config")
    return array.astype(np.float32)


def _check_leftovers(cfg, family, tensors, used, params):
    for name in sorted(set(tensors.names()) - used):
        if any(re.fullmatch(p, name) for p in family.ignored_hf_names):
            continue
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            embedding = params["model"]["embed_tokens"]["embedding"]
            if np.array_equal(tensors.get(name).astype(np.float32), embedding):
                continue
            raise CheckpointError(f"{tensors.file_of(name)}: tensor 'lm_head.weight' differs from "
                                  "the token embedding but the config says tie_word_embeddings")
        raise CheckpointError(f"{tensors.file_of(name)}: unexpected tensor {name!r}: no parameter "
                              f"of the {cfg.family} model maps to it")


def _set_path(tree: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get_path(tree, path: tuple):
    for key in path:
        tree = tree[key]
    return tree


def _to_host(x) -> np.ndarray:
    """A float32 numpy copy of ``x``, gathering shards held by other hosts when needed."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils
        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x), np.float32)


def params_to_tensors(cfg: DecoderConfig, params) -> dict:
    """HF-named float32 numpy tensors from a ``params`` pytree (sharded, even across hosts);
    LoRA adapters are merged into their projections."""
    if not cfg.scan_layers:
        raise CheckpointError(
            "these params are in a decoding layout (scan_layers=False, maybe CPU panels, as "
            "rlhf_jax.generate.decoding_view makes them); export the model and params that "
            "load_pretrained or training returned")
    if cfg.lora is not None:
        from rlhf_jax.models.lora import merged
        params = merged(cfg.lora, params)  # W + (α/r)·A·B: what the adapted model computes
    params = jax.tree.map(_to_host, params)
    out = {}
    for tmap in family_named(cfg.family).tensor_maps(cfg):
        ours = [_get_path(params, p) for p in tmap.paths]
        if tmap.per_layer:
            for i in range(cfg.num_layers):
                out[tmap.hf_name.format(i=i)] = tmap.to_hf(*[o[i] for o in ours])
        else:
            out[tmap.hf_name] = tmap.to_hf(*ours)
    return {n: np.ascontiguousarray(a) for n, a in out.items()}


def load_hf_directory(path: str) -> tuple:
    """``(DecoderConfig, params)`` from an HF model directory."""
    hf = read_config(path)
    family = family_from_config(hf, os.path.join(path, CONFIG_FILE))
    cfg = family.config_from_hf(hf, os.path.join(path, CONFIG_FILE))
    return cfg, params_from_tensors(cfg, family, open_safetensors(path))


def family_from_config(hf: dict, source: str) -> Family:
    """The registered family of an HF config dict, with errors naming ``source``."""
    if "model_type" not in hf:
        raise CheckpointError(f"{source}: config key 'model_type' is missing")
    return family_for(hf["model_type"], source)


def save_hf_directory(cfg: DecoderConfig, params, path: str) -> None:
    """Write ``config.json`` and ``model.safetensors`` (float32); each file is replaced atomically.

    On several hosts every process gathers the params (a collective) and process
    0 alone writes. A sharded index left by an earlier checkpoint in ``path`` is
    removed with its shards, so the directory holds one checkpoint.
    """
    tensors = params_to_tensors(cfg, params)
    if jax.process_index() != 0:
        return
    os.makedirs(path, exist_ok=True)
    _remove_sharded_checkpoint(path)
    _atomic_write(os.path.join(path, SAFETENSORS_FILE),
                  lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    _atomic_write(os.path.join(path, CONFIG_FILE),
                  lambda tmp: _write_json(tmp, family_named(cfg.family).config_to_hf(cfg)))


def _remove_sharded_checkpoint(path: str) -> None:
    index_file = os.path.join(path, SAFETENSORS_INDEX)
    if not os.path.isfile(index_file):
        return
    with open(index_file) as f:
        shards = set((json.load(f).get("weight_map") or {}).values())
    for shard in shards:
        if os.path.isfile(os.path.join(path, shard)):
            os.remove(os.path.join(path, shard))
    os.remove(index_file)


def _write_json(file: str, obj) -> None:
    with open(file, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def _atomic_write(file: str, write: Callable[[str], None]) -> None:
    tmp = f"{file}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, file)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
