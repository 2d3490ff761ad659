"""The analyze report: tables against direct computations, plots written, HTML self-contained."""

import json
import os
import re

import numpy as np
import pytest

from rlhf_jax.analysis import weighted_reward_gain
from rlhf_jax.analysis.report import analyze


def fake_samples(shift_len, shift_score, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(20):
        for s in range(4):
            length = int(rng.integers(10, 120)) + shift_len
            rows.append({"prompt_id": str(p), "sample_id": s, "prompt": f"q{p}", "text": "x",
                         "length": length, "eos": True,
                         "score": 0.02 * length + shift_score + float(rng.normal())})
    return rows


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("report"))
    samples = {"sft": fake_samples(0, 0.0, 0), "ppo": fake_samples(60, 0.2, 1)}
    return samples, out, analyze(samples, out, baseline="sft", curves=fake_curves())


def fake_curves():
    return {"ppo": [{"step": i, "env/rm_score": i / 10, "env/response_length": 10 + i,
                     "objective/kl": i / 100, "objective/kl_coef": 0.04} for i in range(1, 20)]}


def test_tables_match_direct_computations(report):
    samples, _, summary = report
    gain = weighted_reward_gain([r["length"] for r in samples["sft"]], [r["score"] for r in samples["sft"]],
                                [r["length"] for r in samples["ppo"]], [r["score"] for r in samples["ppo"]])
    row = summary["gains"][0]
    assert row["policy"] == "ppo" and row["nrg"] == pytest.approx(gain.nrg)
    assert row["ratio"] == pytest.approx(gain.ratio)
    ppo = next(p for p in summary["policies"] if p["policy"] == "ppo")
    assert ppo["mean_length"] == pytest.approx(np.mean([r["length"] for r in samples["ppo"]]))


def test_files_and_self_contained_html(report):
    _, out, summary = report
    for name in ("summary.json", "report.md", "report.html", "lengths.png", "gain_ppo.png",
                 "hist2d_sft.png", "training_curves.png"):
        assert os.path.getsize(os.path.join(out, name)) > 200, name
    page = open(os.path.join(out, "report.html")).read()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == len(summary["figures"]) >= 5
    assert "NRG" in page and "<table>" in page and "src='http" not in page
    assert json.load(open(os.path.join(out, "summary.json")))["baseline"] == "sft"


def test_policies_must_share_prompts(tmp_path):
    a, b = fake_samples(0, 0, 0), fake_samples(0, 0, 1)
    b = [r for r in b if r["prompt_id"] != "3"]
    with pytest.raises(ValueError, match="not sampled on the same prompts"):
        analyze({"sft": a, "ppo": b}, str(tmp_path), baseline="sft")
    unscored = [{k: v for k, v in r.items() if k != "score"} for r in a]
    with pytest.raises(ValueError, match="have no 'score'"):
        analyze({"sft": a, "ppo": unscored}, str(tmp_path), baseline="sft")
