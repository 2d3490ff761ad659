"""GRPO's and Dr. GRPO's losses against TRL's ``GRPOTrainer`` (TRL 0.21.0), on identical
log-probs and advantages.

TRL 0.11.4, the release the PPO benchmarks and the DPO test use, predates ``GRPOTrainer``, and a
second TRL cannot be installed beside it. This test therefore takes TRL 0.21.0's wheel
(``pip download --no-deps``, cached in ``~/.cache/rlhf_jax``; it skips with the reason if the
package registry cannot be reached) and compiles ``GRPOTrainer._compute_loss``'s own source
from it, with the model's forward replaced by the given log-probs. Compared: the loss and its
gradient with respect to the policy's per-token log-probs, for ``loss_type="grpo"`` (β = 0.04,
the per-response 1/|o_i| mean) and ``"dr_grpo"`` (β = 0, the constant ``B·max_length``), with
ratios far enough from 1 that clipping is active on both sides.
"""

import ast
import collections
import os
import subprocess
import sys
import textwrap
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.ppo import algo

TRL_VERSION = "0.21.0"
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "rlhf_jax", f"trl-{TRL_VERSION}")
SOURCE = "trl/trainer/grpo_trainer.py"


def trl_grpo_source() -> str:
    """TRL 0.21.0's ``grpo_trainer.py``, from its wheel (downloaded once into the cache)."""
    path = os.path.join(CACHE, SOURCE)
    if not os.path.isfile(path):
        os.makedirs(CACHE, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                               f"trl=={TRL_VERSION}", "-d", CACHE], capture_output=True, text=True,
                              timeout=300)
        wheels = [f for f in os.listdir(CACHE) if f.endswith(".whl")]
        if done.returncode != 0 or not wheels:
            pytest.skip(f"TRL {TRL_VERSION}'s wheel could not be downloaded: "
                        f"{(done.stderr or done.stdout).strip()[-200:]}")
        with zipfile.ZipFile(os.path.join(CACHE, wheels[0])) as wheel:
            wheel.extract(SOURCE, CACHE)
    with open(path) as f:
        return f.read()


def trl_compute_loss():
    """``GRPOTrainer._compute_loss`` compiled from TRL's file (torch and ``nanmin``/``nanmax``
    are the names it uses besides ``self``)."""
    torch = pytest.importorskip("torch", reason="TRL's loss needs CPU torch")
    source = trl_grpo_source()
    (method,) = [node for cls in ast.parse(source).body if isinstance(cls, ast.ClassDef)
                 and cls.name == "GRPOTrainer" for node in cls.body
                 if isinstance(node, ast.FunctionDef) and node.name == "_compute_loss"]
    code = textwrap.dedent(ast.get_source_segment(source, method))
    names = {"torch": torch, "nanmin": lambda x: torch.min(x[~torch.isnan(x)]),
             "nanmax": lambda x: torch.max(x[~torch.isnan(x)])}
    exec(compile(code, f"{SOURCE}:GRPOTrainer._compute_loss", "exec"), names)
    return names["_compute_loss"]


def trainer_state(logprobs, loss_type: str, beta: float, epsilon: float, max_length: int):
    """The attributes ``_compute_loss`` reads, with the policy's forward returning ``logprobs``."""
    import torch
    return types.SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logprobs, torch.zeros_like(logprobs)),
        top_entropy_quantile=1.0, beta=beta, importance_sampling_level="token",
        epsilon_low=epsilon, epsilon_high=epsilon, args=types.SimpleNamespace(delta=None),
        loss_type=loss_type, max_completion_length=max_length,
        model=types.SimpleNamespace(training=True),
        _metrics={"train": collections.defaultdict(list)},
        accelerator=types.SimpleNamespace(gather=lambda x: x))


def batch(seed=0, b=8, t=7):
    rng = np.random.default_rng(seed)
    lengths = np.array([7, 2, 5, 3, 1, 6, 4, 7])[:b]          # unequal, none empty
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
    old = rng.normal(-2.0, 0.5, (b, t)).astype(np.float32)
    logprobs = (old + rng.normal(0.0, 0.4, (b, t))).astype(np.float32)  # ratios well past 1 ± 0.2
    ref = (old + rng.normal(0.0, 0.3, (b, t))).astype(np.float32)
    scores = rng.normal(0.0, 2.0, b).astype(np.float32)
    return logprobs, old, ref, scores, mask


@pytest.mark.parametrize("estimator,loss_type,beta", [("grpo", "grpo", 0.04),
                                                       ("dr_grpo", "dr_grpo", 0.0)])
def test_group_loss_and_gradient_match_trl_grpo_trainer(estimator, loss_type, beta):
    import torch
    compute_loss = trl_compute_loss()
    logprobs, old, ref, scores, mask = batch()
    spec = algo.ADVANTAGE_ESTIMATORS[estimator]
    advantages = np.asarray(algo.group_advantages(jnp.asarray(scores), 4, spec.scale_by_std))
    t, clip = mask.shape[1], 0.2

    def ours(lp):
        return algo.group_policy_loss(lp, jnp.asarray(old), jnp.asarray(ref),
                                      jnp.asarray(advantages)[:, None], jnp.asarray(mask), clip,
                                      beta, per_response_mean=spec.per_response_mean,
                                      kl_in_loss=spec.kl_in_loss, max_length=t)[0]

    our_loss, our_grad = jax.value_and_grad(ours)(jnp.asarray(logprobs))
    lp = torch.tensor(logprobs, dtype=torch.float64, requires_grad=True)
    inputs = {"prompt_ids": torch.zeros((8, 1), dtype=torch.long),
              "prompt_mask": torch.ones((8, 1), dtype=torch.long),
              "completion_ids": torch.zeros((8, t), dtype=torch.long),
              "completion_mask": torch.tensor(mask, dtype=torch.float64),
              "advantages": torch.tensor(advantages, dtype=torch.float64),
              "old_per_token_logps": torch.tensor(old, dtype=torch.float64),
              "ref_per_token_logps": torch.tensor(ref, dtype=torch.float64)}
    their_loss = compute_loss(trainer_state(lp, loss_type, beta, clip, t), None, inputs)
    their_loss.backward()
    ratios = np.exp(logprobs - old)[mask > 0]
    assert (ratios > 1.2).any() and (ratios < 0.8).any()        # clipping is active both ways
    np.testing.assert_allclose(float(our_loss), float(their_loss.detach()), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(our_grad) * mask, lp.grad.numpy() * mask,
                               rtol=1e-4, atol=1e-7)
