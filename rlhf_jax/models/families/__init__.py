"""Registry of decoder families, keyed by HF ``model_type``.

To add a family, write ``families/<name>.py`` defining ``FAMILY = Family(...)``
and add it to ``_FAMILY_MODULES`` below.
"""

from __future__ import annotations

from rlhf_jax.models.errors import UnsupportedModelError
from rlhf_jax.models.families import gpt2, llama
from rlhf_jax.models.families.base import Family, TensorMap

_FAMILY_MODULES = (llama, gpt2)
_REGISTRY: dict = {}


def register(family: Family) -> None:
    """Make ``family`` available for each of its ``model_types``."""
    for model_type in family.model_types:
        _REGISTRY[model_type] = family


def family_for(model_type: str, source: str = "config.json") -> Family:
    """The family registered for ``model_type``, or an error naming the file and the type."""
    if model_type not in _REGISTRY:
        raise UnsupportedModelError(
            f"{source}: model_type {model_type!r} is not supported; supported: {sorted(_REGISTRY)}")
    return _REGISTRY[model_type]


def family_named(name: str) -> Family:
    """The family whose ``DecoderConfig.family`` is ``name``."""
    for family in _REGISTRY.values():
        if family.name == name:
            return family
    raise UnsupportedModelError(f"no model family named {name!r}; known: {sorted(_REGISTRY)}")


for _module in _FAMILY_MODULES:
    register(_module.FAMILY)

__all__ = ["Family", "TensorMap", "register", "family_for", "family_named"]
