"""PPO on the synthetic task with a tiny policy: the paper's directions, asserted with margins.

Chain (the shared demo study of ``tests/conftest.py``): SFT
(``configs/synthetic/sft.py``) → a length-biased reward model
(``configs/synthetic/rm.py``: labels σ(Δquality + 0.3·Δlength)) → PPO
(``configs/synthetic/ppo.py``). Asserted (Singhal et al. §4–5):

- standard PPO raises the reward-model score and the mean response length;
- LPPO (reward = 1 − |len/N − 1|, N = 30 words; its β = 0 variant) moves the
  length toward N while the reward-model score (a monitor there) also rises. (With
  β = 0.04 the length reward, worth 1/N = 0.03 per word, stalls against the KL
  penalty on this small task: 12 → 15 words in 40 steps.)
- a larger KL coefficient (0.12 vs 0.04, the paper's high-KL setting) gives a
  smaller KL and a smaller length change;
- stopping after k steps and resuming reproduces the uninterrupted run;
- a separate value model (initialised from the reward model) trains too.
"""

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from rlhf_jax.config import load_config
from rlhf_jax.ppo.trainer import train_ppo

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "synthetic")


@pytest.fixture(scope="module")
def exports(demo_study):
    """The SFT and standard reward-model exports of the shared demo study (see conftest)."""
    workdir, _ = demo_study
    return os.path.join(workdir, "sft", "export"), os.path.join(workdir, "rm", "export")


def ppo(exports, workdir, variant="standard", extra=(), **kwargs):
    sft, rm = exports
    overrides = [f"--config.model.init={sft}", f"--config.reward.model={rm}", *extra]
    return train_ppo(load_config(os.path.join(CONFIGS, f"ppo.py:{variant}"), overrides),
                     str(workdir), **kwargs)


@pytest.fixture(scope="module")
def runs(demo_study):
    """The demo study's PPO runs: ``configs/synthetic/ppo.py`` standard, high_kl and lppo_beta0."""
    workdir, _ = demo_study
    return {v: json.load(open(os.path.join(workdir, f"ppo_{v}", "result.json")))
            for v in ("standard", "high_kl", "lppo_beta0")}


def change(result, key):
    s = result["summary"][key]
    return s["last"] - s["first"]


@pytest.mark.slow
def test_ppo_raises_reward_model_score_and_length(runs):
    standard = runs["standard"]
    assert change(standard, "env/rm_score") > 1.0
    assert change(standard, "env/response_length") > 3.0


@pytest.mark.slow
def test_lppo_moves_length_toward_target_and_rm_score_rises(runs):
    lppo = runs["lppo_beta0"]["summary"]["env/response_length"]
    assert abs(lppo["last"] - 30) < abs(lppo["first"] - 30) - 10
    assert change(runs["lppo_beta0"], "env/rm_score") > 1.0


@pytest.mark.slow
def test_higher_kl_coefficient_gives_smaller_kl_and_length_change(runs):
    standard, high = runs["standard"], runs["high_kl"]
    assert high["summary"]["objective/kl"]["last"] < standard["summary"]["objective/kl"]["last"] - 0.5
    assert change(high, "env/response_length") < change(standard, "env/response_length") - 1.0


def _metrics(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


@pytest.mark.slow
def test_stop_and_resume_reproduces_the_uninterrupted_run(exports, tmp_path):
    extra = ["--config.ppo.steps=6", "--config.ppo.save_every=3"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    ppo(exports, straight, extra=extra)
    partial = ppo(exports, resumed, extra=extra, stop_after=3)
    assert partial["stopped_at"] == 3
    ppo(exports, resumed, extra=extra)
    a, b = _metrics(straight), _metrics(resumed)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a, b):
        for key in ra:
            assert rb[key] == pytest.approx(ra[key], abs=1e-6), (ra["step"], key)
    pa = load_file(os.path.join(straight, "export", "model.safetensors"))
    pb = load_file(os.path.join(resumed, "export", "model.safetensors"))
    assert max(float(np.max(np.abs(pa[k] - pb[k]))) for k in pa) <= 1e-6


@pytest.mark.slow
def test_separate_value_model_from_the_reward_model(exports, tmp_path):
    result = ppo(exports, tmp_path, extra=["--config.ppo.steps=3", "--config.ppo.value_model=separate"])
    values = [row["loss/value"] for row in result["history"]]
    assert len(values) == 3 and all(np.isfinite(values))
    assert result["summary"]["env/rm_score"]["last"] > result["summary"]["env/rm_score"]["first"]
