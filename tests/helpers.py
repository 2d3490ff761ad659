"""Helpers shared by tests: random left-padded batches and the PyTorch reference models."""

import numpy as np

from rlhf_jax.generate import left_pad
from rlhf_jax.models.torch_reference import random_torch_model as torch_model  # noqa: F401
from rlhf_jax.models.torch_reference import torch_logits  # noqa: F401


def left_padded_batch(rng: np.random.Generator, lengths, vocab_size: int, pad_id: int = 0,
                      low: int = 3):
    """Random token ids ``[b, max(lengths)]`` (ids ≥ ``low``) left-padded with ``pad_id``, and the mask."""
    return left_pad([rng.integers(low, vocab_size, size=n) for n in lengths], pad_id)
