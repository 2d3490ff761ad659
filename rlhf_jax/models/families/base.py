"""What a model family provides: config translation and a tensor map to HF names.

A family is one file that registers a :class:`Family`: how to read an HF
``config.json`` into a :class:`DecoderConfig`, how to write it back, and the
list of :class:`TensorMap` entries that say which HF tensor becomes which of our
parameters. Adding a family (GPT-NeoX, Qwen2, …) is one more such file.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from rlhf_jax.models.config import DecoderConfig

Path = tuple  # a key path into the params pytree, e.g. ("model", "layers", "attn", "q_proj")


@dataclasses.dataclass(frozen=True)
class TensorMap:
    """One HF tensor ↔ one or more of our parameters.

    ``hf_name`` may contain ``{i}``: the entry is then per layer and our
    parameters are stacked along a leading ``layers`` axis. ``to_ours`` maps the
    HF array to a tuple of arrays (one per path); ``to_hf`` is its inverse.
    """

    hf_name: str
    paths: tuple
    hf_shape: tuple
    to_ours: Callable[[np.ndarray], tuple]
    to_hf: Callable[..., np.ndarray]

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf_name


@dataclasses.dataclass(frozen=True)
class Family:
    """A registered decoder family."""

    name: str
    model_types: tuple
    config_from_hf: Callable[[dict, str], DecoderConfig]
    config_to_hf: Callable[[DecoderConfig], dict]
    tensor_maps: Callable[[DecoderConfig], Sequence[TensorMap]]
    canonical_hf_name: Callable[[str], str] = lambda name: name
    ignored_hf_names: tuple = ()  # regexes of buffers that are not parameters


def same(hf_name: str, path: Path, shape: tuple) -> TensorMap:
    """An HF tensor stored exactly as our parameter (norm scales, embeddings)."""
    return TensorMap(hf_name, (path,), shape, lambda w: (w,), lambda w: w)


def transposed(hf_name: str, path: Path, hf_shape: tuple) -> TensorMap:
    """A PyTorch ``Linear`` weight ``[out, in]`` stored by us as ``[in, out]``."""
    return TensorMap(hf_name, (path,), hf_shape, lambda w: (w.T,), lambda w: w.T)


def reshaped(hf_name: str, path: Path, hf_shape: tuple, our_shape: tuple,
             transpose: bool) -> TensorMap:
    """An HF matrix (optionally transposed first) reshaped to our multi-axis layout."""
    def to_ours(w):
        return ((w.T if transpose else w).reshape(our_shape),)

    def to_hf(w):
        flat = w.reshape(hf_shape[::-1] if transpose else hf_shape)
        return flat.T if transpose else flat

    return TensorMap(hf_name, (path,), hf_shape, to_ours, to_hf)


def require(hf: dict, key: str, source: str):
    """``hf[key]`` or a :class:`CheckpointError` naming the file and the key."""
    from rlhf_jax.models.errors import CheckpointError
    if key not in hf or hf[key] is None:
        raise CheckpointError(f"{source}: config key {key!r} is missing; it is required for "
                              f"model_type {hf.get('model_type')!r}")
    return hf[key]
