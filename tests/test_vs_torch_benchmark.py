"""The TRL/PyTorch comparison harness runs on the tiny preset, and both sides do the same work:
the same sampled tokens, the same optimizer steps, and (same weights, same batch) the same
first supervised loss."""

import importlib.util
import json

import pytest

from rlhf_jax.benchmarks.vs_torch import report
from rlhf_jax.benchmarks.vs_torch.__main__ import parse_args, run_cases
from rlhf_jax.benchmarks.vs_torch.work import Case

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("trl") is None,
                                 reason="needs trl==0.11.4 (the bench extra)")]

CASES = [Case("ppo", 4, 2, prompt_len=8, new_tokens=8, reward="model"),
         Case("ppo", 4, 4, prompt_len=8, new_tokens=8),
         Case("rm", 2, seq_len=16), Case("sft", 2, seq_len=16)]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "rounds.json"
    args = parse_args(["--model", "tiny", "--rounds", "1", "--repeats", "1", "--threads", "1",
                       "--json", str(path)])
    return run_cases(CASES, args), path


def test_both_stacks_do_the_same_work(records):
    records, path = records
    assert path.exists()
    got = {(Case(**r["case"]).name, r["stack"]): r for r in records}
    assert len(got) == 2 * len(CASES)
    for case in CASES:
        ours, torch = got[(case.name, "ours")], got[(case.name, "torch")]
        assert ours["optimizer_steps"] == torch["optimizer_steps"] == case.optimizer_steps, (ours, torch)
        assert ours["peak_rss"] > 0 and torch["peak_rss"] > 0
        if case.kind == "ppo":
            for side in (ours, torch):
                assert [r["sampled_tokens"] for r in side["runs"]] == [case.sampled_tokens], side
                phases = side["runs"][0]
                assert 0 < sum(phases[k] for k in report.PPO_PHASES[:-1]) <= phases["iteration"]
        else:  # same weights and batch: the same loss before the first update
            assert ours["first_loss"] == pytest.approx(torch["first_loss"], rel=1e-4, abs=1e-5), \
                (ours, torch)


def test_tables_give_each_phase_and_the_ratio(records):
    text = report.tables(records[0])
    assert "speed-up (TRL s / ours s)" in text and "old log-probs + values s" in text
    assert "rm 2×16" in text and "sft 2×16" in text


def test_bfloat16_compute_on_both_stacks(records, tmp_path):
    """``--dtype bfloat16`` (the GPU script's second run) on CPU: both sides run every case in
    bfloat16 with float32 master weights. The first supervised losses agree to bfloat16's
    precision (rel 2e-2) and differ from each side's float32 loss (so the dtype took effect)."""
    float32 = {(Case(**r["case"]).name, r["stack"]): r for r in records[0]}
    cases = [Case("ppo", 4, 4, prompt_len=8, new_tokens=8), Case("rm", 2, seq_len=16),
             Case("sft", 2, seq_len=16)]
    args = parse_args(["--model", "tiny", "--rounds", "1", "--repeats", "1", "--threads", "1",
                       "--dtype", "bfloat16", "--json", str(tmp_path / "bf16.json")])
    got = {(Case(**r["case"]).name, r["stack"]): r for r in run_cases(cases, args)}
    assert json.loads((tmp_path / "bf16.json").read_text())["dtype"] == "bfloat16"
    for case in cases:
        ours, torch = got[(case.name, "ours")], got[(case.name, "torch")]
        assert ours["optimizer_steps"] == torch["optimizer_steps"] == case.optimizer_steps
        if case.kind != "ppo":
            assert ours["first_loss"] == pytest.approx(torch["first_loss"], rel=2e-2), (ours, torch)
            for side in ("ours", "torch"):
                assert got[(case.name, side)]["first_loss"] != float32[(case.name, side)][
                    "first_loss"], (side, case.name)
