"""DPO, R-DPO and SimPO losses, rewards and gradients against a float64 NumPy loop over pairs
(the papers' formulas written out), and DPO / SimPO against TRL 0.11.4's own loss functions on
identical log-probabilities.

The inputs are chosen where conventions would differ: unequal response lengths (R-DPO's and
SimPO's length terms, sum vs mean log-probs), a reference that disagrees with the policy,
label smoothing, and margins of ±60 nats, where log(σ(h)) computed naively overflows float32.
"""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.dpo.losses import PREFERENCE_LOSSES, dpo_loss, preference_loss, rdpo_loss, simpo_loss

RTOL = 1e-5  # float32 against float64

# per pair: policy log π(y_w), log π(y_l), reference log π_ref(y_w), log π_ref(y_l), |y_w|, |y_l|
PAIRS = np.array([
    [-12.0, -15.5, -13.0, -14.0, 10, 14],
    [-40.25, -22.0, -38.0, -25.5, 37, 18],    # the winner is longer and less likely
    [-3.0, -3.0, -3.0, -3.0, 4, 4],           # h = 0
    [-5.0, -605.0, -5.0, -5.0, 6, 300],       # h = +60 (β = 0.1)
    [-605.0, -5.0, -5.0, -5.0, 300, 6],       # h = −60
    [-61.0, -70.5, -60.0, -71.0, 55, 64],
])


def log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def reference_loop(kind, beta, option):
    """Per pair: loss, chosen reward, rejected reward, ∂loss/∂log π(y_w), ∂loss/∂log π(y_l)."""
    out = []
    for pc, pr, rc, rr, lc, lr in PAIRS.tolist():
        if kind == "simpo":
            chosen, rejected = beta * pc / lc, beta * pr / lr
            z = chosen - rejected - option
            loss, d = -log_sigmoid(z), -sigmoid(-z)
            out.append([loss, chosen, rejected, d * beta / lc, -d * beta / lr])
            continue
        chosen, rejected = beta * (pc - rc), beta * (pr - rr)
        if kind == "dpo":
            eps, h = option, chosen - rejected
            loss = -(1 - eps) * log_sigmoid(h) - eps * log_sigmoid(-h)
            d = -(1 - eps) * sigmoid(-h) + eps * sigmoid(h)
        else:  # rdpo
            h = chosen - rejected + option * (lc - lr)
            loss, d = -log_sigmoid(h), -sigmoid(-h)
        out.append([loss, chosen, rejected, d * beta, -d * beta])
    return np.array(out)


CASES = [("dpo", dpo_loss, 0.1, {"label_smoothing": 0.0}), ("dpo", dpo_loss, 0.1, {"label_smoothing": 0.2}),
         ("rdpo", rdpo_loss, 0.1, {"alpha": 0.05}), ("rdpo", rdpo_loss, 0.5, {"alpha": -0.02}),
         ("simpo", simpo_loss, 2.0, {"gamma": 0.5}), ("simpo", simpo_loss, 10.0, {"gamma": 1.6})]


@pytest.mark.parametrize("kind, fn, beta, options", CASES,
                         ids=[f"{k}-{list(o.values())[0]}" for k, _, _, o in CASES])
def test_loss_rewards_and_gradients_match_the_formula(kind, fn, beta, options):
    want = reference_loop(kind, beta, list(options.values())[0])
    cols = [jnp.asarray(PAIRS[:, i], jnp.float32) for i in range(6)]
    losses, chosen, rejected = fn(*cols, beta=beta, **options)
    np.testing.assert_allclose(losses, want[:, 0], rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(chosen, want[:, 1], rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(rejected, want[:, 2], rtol=RTOL, atol=1e-6)
    assert np.all(np.isfinite(losses))

    def total(pc, pr):
        return fn(pc, pr, *cols[2:], beta=beta, **options)[0].sum()
    d_chosen, d_rejected = jax.grad(total, argnums=(0, 1))(cols[0], cols[1])
    np.testing.assert_allclose(d_chosen, want[:, 3], rtol=RTOL, atol=1e-7)
    np.testing.assert_allclose(d_rejected, want[:, 4], rtol=RTOL, atol=1e-7)


def test_rdpo_is_dpo_at_alpha_zero_and_simpo_ignores_the_reference():
    cols = [jnp.asarray(PAIRS[:, i], jnp.float32) for i in range(6)]
    np.testing.assert_array_equal(rdpo_loss(*cols, beta=0.1, alpha=0.0)[0],
                                  dpo_loss(*cols, beta=0.1)[0])
    moved = cols[:2] + [cols[2] + 7.0, cols[3] - 3.0] + cols[4:]
    np.testing.assert_array_equal(simpo_loss(*cols, beta=2.0, gamma=0.5)[0],
                                  simpo_loss(*moved, beta=2.0, gamma=0.5)[0])


def test_the_registry_reads_each_loss_options_from_the_config_section():
    assert sorted(PREFERENCE_LOSSES) == ["dpo", "rdpo", "simpo"]
    assert [PREFERENCE_LOSSES[k].uses_reference for k in ("dpo", "rdpo", "simpo")] == [True, True, False]
    section = {"beta": 0.1, "label_smoothing": 0.0, "alpha": 0.05, "gamma": 0.5}
    cols = [jnp.asarray(PAIRS[:, i], jnp.float32) for i in range(6)]
    np.testing.assert_array_equal(preference_loss("rdpo", section)(*cols)[0],
                                  rdpo_loss(*cols, beta=0.1, alpha=0.05)[0])
    with pytest.raises(ValueError, match=r"dpo\.loss = 'ipo': unknown; expected one of"):
        preference_loss("ipo", section)


def trl_self(**fields):
    """The attributes TRL's loss methods read from their trainer."""
    torch = pytest.importorskip("torch")
    return types.SimpleNamespace(accelerator=types.SimpleNamespace(device=torch.device("cpu")),
                                 reference_free=False, f_divergence_type="reverse_kl",
                                 f_divergence_params=None, use_weighting=False, **fields)


def trl_dpo_loss():
    """TRL 0.11.4's ``DPOTrainer.dpo_loss``, its own code run as is. The module that holds it
    cannot be imported beside transformers 5 (it imports ``MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES``,
    which transformers 5 removed, and the optional ``llm_blender``), so the method's source is
    taken from the file and compiled with the names it uses (torch, ``F``, ``math``, TRL's
    ``cap_exp`` and f-divergence constants)."""
    pytest.importorskip("trl", reason="TRL (the bench/test extra) is not installed")
    import ast
    import importlib.util
    import os
    import textwrap
    from typing import Tuple

    import torch
    import torch.nn.functional as F
    from trl.trainer.dpo_config import FDivergenceConstants, FDivergenceType
    from trl.trainer.utils import cap_exp
    (root,) = importlib.util.find_spec("trl").submodule_search_locations
    with open(os.path.join(root, "trainer", "dpo_trainer.py")) as f:
        source = f.read()
    (method,) = [node for cls in ast.parse(source).body if isinstance(cls, ast.ClassDef)
                 and cls.name == "DPOTrainer" for node in cls.body
                 if isinstance(node, ast.FunctionDef) and node.name == "dpo_loss"]
    method.decorator_list = []
    code = textwrap.dedent(ast.get_source_segment(source, method))
    names = {"torch": torch, "F": F, "math": math, "Tuple": Tuple, "cap_exp": cap_exp,
             "FDivergenceType": FDivergenceType, "FDivergenceConstants": FDivergenceConstants}
    exec(compile(code, "trl/trainer/dpo_trainer.py:DPOTrainer.dpo_loss", "exec"), names)
    return names["dpo_loss"]


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_dpo_matches_trl_dpo_trainer(label_smoothing):
    import torch
    loss = trl_dpo_loss()
    this = trl_self(beta=0.1, label_smoothing=label_smoothing, loss_type="sigmoid")
    t = [torch.tensor(PAIRS[:, i], dtype=torch.float64) for i in range(4)]
    want = [x.numpy() for x in loss(this, *t)]
    cols = [jnp.asarray(PAIRS[:, i], jnp.float32) for i in range(6)]
    got = dpo_loss(*cols, beta=0.1, label_smoothing=label_smoothing)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=1e-6)


def test_simpo_matches_trl_cpo_trainer_simpo():
    pytest.importorskip("trl", reason="TRL (the bench/test extra) is not installed")
    import torch
    from trl import CPOTrainer
    this = trl_self(beta=2.0, label_smoothing=0.0, loss_type="simpo", simpo_gamma=0.5)
    # TRL's SimPO takes length-averaged log-probs: the sum over the length
    mean_chosen = torch.tensor(PAIRS[:, 0] / PAIRS[:, 4], dtype=torch.float64)
    mean_rejected = torch.tensor(PAIRS[:, 1] / PAIRS[:, 5], dtype=torch.float64)
    want = [x.numpy() for x in CPOTrainer.cpo_loss(this, mean_chosen, mean_rejected)]
    cols = [jnp.asarray(PAIRS[:, i], jnp.float32) for i in range(6)]
    got = simpo_loss(*cols, beta=2.0, gamma=0.5)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=1e-6)
