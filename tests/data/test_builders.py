"""TFDS builders (rlhf_jax.data.sources.*, base in data.tfds_pairs): array_record datasets read back through load_pairs.

Each builder is built from local files written in the source's public schema into a tmp
data_dir, and must give exactly the reader's pairs, in the reader's order, as str. The
download path is exercised by pointing tfds' DownloadManager at local files (no network).
"""

import csv
import functools
import gzip
import json
import os
import pickle
from pathlib import Path

import grain
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import HH_HARMLESS_TEST, real_hh_harmless_test
import tensorflow_datasets as tfds

from rlhf_jax.data import sources
from rlhf_jax.data.sources import load_pairs, make_builder
from rlhf_jax.data.tfds_pairs import PairSource

HH_TEST = HH_HARMLESS_TEST


def write_jsonl(path, rows, gz=False):
    text = "".join(json.dumps(r) + "\n" for r in rows)
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write(text)
    return path


def webgpt_rows(n=8):
    rows = []
    for i in range(n):
        s0 = [1.0, -1.0, 0.0][i % 3]
        rows.append({"question": {"full_text": f"question {i}?", "id": f"q{i}", "dataset": "eli5"},
                     "quotes_0": {"title": [], "extract": []}, "answer_0": f"a0 {i} ünïcode",
                     "tokens_0": {"prompt": [], "completion": []}, "score_0": s0,
                     "quotes_1": {"title": [], "extract": []}, "answer_1": f"a1 {i}",
                     "tokens_1": {"prompt": [], "completion": []}, "score_1": -s0})
    return rows


def stack_tree(root):
    for folder, n in (("reward", 4), ("evaluation", 2)):
        (root / "data" / folder).mkdir(parents=True)
        rows = [{"qid": i, "question": f"{folder} q{i}", "date": "d", "metadata": ["m"],
                 "response_j": f"{folder} j{i}", "response_k": f"{folder} k{i}"} for i in range(n)]
        pq.write_table(pa.Table.from_pylist(rows), root / "data" / folder / "train-00000-of-00001.parquet")
    return root


def rlcd_csv(path, n=9):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["instruction", "input", "output_1", "output_2", "preference"])
        for i in range(n):
            w.writerow([f"Human: q{i}\n\nAssistant:", "", "" if i == 4 else f"o1 {i}", f"o2 {i}", 1 + i % 2])
    return path


def hh_dir(root):
    root.mkdir()
    base = "\n\nHuman: hi {i}\n\nAssistant:"
    for split, n in (("train", 5), ("test", 3)):
        rows = [{"chosen": base.format(i=i) + f" good {i}", "rejected": base.format(i=i) + f" bad {i}"}
                for i in range(n)]
        write_jsonl(root / f"{split}.jsonl.gz", rows, gz=True)
    return root


def local_file(path):
    return write_jsonl(path, [{"p": f"p{i}", "c": f"c{i}", "r": f"r{i}"} for i in range(5)])


# source, make the local copy, reader options, builder-only options
CASES = {
    "webgpt": (lambda t: write_jsonl(t / "comparisons.jsonl", webgpt_rows()), {"train_size": 5}, {}),
    "stack_exchange": (lambda t: stack_tree(t / "stack"), {}, {}),
    "rlcd": (lambda t: rlcd_csv(t / sources.RLCD_FILE), {"train_size": 6}, {}),
    "hh_rlhf": (lambda t: hh_dir(t / "harmless-base"), {}, {"subset": "harmless-base"}),
    "local": (lambda t: local_file(t / "pairs.jsonl"),
              {"prompt_field": "p", "chosen_field": "c", "rejected_field": "r"}, {}),
}


def assert_same(expected_splits, data_dir, source, path, **options):
    for split, pairs in expected_splits.items():
        got = load_pairs(source, split, path=path, data_dir=data_dir, **options)
        assert isinstance(got, PairSource) and len(got) == len(pairs)
        assert sorted(got.splits) == sorted(expected_splits)
        items = [got[i] for i in range(len(got))]
        assert all(type(v) is str for item in items for v in item.values())
        assert items == pairs


@pytest.mark.parametrize("source", sorted(CASES))
def test_builder_matches_reader(tmp_path, source):
    make, reader_options, builder_options = CASES[source]
    path = make(tmp_path)
    expected, drops = sources.reader(source)(path, **reader_options)
    assert_same(expected, str(tmp_path / "tfds"), source, path, **reader_options, **builder_options)
    got = load_pairs(source, next(iter(expected)), path=path, data_dir=str(tmp_path / "tfds"),
                     **reader_options, **builder_options)
    assert got.drops == drops


def test_cache_reuse_and_invalidation(tmp_path, monkeypatch):
    calls = []
    real = sources.reader("webgpt")

    @functools.wraps(real)  # keeps the signature the builder checks options against
    def counting_reader(path, *args, **kwargs):
        calls.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sources.SOURCES["webgpt"], "READER", staticmethod(counting_reader))
    data_dir = str(tmp_path / "tfds")
    a = write_jsonl(tmp_path / "a.jsonl", webgpt_rows())
    first = load_pairs("webgpt", "train", path=a, data_dir=data_dir, train_size=5)
    again = load_pairs("webgpt", "train", path=a, data_dir=data_dir, train_size=5, ties="second")
    assert len(calls) == 1 and again.data_dir == first.data_dir  # default passed or not: same data
    assert [again[i] for i in range(len(again))] == [first[i] for i in range(len(first))]

    b_dir = tmp_path / "b"
    b_dir.mkdir()
    b = write_jsonl(b_dir / "a.jsonl", webgpt_rows(6))  # same name and schema, another file
    other = load_pairs("webgpt", "train", path=b, data_dir=data_dir, train_size=5)
    assert len(calls) == 2 and other.data_dir != first.data_dir and len(other) == 5
    assert load_pairs("webgpt", "eval", path=b, data_dir=data_dir, train_size=5).num_pairs == {
        "train": 5, "eval": 1}

    ties = load_pairs("webgpt", "train", path=a, data_dir=data_dir, train_size=5, ties="drop")
    assert len(calls) == 3 and ties.data_dir not in (first.data_dir, other.data_dir)
    assert ties.drops.counts == {"tie (score_0 == score_1)": 2}

    os.utime(a, ns=(1, 1))  # an edited file is not served from the old cache
    load_pairs("webgpt", "train", path=a, data_dir=data_dir, train_size=5)
    assert len(calls) == 4


def test_errors_and_random_access(tmp_path):
    path = local_file(tmp_path / "pairs.jsonl")
    data_dir = str(tmp_path / "tfds")
    options = dict(prompt_field="p", chosen_field="c", rejected_field="r")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['tie'\]"):
        load_pairs("local", "train", path=path, data_dir=data_dir, tie="drop", **options)
    with pytest.raises(KeyError, match="unknown source 'nope'"):
        load_pairs("nope", "train", path=path, data_dir=data_dir)
    with pytest.raises(KeyError, match=r"no split 'test'.*\['train'\]"):
        load_pairs("local", "test", path=path, data_dir=data_dir, **options)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_pairs("local", "train", path=tmp_path / "missing.jsonl", data_dir=data_dir)
    with pytest.raises(ValueError, match="pass path="):
        load_pairs("local", "train", data_dir=data_dir, **options)
    with pytest.raises(ValueError, match="subset"):
        make_builder("hh_rlhf", data_dir=data_dir)
    with pytest.raises(ValueError, match="red-team"):
        make_builder("hh_rlhf", data_dir=data_dir, subset="red-team-attempts")

    pairs = load_pairs("local", "train", path=path, data_dir=data_dir, **options)
    assert pairs[-1]["id"] == "local-train-000004" and [p["chosen"] for p in pairs[1:3]] == ["c1", "c2"]
    picked = pairs.__getitems__(np.array([4, 0]))
    assert [p["id"] for p in picked] == ["local-train-000004", "local-train-000000"]
    with pytest.raises(IndexError):
        pairs[5]
    restored = pickle.loads(pickle.dumps(pairs))  # grain workers receive it pickled
    assert restored[2] == pairs[2]
    ds = grain.MapDataset.source(pairs).shuffle(seed=0)
    assert sorted(ds[i]["id"] for i in range(len(ds))) == [f"local-train-{i:06d}" for i in range(5)]


def test_download_paths(tmp_path, monkeypatch):
    """With no local copy each builder fetches its public URLs (served here from local files)."""
    served = {}

    def fake_download(self, url_or_urls):
        if isinstance(url_or_urls, dict):
            return {k: served[u] for k, u in url_or_urls.items()}
        return served[url_or_urls]

    monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", fake_download)
    data_dir = str(tmp_path / "tfds")

    # hh-rlhf: one URL per split of the subset
    hh = hh_dir(tmp_path / "hh")
    for split in ("train", "test"):
        served[sources.HH_RLHF_URL.format(subset="helpful-base", split=split)] = str(hh / f"{split}.jsonl.gz")
    expected, _ = sources.read_hh_rlhf(hh)
    got = load_pairs("hh_rlhf", "train", data_dir=data_dir, subset="helpful-base")
    assert [got[i] for i in range(len(got))] == expected["train"]
    assert "helpful-base-" in got.data_dir

    # WebGPT: OpenAI's raw comparisons.jsonl (each line the pair of answer records)
    rows = webgpt_rows()
    raw = [[{"question": r["question"], "answer": r[f"answer_{j}"], "score": r[f"score_{j}"],
             "quotes": r[f"quotes_{j}"], "tokens": r[f"tokens_{j}"]} for j in (0, 1)] for r in rows]
    served[sources.WEBGPT_URL] = str(write_jsonl(tmp_path / "raw.jsonl", raw))
    expected, _ = sources.read_webgpt(write_jsonl(tmp_path / "hf.jsonl", rows), train_size=5)
    got = load_pairs("webgpt", "eval", data_dir=data_dir, train_size=5)
    assert [got[i] for i in range(len(got))] == expected["eval"]

    # Stack Exchange: the HF API listing of each folder, then its parquet files
    stack = stack_tree(tmp_path / "stack")
    for folder in ("reward", "evaluation"):
        listing = tmp_path / f"tree-{folder}.json"
        name = f"data/{folder}/train-00000-of-00001.parquet"
        listing.write_text(json.dumps([{"type": "file", "path": name}, {"type": "directory", "path": "x"}]))
        served[sources.STACK_EXCHANGE_TREE_URL.format(folder=folder)] = str(listing)
        served[sources.STACK_EXCHANGE_FILE_URL.format(path=name)] = str(stack / name)
    expected, _ = sources.read_stack_exchange(stack)
    got = load_pairs("stack_exchange", "reward", data_dir=data_dir, folders=["reward", "evaluation"])
    assert [got[i] for i in range(len(got))] == expected["reward"]

    # RLCD: the authors' zip, extracted, holding the CSV somewhere inside
    extracted = tmp_path / "rlcd_zip" / "simulated_data"
    extracted.mkdir(parents=True)
    rlcd_csv(extracted / sources.RLCD_FILE)
    served[sources.RLCD_URL] = str(tmp_path / "rlcd_zip")
    expected, _ = sources.read_rlcd(extracted / sources.RLCD_FILE, train_size=6)
    got = load_pairs("rlcd", "train", data_dir=data_dir, train_size=6)
    assert [got[i] for i in range(len(got))] == expected["train"]


def test_hh_rlhf_real_data(tmp_path):
    real_hh_harmless_test()
    got = load_pairs("hh_rlhf", "test", path=HH_TEST, data_dir=str(tmp_path), subset="harmless-base",
                     empty="drop")
    assert len(got) == 2312 - 4 and got.drops.counts == {"empty chosen response": 4}
    expected, _ = sources.read_hh_rlhf(HH_TEST, empty="drop")
    assert got[1000] == expected["test"][1000] and got[-1] == expected["test"][-1]
    assert Path(got.data_dir).parts[-3] == "hh_rlhf"
    assert Path(got.data_dir).parts[-2].startswith("harmless-base-")
