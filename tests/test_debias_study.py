"""The debiasing study (``rlhf-jax run configs/debias.py``): its directions, with margins.

One run per module (~3 minutes on 2 CPU cores), the demo study's SFT stage reused (the same
config, so the stage is finished). The synthetic task's gold quality is the ground truth. What
the measured run shows (README, "Debiasing methods against ground truth"), asserted here:

- standard PPO more than triples the length and loses gold quality against SFT, while the
  reward model judges it the winner: the reward is hacked through length;
- ODIN's quality head is nearly uncorrelated with length while the standard reward model's
  score tracks it; PPO on that head lengthens far less and loses less gold than standard PPO;
- the calibrated reward also lengthens far less and loses less gold than standard PPO, but
  still loses gold against SFT (whether it loses more than ODIN varies between processes:
  PPO amplifies float32-level differences, and this module's run gave ODIN −2.2 where the
  README's CLI run gave −1.0, so that comparison is not asserted);
- the DPO family gains gold quality over SFT, R-DPO with the least lengthening of the three;
- Dr. GRPO, without GRPO's 1/|o_i| and std terms and its KL, runs to the length cap with the
  worst gold; GRPO stays far shorter.
"""

import os
import shutil

import pytest

from rlhf_jax.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEBIASING = ("odin", "calibrated", "grpo", "dr_grpo", "dpo", "rdpo", "simpo")


@pytest.fixture(scope="module")
def study(demo_study, tmp_path_factory):
    from rlhf_jax.study import run_study
    workdir = str(tmp_path_factory.mktemp("debias"))
    shutil.copytree(os.path.join(demo_study[0], "sft"), os.path.join(workdir, "sft"))
    result = run_study(load_config(os.path.join(ROOT, "configs", "debias.py")), workdir)
    return workdir, result, {row["policy"]: row for row in result["policies"]}


@pytest.mark.slow
def test_every_method_has_its_row(study):
    _, result, rows = study
    assert list(rows) == ["sft", "standard", "high_kl", *DEBIASING]
    for name in DEBIASING:
        row = rows[name]
        assert row["win_ci_low"] <= row["win_rate_vs_sft"] <= row["win_ci_high"]
        for key in ("length", "gold_gain", "lc_win_rate_vs_sft", "rm_win_rate_vs_sft"):
            assert row[key] is not None, (name, key)


@pytest.mark.slow
def test_standard_ppo_hacks_the_reward_through_length(study):
    rows = study[2]
    sft, standard = rows["sft"], rows["standard"]
    assert standard["length"] > 2.5 * sft["length"]
    assert standard["gold_gain"] < -2.0
    assert standard["win_ci_high"] < 0.3           # the gold judge: it loses to SFT
    assert standard["rm_win_rate_vs_sft"] > 0.95   # the reward model: it wins


@pytest.mark.slow
def test_odin_quality_head_ignores_length_and_ppo_on_it_lengthens_less(study):
    _, result, rows = study
    rms = {r["reward model"]: r for r in result["reward_models"]}
    assert rms["standard"]["corr(reward, length)"] > 0.6
    assert abs(rms["ODIN"]["corr(quality head, length)"]) < 0.2
    assert rms["ODIN"]["eval accuracy"] > rms["standard"]["eval accuracy"] - 0.05  # summed heads
    assert rows["odin"]["length"] < rows["standard"]["length"] - 10
    assert rows["odin"]["gold_gain"] > rows["standard"]["gold_gain"] + 1.5


@pytest.mark.slow
def test_calibration_shortens_and_loses_less_gold_than_standard_but_still_loses_it(study):
    rows = study[2]
    assert rows["calibrated"]["length"] < rows["standard"]["length"] - 10
    assert rows["calibrated"]["gold_gain"] > rows["standard"]["gold_gain"] + 2.0
    assert rows["calibrated"]["gold_gain"] < 0.0


@pytest.mark.slow
def test_direct_preference_methods_gain_gold_and_rdpo_lengthens_least(study):
    rows = study[2]
    for name in ("dpo", "rdpo"):
        assert rows[name]["gold_gain"] > rows["standard"]["gold_gain"] + 3.0
        assert rows[name]["gold_gain"] > 0.0
        assert rows[name]["length"] < rows["standard"]["length"] - 10
    assert rows["rdpo"]["length"] < min(rows["dpo"]["length"], rows["simpo"]["length"]) - 1.0


@pytest.mark.slow
def test_dr_grpo_runs_to_the_cap_and_grpo_does_not(study):
    rows = study[2]
    assert rows["dr_grpo"]["length"] > rows["grpo"]["length"] + 10
    assert rows["dr_grpo"]["gold_gain"] < rows["grpo"]["gold_gain"] - 10
    assert rows["dr_grpo"]["nrg_over_delta_r"] is None  # no length bin shared with SFT


@pytest.mark.slow
def test_report_has_the_gain_plot_and_both_judges(study):
    workdir, result, _ = study
    page = open(result["report"]).read()
    assert "Gold quality gain against length gain" in page
    assert "reward-model judge" in page and "gold judge" in page
    assert os.path.isfile(os.path.join(workdir, "report", "gold_vs_length_gain.png"))
