"""Post-hoc length calibration: the fit against statsmodels' LOWESS on the same points, the
calibrated score r − b̂(len), its file, PPO's use of it, and ``train-rm`` storing it."""

import json
import os

import jax
import numpy as np
import pytest
from statsmodels.nonparametric.smoothers_lowess import lowess

from rlhf_jax.config import ConfigError
from rlhf_jax.defaults import ppo_config
from rlhf_jax.models import ScalarModel, config_from_hf, init_params
from rlhf_jax.models.build import save_scalar_model
from rlhf_jax.models.errors import CheckpointError
from rlhf_jax.models.presets import preset_config
from rlhf_jax.ppo.rewards import Rewards
from rlhf_jax.reward.calibration import (CALIBRATION_FILE, fit_lowess, load_calibration,
                                         response_lengths)


def points(n=300, seed=0):
    """Lengths with ties, a non-linear length trend, quality, noise."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 400, n).astype(np.float64)
    quality = rng.normal(size=n)
    rewards = 2.0 * np.sqrt(lengths / 400) + quality + 0.1 * rng.normal(size=n)
    return lengths, rewards, quality


@pytest.mark.parametrize("frac, it", [(0.3, 3), (0.66, 0)])
def test_the_fit_is_statsmodels_lowess_on_the_same_points(frac, it):
    lengths, rewards, _ = points()
    calibration = fit_lowess(lengths, rewards, frac=frac, it=it)
    want = lowess(rewards, lengths, frac=frac, it=it, return_sorted=False)  # per input point
    np.testing.assert_allclose(calibration.trend(lengths), want, rtol=1e-12, atol=1e-12)
    assert calibration.points == 300 and len(calibration.lengths) == len(np.unique(lengths))
    # between stored lengths: linear; beyond them: the end values
    a, b = calibration.lengths[10], calibration.lengths[11]
    mid = calibration.trend([(a + b) / 2])[0]
    assert mid == pytest.approx((calibration.baseline[10] + calibration.baseline[11]) / 2)
    assert calibration.trend([0.0, 1e6]).tolist() == [calibration.baseline[0],
                                                      calibration.baseline[-1]]


def test_calibration_removes_the_length_trend_and_keeps_quality():
    lengths, rewards, quality = points(2000)
    calibrated = fit_lowess(lengths, rewards).calibrate(rewards, lengths)
    assert np.corrcoef(lengths, rewards)[0, 1] > 0.4
    assert abs(np.corrcoef(lengths, calibrated)[0, 1]) < 0.05
    assert np.corrcoef(quality, calibrated)[0, 1] > 0.95
    assert calibrated.dtype == np.float32


def test_the_stored_file_round_trips_and_a_broken_one_is_named(tmp_path):
    lengths, rewards, _ = points()
    calibration = fit_lowess(lengths, rewards)
    assert load_calibration(str(tmp_path)) is None
    calibration.save(str(tmp_path))
    loaded = load_calibration(str(tmp_path))
    np.testing.assert_array_equal(loaded.trend(lengths), calibration.trend(lengths))
    (tmp_path / CALIBRATION_FILE).write_text('{"method": "lowess", "lengths": [1, 2]}')
    with pytest.raises(CheckpointError, match=f"{CALIBRATION_FILE}: not a length calibration"):
        load_calibration(str(tmp_path))


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    from tests.test_cli import word_tokenizer
    path = str(tmp_path_factory.mktemp("rm"))
    model = ScalarModel(config_from_hf(preset_config("tiny-llama")))
    save_scalar_model(model, init_params(model, jax.random.key(0)), path, tokenizer=word_tokenizer())
    return path


def reward_section(path, calibration):
    cfg = ppo_config().reward
    cfg.model, cfg.template, cfg.max_length, cfg.buckets = path, "{prompt} {response}", 32, (32,)
    cfg.calibration = calibration
    return cfg


def test_ppo_scores_are_calibrated_with_the_stored_trend(reward_model):
    prompts = ["the cat"] * 4
    responses = ["sat", "sat on the mat", "a dog ran on the mat and the cat sat", "ran"]
    raw, _ = Rewards(reward_section(reward_model, "none"))(prompts, responses)
    with pytest.raises(ConfigError, match=f"has no {CALIBRATION_FILE}; train the reward model "
                                          "with rm.calibration='lowess'"):
        Rewards(reward_section(reward_model, "lowess"))
    lengths, rewards, _ = points()
    calibration = fit_lowess(lengths / 10, rewards)
    calibration.save(reward_model)
    try:
        scores, monitor = Rewards(reward_section(reward_model, "lowess"))(prompts, responses)
    finally:
        os.remove(os.path.join(reward_model, CALIBRATION_FILE))
    want = raw - calibration.trend(response_lengths(responses))
    np.testing.assert_allclose(scores, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(scores, monitor)
    with pytest.raises(ConfigError, match="'reward.calibration' = 'loess'"):
        Rewards(reward_section(reward_model, "loess"))


@pytest.mark.slow
def test_train_rm_stores_the_calibration_fitted_on_its_eval_pairs(tmp_path):
    from rlhf_jax import cli
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "configs",
                          "synthetic", "rm.py")
    workdir = str(tmp_path / "rm")
    assert cli.main(["train-rm", "--config", config, "--workdir", workdir,
                     "--config.rm.calibration=lowess", "--config.data.synthetic.num_train=256",
                     "--config.data.synthetic.num_eval=100", "--config.rm.epochs=1"]) == 0
    with open(os.path.join(workdir, "result.json")) as f:
        summary = json.load(f)["calibration"]
    assert summary["points"] == 200  # both responses of each eval pair
    stored = load_calibration(os.path.join(workdir, "export"))
    assert stored.points == 200 and stored.frac == 0.3 and stored.it == 3
    # the length-biased reward model's scores lose their length correlation
    assert summary["length_reward_corr"] > 0.2
    assert abs(summary["length_reward_corr_calibrated"]) < 0.1
