"""Tokenised, bucketed batches through grain: seeds, process shards, padding, drop counts."""

import numpy as np
import pytest

from rlhf_jax.data import pipeline
from rlhf_jax.data.synthetic import SyntheticTask

BUCKETS = (16, 32, 64)


@pytest.fixture(scope="module")
def tokenizer():
    return SyntheticTask().tokenizer()


@pytest.fixture(scope="module")
def examples(tokenizer):
    pairs = SyntheticTask().preference_pairs(203, alpha=1.0, beta=0.2, seed=0)
    out, drops = pipeline.tokenize_pairs(pairs, tokenizer, template="{prompt} {response}",
                                         max_length=40, append_eos=True)
    return pairs, out, drops


@pytest.mark.parametrize("append_eos", [True, False])
def test_tokenize_pairs_counts_overlong_and_measures_responses(tokenizer, append_eos):
    pairs = SyntheticTask().preference_pairs(203, alpha=1.0, beta=0.2, seed=0)
    out, drops = pipeline.tokenize_pairs(pairs, tokenizer, template="{prompt} {response}",
                                         max_length=40, append_eos=append_eos)
    words = lambda s: len(s.split())  # noqa: E731  the task's tokenizer: one token per word
    extra = int(append_eos)
    overlong = sum(max(words(p["prompt"]) + words(p["chosen"]),
                       words(p["prompt"]) + words(p["rejected"])) + extra > 40 for p in pairs)
    assert drops.total == overlong > 0 and len(out) == len(pairs) - overlong
    for e in out:
        p = pairs[e["index"]]
        assert e["chosen_len"] == words(p["chosen"]) and e["rejected_len"] == words(p["rejected"])
        assert (e["chosen_ids"][-1] == tokenizer.eos_token_id) == append_eos
        assert len(e["chosen_ids"]) == words(p["prompt"]) + words(p["chosen"]) + extra


def _indices(dataset):
    return [int(i) for batch in dataset for i, w in zip(batch["index"], batch["weight"]) if w > 0]


def _batches(out, **kw):
    return pipeline.batches(out, pipeline.collate_pairs, batch_size=8, buckets=BUCKETS, pad_id=0,
                            seed=5, **kw)


def test_same_seed_same_order_and_epochs_differ(examples):
    _, out, _ = examples
    first = _indices(_batches(out, epoch=0))
    assert first == _indices(_batches(out, epoch=0))
    assert first != _indices(_batches(out, epoch=1))
    assert len(first) == len(out) // 8 * 8 and len(set(first)) == len(first)


@pytest.mark.parametrize("count", [2, 3])
def test_process_shards_are_disjoint_and_cover(examples, count):
    _, out, _ = examples
    shards = [_indices(_batches(out, process_index=i, process_count=count)) for i in range(count)]
    assert len({len(s) for s in shards}) == 1  # the same number of steps on every process
    union = set().union(*shards)
    assert sum(len(s) for s in shards) == len(union)  # disjoint
    assert len(union) == len(out) // (8 * count) * 8 * count  # covers the trimmed set
    evals = [_indices(_batches(out, train=False, process_index=i, process_count=count))
             for i in range(count)]
    assert sorted(sum(evals, [])) == sorted(e["index"] for e in out)  # eval: every example once


def test_batches_are_padded_to_buckets(examples):
    _, out, _ = examples
    for batch in _batches(out, train=False):
        width = batch["chosen_ids"].shape[1]
        assert width in BUCKETS and batch["chosen_ids"].shape == (8, width)
        longest = max(batch["chosen_mask"].sum(1).max(), batch["rejected_mask"].sum(1).max())
        assert width == min(b for b in BUCKETS if b >= longest)
        real = batch["weight"] > 0
        assert np.all(batch["chosen_ids"][real][batch["chosen_mask"][real] == 0] == 0)


def test_bucket_width_errors_beyond_the_largest():
    assert pipeline.bucket_width(16, BUCKETS) == 16 and pipeline.bucket_width(17, BUCKETS) == 32
    with pytest.raises(ValueError, match="largest bucket 64"):
        pipeline.bucket_width(65, BUCKETS)


def test_sft_loss_mask_covers_the_response_and_eos(tokenizer):
    rows = SyntheticTask().sft_examples(5, seed=0)
    out, drops = pipeline.tokenize_sft(rows, tokenizer, max_length=64)
    assert drops.total == 0
    for row, e in zip(rows, out):
        n_prompt, n_resp = len(row["prompt"].split()), len(row["response"].split())
        assert e["loss_mask"].tolist() == [0] * n_prompt + [1] * (n_resp + 1)
        assert e["ids"][-1] == tokenizer.eos_token_id


def test_eval_batches_match_across_processes_and_fillers_weigh_nothing(examples):
    _, out, _ = examples
    per_process = [list(_batches(out[:37], train=False, process_index=i, process_count=3))
                   for i in range(3)]
    assert len({len(b) for b in per_process}) == 1
    weights = sum(float(b["weight"].sum()) for batches in per_process for b in batches)
    assert weights == 37


def test_every_process_pads_a_step_to_the_same_width(examples):
    _, out, _ = examples
    widths = [[b["chosen_ids"].shape[1] for b in _batches(out, process_index=i, process_count=2)]
              for i in range(2)]
    assert widths[0] == widths[1]
