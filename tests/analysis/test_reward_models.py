"""Reward-model summaries in the report: Table 4's columns, the length heuristic, cartography deciles."""

import json
import os

import numpy as np
import pytest

from rlhf_jax.analysis.report import analyze
from rlhf_jax.data.records import DataError
from rlhf_jax.reward.cartography import confidence_and_variability, plot_cartography
from rlhf_jax.samples import write_jsonl
from tests.analysis.test_report import fake_samples


def rm_result(accuracy, corr, heuristic):
    return {"eval": {"accuracy": accuracy, "reward_length_corr": corr, "length_heuristic": 0.6},
            "data": {"train": {"length_heuristic": heuristic, "pairs": 100},
                     "train_before_intervention": {"length_heuristic": 0.7, "pairs": 120},
                     "eval": {"length_heuristic": 0.6, "pairs": 50}}}


def write_workdir(path, result):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "result.json"), "w") as f:
        json.dump(result, f)
    return str(path)


@pytest.fixture
def workdirs(tmp_path):
    """A standard run, and a C-TR run whose base run (``cartography/``) logged margins per pass."""
    rng = np.random.default_rng(0)
    ids = [f"pair-{i}" for i in range(200)]
    chosen, rejected = rng.integers(5, 60, 200), rng.integers(5, 60, 200)
    passes = {k: {i: float(0.05 * (c - r) + rng.normal()) for i, c, r in zip(ids, chosen, rejected)}
              for k in range(3)}
    lengths = {i: (int(c), int(r)) for i, c, r in zip(ids, chosen, rejected)}
    base = tmp_path / "ctr" / "cartography"
    os.makedirs(base)
    stats = confidence_and_variability(passes)
    carto = plot_cartography(stats, lengths, str(base / "cartography.png"))
    write_workdir(base, {**rm_result(0.7, 0.6, 0.7), "cartography": carto})
    return {"standard": write_workdir(tmp_path / "std", rm_result(0.8, 0.83, 0.7)),
            "C-TR": write_workdir(tmp_path / "ctr", rm_result(0.78, 0.75, 0.66))}, stats, lengths


def test_reward_model_table_and_cartography_deciles(tmp_path, workdirs):
    dirs, stats, lengths = workdirs
    samples = {"sft": fake_samples(0, 0.0, 0), "ppo": fake_samples(30, 0.2, 1)}
    summary = analyze(samples, str(tmp_path / "out"), baseline="sft", reward_models=dirs)
    rows = {r["reward model"]: r for r in summary["reward_models"]}
    assert rows["standard"]["eval accuracy"] == 0.8 and rows["C-TR"]["corr(reward, length)"] == 0.75
    assert rows["C-TR"]["length heuristic (train)"] == 0.66
    assert rows["C-TR"]["length heuristic (train, before intervention)"] == 0.7
    assert list(summary["cartography"]) == ["C-TR"]
    # Independent deciles: confidence quantiles; per bin the fraction with chosen strictly longer.
    confidence = np.asarray([stats[i][0] for i in lengths])
    longer = np.asarray([lengths[i][0] > lengths[i][1] for i in lengths])
    edges = np.quantile(confidence, np.linspace(0, 1, 11))
    for b, row in enumerate(summary["cartography"]["C-TR"]):
        upper = confidence <= edges[b + 1] if b == 9 else confidence < edges[b + 1]
        members = (confidence >= edges[b]) & upper
        assert row["count"] == members.sum()
        assert row["length_heuristic"] == pytest.approx(longer[members].mean())
    page = open(tmp_path / "out" / "report.html").read()
    assert "Cartography of C-TR" in page and "Reward models (Table 4" in page
    assert any(f["file"] == "cartography_C_TR.png" for f in summary["figures"])
    assert os.path.getsize(tmp_path / "out" / "cartography_C_TR.png") > 1000


def test_missing_or_broken_result_is_named(tmp_path):
    samples = {"sft": fake_samples(0, 0.0, 0), "ppo": fake_samples(30, 0.2, 1)}
    with pytest.raises(DataError, match=r"nowhere/result.json: no result.json"):
        analyze(samples, str(tmp_path / "out"), baseline="sft",
                reward_models={"x": str(tmp_path / "nowhere")})
    write_workdir(tmp_path / "bad", {"eval": {}})
    with pytest.raises(DataError, match=r"bad/result.json: missing 'data'"):
        analyze(samples, str(tmp_path / "out"), baseline="sft",
                reward_models={"x": str(tmp_path / "bad")})


def test_analyze_command_with_reward_models(tmp_path, workdirs, capsys):
    from rlhf_jax.cli import main
    dirs, _, _ = workdirs
    for name, shift in (("sft", 0), ("ppo", 30)):
        write_jsonl(fake_samples(shift, 0.1, shift), str(tmp_path / f"{name}.jsonl"))
    main(["analyze", "--samples", f"sft={tmp_path / 'sft.jsonl'}",
          "--samples", f"ppo={tmp_path / 'ppo.jsonl'}", "--out", str(tmp_path / "report"),
          "--reward-model", f"standard={dirs['standard']}", "--reward-model", f"C-TR={dirs['C-TR']}"])
    assert "ppo vs sft: ΔR" in capsys.readouterr().out
    summary = json.load(open(tmp_path / "report" / "summary.json"))
    assert [r["reward model"] for r in summary["reward_models"]] == ["standard", "C-TR"]


def test_cartography_of_the_run_itself_and_a_missing_plot(tmp_path):
    """``rm.cartography=True`` logs into the run's own result; a deleted PNG drops just the figure."""
    from rlhf_jax.analysis.reward_models import reward_model_summaries
    bins = [{"low": 0.0, "high": 1.0, "count": 3, "length_heuristic": 0.5}]
    own = write_workdir(tmp_path / "own", {**rm_result(0.7, 0.5, 0.6), "cartography": {"bins": bins}})
    rows, maps, figures = reward_model_summaries({"own": own})
    assert maps == {"own": bins} and figures == {}  # no cartography.png beside it
    with open(os.path.join(own, "cartography.png"), "wb") as f:
        f.write(b"png")
    _, _, figures = reward_model_summaries({"own": own})
    assert figures == {"own": os.path.join(own, "cartography.png")}
    plain = write_workdir(tmp_path / "plain", rm_result(0.7, 0.5, 0.6))
    assert reward_model_summaries({"plain": plain})[1] == {}
