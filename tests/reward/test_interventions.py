"""The paper's reward-model interventions against independent loops (Table 4)."""

import collections

import numpy as np
import pytest

from rlhf_jax.reward import cartography, interventions


def examples_with_diffs(diffs):
    return [{"id": f"e{i}", "index": i, "chosen_len": 50 + d, "rejected_len": 50}
            for i, d in enumerate(diffs)]


def test_length_heuristic_is_strict():
    chosen, rejected = [5, 3, 4, 9], [4, 3, 6, 1]
    expected = sum(c > r for c, r in zip(chosen, rejected)) / 4
    assert interventions.length_heuristic(chosen, rejected) == expected == 0.5


def reference_bin(d, width=10):
    """Mirror-pair key of d: ("pos", k) for d in (k·w, (k+1)·w], ("neg", k) for d in [−(k+1)·w, −k·w)."""
    if d == 0:
        return ("tie", 0)
    for k in range(1000):
        if k * width < d <= (k + 1) * width:
            return ("pos", k)
        if -(k + 1) * width <= d < -k * width:
            return ("neg", k)


def test_bal_is_symmetric_and_drops_far_differences():
    rng = np.random.default_rng(0)
    diffs = np.concatenate([rng.normal(15, 25, 3000).round().astype(int), [250, -240, -200, 200]])
    kept = interventions.balance_by_length(examples_with_diffs(diffs), seed=1)
    counts = collections.Counter(reference_bin(e["chosen_len"] - e["rejected_len"]) for e in kept)
    for k in range(20):
        assert counts[("pos", k)] == counts[("neg", k)], k
    assert counts[("tie", 0)] == int(np.sum(diffs == 0))  # ties carry no preference: all kept
    kept_diffs = [e["chosen_len"] - e["rejected_len"] for e in kept]
    assert max(kept_diffs) <= 200 and min(kept_diffs) >= -200
    assert 200 in kept_diffs and -200 in kept_diffs  # the outermost bins are mirror images
    lens_c = [e["chosen_len"] for e in kept]
    lens_r = [e["rejected_len"] for e in kept]
    # Within each mirrored bin pair, half are chosen-longer: the heuristic is ≤ 0.5.
    assert interventions.length_heuristic(lens_c, lens_r) <= 0.5
    assert len(kept) > 1000
    again = interventions.balance_by_length(examples_with_diffs(diffs), seed=1)
    assert [e["id"] for e in again] == [e["id"] for e in kept]


def test_bal_per_bin_count_is_the_minimum():
    diffs = [3, 5, 7, -2, -10, 0, 15, 16, -11, -12, -13, -19, 10]
    kept = interventions.balance_by_length(examples_with_diffs(diffs), seed=0)
    counts = collections.Counter(reference_bin(e["chosen_len"] - e["rejected_len"]) for e in kept)
    assert counts == {("pos", 0): 2, ("neg", 0): 2, ("pos", 1): 2, ("neg", 1): 2, ("tie", 0): 1}


def pairs(n):
    return [{"id": f"p{i}", "prompt": f"q{i}", "chosen": f"good{i}", "rejected": f"bad{i}"}
            for i in range(n)]


def test_random_data_augmentation_never_pairs_answers_to_the_same_question():
    base = pairs(40) + [{"id": "dup", "prompt": "q0", "chosen": "other0", "rejected": "x"}]
    out = interventions.random_data_augmentation(base, fraction=1.0, seed=0)
    by_prompt = {}
    for p in base:
        by_prompt.setdefault(p["prompt"], set()).add(p["chosen"])
    for p in out:
        if p["id"].endswith("/rda"):
            assert p["rejected"] not in by_prompt[p["prompt"]]


def test_random_data_augmentation():
    base = pairs(40)
    out = interventions.random_data_augmentation(base, fraction=0.25, seed=3)
    assert len(out) == 50
    augmented = [p for p in out if p["id"].endswith("/rda")]
    assert len(augmented) == 10
    for p in augmented:
        i = int(p["id"][1:-4])
        assert p["prompt"] == f"q{i}" and p["chosen"] == f"good{i}"
        assert p["rejected"].startswith("good") and p["rejected"] != f"good{i}"
    assert sorted(p["id"] for p in out if not p["id"].endswith("/rda")) == sorted(
        p["id"] for p in base)
    assert [p["id"] for p in out] != [p["id"] for p in base + augmented]  # reshuffled
    assert out == interventions.random_data_augmentation(base, fraction=0.25, seed=3)


def test_random_data_augmentation_rejects_bad_fraction():
    with pytest.raises(ValueError, match="fraction"):
        interventions.random_data_augmentation(pairs(4), fraction=1.5, seed=0)


def test_cartography_statistics_and_selection(tmp_path):
    log = str(tmp_path / "cartography.jsonl")
    margins = {"a": [9.0, 1.0, 3.0, 2.0], "b": [0.0, -1.0, 1.0, 0.0], "c": [5.0, 4.0, 6.0, 5.0]}
    for k in range(4):
        cartography.append_pass(log, k, list(margins), [m[k] for m in margins.values()])
    stats = cartography.confidence_and_variability(cartography.read_passes(log))
    for key, values in margins.items():
        later = np.asarray(values[1:])  # the first pass is skipped
        assert stats[key] == pytest.approx((later.mean(), later.std(ddof=1)))
    examples = [{"id": k} for k in ("a", "b", "c", "missing")]
    kept = cartography.select_by_confidence(examples, stats, low=-0.5, high=3.0)
    assert [e["id"] for e in kept] == ["a", "b"]
    low, high = cartography.thresholds(stats, 0.0, 0.5, by="quantile")
    assert (low, high) == (-np.inf, 2.0)  # the confidences are 0, 2, 5; quantile 0 stays open
    kept = cartography.select_by_confidence(examples, stats, low=low, high=high)
    assert [e["id"] for e in kept] == ["b"]  # strict: the median itself is out
    table = cartography.plot_cartography(stats, {"a": (5, 3), "b": (2, 4), "c": (6, 1)},
                                         str(tmp_path / "map.png"), bins=3)
    assert (tmp_path / "map.png").stat().st_size > 1000
    assert sum(row["count"] for row in table["bins"]) == 3


def test_cartography_needs_two_passes_and_valid_lines(tmp_path):
    with pytest.raises(ValueError, match="≥ 2 passes"):
        cartography.confidence_and_variability({0: {"a": 1.0}})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"pass": 0, "margins": {}}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        cartography.read_passes(str(bad))


def test_ctr_is_examine_dcarto_with_the_papers_cuts(tmp_path):
    """The notebook (de0344a ``notebooks/eval/examine_dcarto.ipynb``): per uid, the margins
    ``rew_j − rew_k`` in log order; ``confs = mean(m[1:])``, ``vars = stdev(m[1:])``; keep
    ``(confs > low) & (confs < high)`` with WebGPT's cuts (−0.2, 0.4)."""
    import statistics

    from rlhf_jax.defaults import PAPER_CTR_CUTS, paper_reward_model_config
    rng = np.random.default_rng(4)
    ids = [f"e{i}" for i in range(40)]
    margins = {i: list(rng.normal(0.1, 0.4, 5)) for i in ids}
    margins["e0"][1:] = [0.4] * 4     # confidence exactly on the upper cut: out (strict)
    margins["e1"][1:] = [-0.2] * 4    # exactly on the lower cut: out
    log = str(tmp_path / "carto.jsonl")
    for k in range(5):
        cartography.append_pass(log, k, ids, [margins[i][k] for i in ids])
    stats = cartography.confidence_and_variability(cartography.read_passes(log))
    config = paper_reward_model_config("webgpt", "ctr")
    assert (config.rm.ctr.low, config.rm.ctr.high) == PAPER_CTR_CUTS["webgpt"] == (-0.2, 0.4)
    assert config.rm.ctr.by == "value" and config.rm.ctr.cartography_epochs == 5
    low, high = cartography.thresholds(stats, config.rm.ctr.low, config.rm.ctr.high,
                                       by=config.rm.ctr.by)
    kept = {e["id"] for e in cartography.select_by_confidence([{"id": i} for i in ids], stats,
                                                              low=low, high=high)}
    confs = {i: statistics.mean(margins[i][1:]) for i in ids}
    want = {i for i in ids if confs[i] > -0.2 and confs[i] < 0.4}
    assert kept == want and "e0" not in kept and "e1" not in kept and 0 < len(want) < len(ids)
    for i in ids:
        assert stats[i][1] == pytest.approx(statistics.stdev(margins[i][1:]), abs=1e-12)


def test_interventions_are_a_registry():
    assert set(interventions.RM_INTERVENTIONS) >= {"none", "bal", "rda", "ctr"}
    assert interventions.RM_INTERVENTIONS["ctr"].needs_cartography
    assert not interventions.RM_INTERVENTIONS["bal"].needs_cartography
