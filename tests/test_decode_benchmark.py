"""Pure helpers of the decode benchmark (the benchmark itself is a script, not a test)."""

import math

import pytest

from rlhf_jax.benchmarks.decode import median_over_rounds, parse_args


def _run(decode_s, total_s, tokens):
    return {"weight_bytes": 10, "cases": {"16": {"decode_s": decode_s, "total_s": total_s,
                                                 "tokens": tokens}}}


def test_median_over_rounds_takes_each_timing_median_and_first_tokens():
    runs = [_run(3.0, 4.0, [[1]]), _run(1.0, 9.0, [[2]]), _run(2.0, 5.0, [[3]])]
    case = median_over_rounds(runs)["cases"]["16"]
    assert case["decode_s"] == 2.0 and case["total_s"] == 5.0
    assert case["tokens"] == [[1]] and case["decode_s_rounds"] == [3.0, 1.0, 2.0]
    assert median_over_rounds(runs)["weight_bytes"] == 10


def test_one_round_is_the_run_itself():
    case = median_over_rounds([_run(2.5, 3.0, [[7]])])["cases"]["16"]
    assert math.isclose(case["decode_s"], 2.5) and case["decode_s_rounds"] == [2.5]


def test_rounds_must_be_positive():
    with pytest.raises(SystemExit):
        parse_args(["--rounds", "0"])
