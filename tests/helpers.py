"""Helpers shared by tests: random left-padded batches and the PyTorch reference models."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rlhf_jax.generate import left_pad
from rlhf_jax.models.torch_reference import random_torch_model as torch_model  # noqa: F401
from rlhf_jax.models.torch_reference import torch_logits  # noqa: F401


def left_padded_batch(rng: np.random.Generator, lengths, vocab_size: int, pad_id: int = 0,
                      low: int = 3):
    """Random token ids ``[b, max(lengths)]`` (ids ≥ ``low``) left-padded with ``pad_id``, and the mask."""
    return left_pad([rng.integers(low, vocab_size, size=n) for n in lengths], pad_id)


SHARED_DATA_ABSENT = "shared data absent"
"""Skip reason prefix the CI-strict hook accepts: ../shared/data is a checkout-side folder, not a package."""

HH_HARMLESS_TEST = os.path.normpath(os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "hh-rlhf", "harmless-base",
    "test.jsonl.gz"))


def real_hh_harmless_test() -> str:
    """The path of the shipped hh-rlhf harmless-base test file, or a clean skip when absent."""
    if not os.path.exists(HH_HARMLESS_TEST):
        pytest.skip(f"{SHARED_DATA_ABSENT}: {HH_HARMLESS_TEST}")
    return HH_HARMLESS_TEST


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_multidevice_script(name: str, timeout: int = 600) -> dict:
    """Run ``tests/multidevice/NAME`` in a fresh process (8 simulated devices); its last JSON line."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "multidevice", name)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


SEEN = []
"""The response texts each call of :func:`recording_reward` was given."""


def recording_reward(prompts, responses):
    """A PPO reward function (``reward.function``) that records what it scores: characters."""
    SEEN.append(list(responses))
    return [float(len(r)) for r in responses]
