"""The PPO step's paper-code behaviours: TRL's ratio-threshold skip, omit-long "replace", a new shaper.

- TRL 0.5 ``train_minibatch``: a minibatch whose mean ratio exceeds
  ``ratio_threshold`` has its loss multiplied by 0, then ``optimizer.step()`` runs
  anyway, so Adam's momentum still moves the parameters (reference: torch.optim.Adam).
- The paper's ``omit_long``: a row without EOS trains on a random ended row's
  tensors, but is scored on ``"OMMITTED " + its own response``.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlhf_jax import training
from rlhf_jax.config import load_config
from rlhf_jax.ppo import shaping
from rlhf_jax.ppo.trainer import PPOTrainer
from rlhf_jax.ppo.update import minibatch_step
from tests.helpers import SEEN

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "synthetic", "ppo.py")


def quadratic_grad_fn(ratios):
    """A loss ``½‖w − target‖²`` whose reported ratio is ``ratios[call]``."""
    def grad_fn(params, mb):
        grads = {"w": params["w"] - mb["target"]}
        stats = {"policy/ratio": mb["ratio"]}
        return (0.5 * jnp.sum(grads["w"] ** 2), stats), grads
    return grad_fn


@pytest.mark.parametrize("mode", ["zero_loss", "freeze"])
def test_ratio_skip_modes_against_torch_adam(mode):
    torch = pytest.importorskip("torch")
    w0, target = np.asarray([1.0, -2.0, 0.5]), np.asarray([0.3, 0.1, -0.4])
    tx = training.make_optimizer(lr=0.1, schedule="constant", warmup_steps=0, total_steps=2)
    params = {"w": jnp.asarray(w0, jnp.float32)}
    carry = (params, tx.init(params))
    minibatches = [{"target": jnp.asarray(target, jnp.float32), "ratio": jnp.float32(r)}
                   for r in (1.0, 25.0)]  # the second exceeds ratio_threshold = 10
    history = []
    for mb in minibatches:
        carry, stats = minibatch_step(carry, mb, grad_fn=quadratic_grad_fn(None), tx=tx,
                                      ratio_threshold=10.0, ratio_skip=mode)
        history.append(np.asarray(carry[0]["w"]))
    assert float(stats["policy/skipped"]) == 1.0
    w = torch.nn.Parameter(torch.tensor(w0))
    opt = torch.optim.Adam([w], lr=0.1)
    want = []
    for skipped in (False, True):
        loss = 0.5 * torch.sum((w - torch.tensor(target)) ** 2) * (0.0 if skipped else 1.0)
        opt.zero_grad()
        loss.backward()
        if not (skipped and mode == "freeze"):
            opt.step()
        want.append(w.detach().numpy().copy())
    np.testing.assert_allclose(history, want, rtol=1e-5, atol=1e-6)
    moved_while_skipped = np.abs(history[1] - history[0]).max()
    assert (moved_while_skipped > 1e-3) == (mode == "zero_loss")


def tiny_trainer(tmp_path, overrides):
    config = load_config(f"{CONFIG}:standard", [
        "--config.model.init=preset:tiny-llama", "--config.model.overrides.vocab_size=192",
        "--config.reward.model=", "--config.reward.kind=function",
        "--config.reward.function=tests.helpers:recording_reward", *overrides])
    trainer = PPOTrainer(config, str(tmp_path))
    return trainer, trainer.build()


def test_omit_long_replace_scores_the_omitted_text_and_trains_on_ended_rows(tmp_path):
    SEEN.clear()  # what tests.helpers.recording_reward was asked to score
    trainer, state = tiny_trainer(tmp_path, ["--config.shaping.omit_long=replace"])
    state, metrics, responses = trainer.run_step(state)
    scored = SEEN[-1]
    omitted = [s.startswith(shaping.OMITTED_PREFIX) for s in scored]
    assert 0 < sum(omitted) < len(scored)  # a random tiny model: some rows end, most do not
    assert metrics["env/omitted_fraction"] == pytest.approx(np.mean(omitted))
    for text, own, was_omitted in zip(scored, responses, omitted):
        assert text == (shaping.OMITTED_PREFIX + own if was_omitted else own)
    # The update's rows are all ended ones (the long ones replaced), but the scores are those of
    # the texts above, not gathered from the replacement rows.
    assert metrics["env/eos_fraction"] == 1.0
    assert metrics["env/reward_raw"] == pytest.approx(np.mean([len(s) for s in scored]), rel=1e-6)


@shaping.register_shaper("test_constant_seven")
def constant_seven(scores, inputs, cfg):
    """A shaper defined outside the package: every score becomes 7."""
    return jnp.full_like(scores, 7.0)


def test_a_shaper_registered_outside_the_package_runs_in_a_ppo_step(tmp_path):
    trainer, state = tiny_trainer(tmp_path, ["--config.shaping.shapers=('test_constant_seven',)",
                                             "--config.ppo.steps=1"])
    _, metrics, _ = trainer.run_step(state)
    assert metrics["env/score_shaped"] == pytest.approx(7.0)
    assert metrics["env/reward_raw"] != pytest.approx(7.0)
