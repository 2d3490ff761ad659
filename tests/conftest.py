"""Shared test set-up: CPU only, one device unless a test spawns its own process."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np
import pytest

HH_RLHF = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "hh-rlhf")


def left_padded_batch(rng: np.random.Generator, lengths, vocab_size: int, pad_id: int = 0):
    """Random token ids ``[b, max(lengths)]`` left-padded with ``pad_id``, and the mask."""
    width = max(lengths)
    ids = np.full((len(lengths), width), pad_id, np.int32)
    mask = np.zeros((len(lengths), width), np.int32)
    for row, n in enumerate(lengths):
        ids[row, width - n:] = rng.integers(3, vocab_size, size=n)
        mask[row, width - n:] = 1
    return ids, mask


@pytest.fixture
def rng():
    return np.random.default_rng(0)
