"""The synthetic preference task: gold judge, preference rule, pool statistics, determinism, tokenizer.

References are written here independently (plain loops and NumPy), never calls back into the task's own scoring.
"""

import math
import re

import numpy as np
import pytest

from rlhf_jax.data.synthetic import (CATALOGUE, FILLER_WORDS, PROMPT_TEMPLATES, SyntheticTask, gold_judge,
                                     preference_probability)

RHO = 0.5  # the default repetition penalty, restated


@pytest.fixture(scope="module")
def task():
    return SyntheticTask()


def ref_topic(task, prompt):
    """Every phrasing ends with the topic name."""
    topic = prompt.split()[-1]
    assert topic in task.topic_words
    return topic


def ref_quality(task, prompt, response, rho=RHO):
    """D − O − ρ·R by a plain loop over the words."""
    topic = ref_topic(task, prompt)
    on_set = set(task.topic_words[topic])
    off_set = {w for t, ws in task.topic_words.items() if t != topic for w in ws}
    seen, distinct, repeats, off = set(), 0, 0, 0
    for w in response.split(" "):
        if w in on_set:
            if w in seen:
                repeats += 1
            else:
                seen.add(w)
                distinct += 1
        elif w in off_set:
            off += 1
    return distinct - off - rho * repeats


def ref_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


# ------------------------------------------------------------------------------------------------ vocabulary

def test_vocabulary_selection(task):
    assert len(task.topics) == 16 and len(set(task.topics)) == 16
    all_words = []
    for topic, words in task.topic_words.items():
        assert len(words) == 8 and len(set(words)) == 8
        assert set(words) <= set(CATALOGUE[topic])
        all_words += words
    assert len(set(all_words)) == len(all_words)
    assert not set(all_words) & set(FILLER_WORDS)
    other = SyntheticTask(seed=1)
    assert other.topic_words != task.topic_words
    assert SyntheticTask(seed=0).topic_words == task.topic_words


# ---------------------------------------------------------------------------------------- gold judge, length

def test_quality_and_length_hand_written(task):
    topic, other = task.topics[0], task.topics[1]
    w, o = task.topic_words[topic], task.topic_words[other]
    prompt = f"tell me about {topic}"
    cases = [  # response, hand-computed quality, words
        (f"{w[0]} {w[1]} {w[2]}", 3.0, 3),
        (f"{w[0]} very {w[0]} and {w[0]} {o[0]}", 1 - 1 - 2 * RHO, 6),
        ("very really the", 0.0, 3),
        (f"{o[0]} {o[1]} {o[0]}", -3.0, 3),
        (f"{topic} {w[3]} notaword", 1.0, 3),
        (" ".join(w), 8.0, 8),
        (" ".join(list(w) + ["indeed"] * 20), 8.0, 28),
        (f"{w[4]}", 1.0, 1),
    ]
    for response, expected, words in cases:
        assert task.quality(prompt, response) == expected, response
        assert ref_quality(task, prompt, response) == expected, response
        assert task.length(response) == words
        assert isinstance(task.quality(prompt, response), float)
    assert gold_judge(task)(prompt, cases[0][0]) == 3.0
    # the same response is off-topic for another prompt
    assert task.quality(f"describe {other}", cases[0][0]) == -3.0


def test_quality_matches_reference_on_pool(task):
    pool = task.response_pool(600, seed=3)
    for row in pool:
        assert task.quality(row["prompt"], row["response"]) == ref_quality(task, row["prompt"], row["response"])
        assert task.length(row["response"]) == len(row["response"].split(" "))


def test_bad_prompt_names_the_prompt(task):
    with pytest.raises(ValueError, match="hello there"):
        task.quality("hello there", "apple")
    with pytest.raises(ValueError, match="num_topics"):
        SyntheticTask(num_topics=1)


# ------------------------------------------------------------------------------------------ preference rule

def test_preference_probability_formula():
    rng = np.random.default_rng(0)
    dq, dl = rng.normal(0, 5, 100), rng.integers(-40, 41, 100)
    for alpha, beta in [(1.0, 0.0), (0.1, 0.5), (2.0, -0.3)]:
        np.testing.assert_allclose(preference_probability(dq, dl, alpha, beta),
                                   ref_sigmoid(alpha * dq + beta * dl), rtol=1e-12, atol=0)
    assert preference_probability(3.0, 0, 1.0, 0.0) == pytest.approx(1 / (1 + math.exp(-3)))
    np.testing.assert_allclose(preference_probability(dq, dl, 0.7, 0.2) + preference_probability(-dq, -dl, 0.7, 0.2),
                               1.0, rtol=1e-12)
    assert preference_probability(1e4, 0, 1.0, 0.0) == 1.0 and preference_probability(-1e4, 0, 1.0, 0.0) == 0.0


def _pair_arrays(task, pairs):
    qc = np.array([ref_quality(task, p["prompt"], p["chosen"]) for p in pairs])
    qr = np.array([ref_quality(task, p["prompt"], p["rejected"]) for p in pairs])
    lc = np.array([len(p["chosen"].split()) for p in pairs])
    lr = np.array([len(p["rejected"].split()) for p in pairs])
    return qc, qr, lc, lr


SETTINGS = {"length-biased": (0.1, 0.5), "quality-only": (1.0, 0.0)}  # (alpha, beta)


@pytest.fixture(scope="module")
def labelled(task):
    """4000 pairs per setting with their reference qualities and lengths, built once."""
    out = {}
    for name, (alpha, beta) in SETTINGS.items():
        pairs = task.preference_pairs(4000, alpha=alpha, beta=beta, seed=11)
        out[name] = pairs, _pair_arrays(task, pairs)
    return out


@pytest.mark.parametrize("setting", SETTINGS)
def test_pair_schema(labelled, setting):
    pairs, _ = labelled[setting]
    assert [p["id"] for p in pairs[:3]] == ["synthetic-000000", "synthetic-000001", "synthetic-000002"]
    assert pairs[42]["id"] == "synthetic-000042"
    word_text = re.compile(r"^[a-z]+( [a-z]+)*$")
    for p in pairs:
        assert set(p) == {"id", "prompt", "chosen", "rejected"}
        assert all(isinstance(v, str) for v in p.values())
        assert p["chosen"] != p["rejected"]
        assert word_text.match(p["prompt"]) and word_text.match(p["chosen"]) and word_text.match(p["rejected"])
        assert len(p["prompt"].split()) <= 8
        assert 1 <= len(p["chosen"].split()) <= 40 and 1 <= len(p["rejected"].split()) <= 40


def _binomial_check(indicator, prob):
    """Σ indicator against Σ prob, 4 standard deviations of the Poisson-binomial."""
    sd = math.sqrt(float(np.sum(prob * (1 - prob))))
    assert abs(indicator.sum() - prob.sum()) <= 4 * sd + 1e-9, (indicator.sum(), prob.sum(), sd)


@pytest.mark.parametrize("setting", SETTINGS)
def test_empirical_preference_rate(labelled, setting):
    alpha, beta = SETTINGS[setting]
    _, (qc, qr, lc, lr) = labelled[setting]
    differ = lc != lr
    longer_chosen = (lc > lr)[differ].astype(float)
    sign = np.where(lc > lr, 1.0, -1.0)[differ]  # orient Δ = longer − shorter
    p_longer = ref_sigmoid(alpha * sign * (qc - qr)[differ] + beta * sign * (lc - lr)[differ])
    _binomial_check(longer_chosen, p_longer)
    if beta > 0:  # strong length bias: the longer response nearly always wins
        assert longer_chosen.mean() > 0.9
    else:  # quality-only labels: length is close to a coin flip, quality decides
        assert 0.44 < longer_chosen.mean() < 0.56
        differ_q = qc != qr
        better_chosen = (qc > qr)[differ_q].astype(float)
        sign_q = np.where(qc > qr, 1.0, -1.0)[differ_q]
        _binomial_check(better_chosen, ref_sigmoid(alpha * sign_q * (qc - qr)[differ_q]))
        assert better_chosen.mean() > 0.75


def test_length_differences_span_balancing_bins(labelled):
    """On quality-only labels, chosen-longer and chosen-shorter pairs both fill every 10-token bin."""
    _, (_, _, lc, lr) = labelled["quality-only"]
    dl = lc - lr
    assert dl.min() <= -30 and dl.max() >= 30
    for lo in (0, 10, 20):  # 10-token bins of |Δlength|, chosen longer vs chosen shorter
        longer = np.sum((dl > lo) & (dl <= lo + 10))
        shorter = np.sum((-dl > lo) & (-dl <= lo + 10))
        assert longer >= 0.05 * len(dl) and shorter >= 0.05 * len(dl), (lo, longer, shorter)


# ------------------------------------------------------------------------------------------------ the pool

def test_pool_quality_and_length_nearly_independent(task):
    pool = task.response_pool(4000, seed=5)
    q = np.array([ref_quality(task, r["prompt"], r["response"]) for r in pool])
    length = np.array([len(r["response"].split()) for r in pool])
    corr = np.corrcoef(q, length)[0, 1]
    assert abs(corr) < 0.1, corr
    assert q.min() >= -3 and q.max() <= 8
    assert length.min() >= 1 and length.max() <= 40
    assert length.min() <= 3 and length.max() >= 38
    assert 1.5 < q.mean() < 2.5  # E[D] − E[O] − ρ·E[R] = 4 − 1.5 − 0.5·(8/9) ≈ 2.06


def test_sft_examples_are_good(task):
    sft = task.sft_examples(1000, seed=2)
    pool = task.response_pool(1000, seed=2)
    q_sft = np.array([ref_quality(task, e["prompt"], e["response"]) for e in sft])
    q_pool = np.array([ref_quality(task, r["prompt"], r["response"]) for r in pool])
    assert q_sft.mean() > q_pool.mean() + 3
    assert q_sft.min() >= math.ceil(0.6 * 8)
    for e in sft:
        assert set(e) == {"id", "prompt", "response"}
        assert 8 <= len(e["response"].split()) <= 16
    assert [e["prompt"] for e in sft] == task.prompts(1000, seed=2)


# ----------------------------------------------------------------------------------------------- determinism

def test_seeded_and_deterministic():
    a, b = SyntheticTask(), SyntheticTask()  # separate instances: no shared caches
    assert a.prompts(50, seed=1) == b.prompts(50, seed=1)
    assert a.prompts(50, seed=1) != a.prompts(50, seed=2)
    assert a.preference_pairs(50, alpha=1.0, beta=0.1, seed=4) == b.preference_pairs(50, alpha=1.0, beta=0.1, seed=4)
    assert a.preference_pairs(50, alpha=1.0, beta=0.1, seed=4) != a.preference_pairs(50, alpha=1.0, beta=0.1, seed=5)
    assert a.sft_examples(50, seed=4) == b.sft_examples(50, seed=4)
    assert a.sft_examples(50, seed=4) != a.sft_examples(50, seed=5)
    assert a.response_pool(50, seed=4) == b.response_pool(50, seed=4)
    prompt = a.prompts(1, seed=0)[0]
    assert (a.sample_response(prompt, np.random.default_rng(7))
            == b.sample_response(prompt, np.random.default_rng(7)))
    # a different vocabulary seed gives a different task
    c = SyntheticTask(seed=3)
    assert c.preference_pairs(20, alpha=1.0, beta=0.1, seed=4) != a.preference_pairs(20, alpha=1.0, beta=0.1, seed=4)
    assert a.corpus() == b.corpus()


# ------------------------------------------------------------------------------------------------- tokenizer

@pytest.fixture(scope="module")
def tokenizer(task):
    return task.tokenizer()


def test_tokenizer_vocabulary(task, tokenizer):
    vocab = tokenizer.get_vocab()
    assert tokenizer.pad_token_id == 0 and tokenizer.pad_token == "<pad>"
    assert tokenizer.eos_token == "<eos>" and tokenizer.unk_token == "<unk>"
    assert len({tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}) == 3
    expected = set(FILLER_WORDS) | set(task.topics)
    expected |= {w for ws in task.topic_words.values() for w in ws}
    expected |= {w for t in PROMPT_TEMPLATES for w in t.split() if w != "{topic}"}
    assert {w for text in task.corpus() for w in text.split()} == expected
    assert expected <= set(vocab)
    assert len(vocab) == len(expected) + 4  # + <pad> <eos> <unk> <bos>
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert task.tokenizer().get_vocab() == vocab
    assert tokenizer("zebu qwerty")["input_ids"] == [tokenizer.unk_token_id] * 2


def test_tokenizer_round_trip(task, tokenizer):
    unk = tokenizer.unk_token_id
    for row in task.response_pool(200, seed=9):
        for text in (row["prompt"], row["response"]):
            ids = tokenizer(text)["input_ids"]
            assert len(ids) == len(text.split())  # one token per word, no special tokens added
            assert unk not in ids and 0 not in ids
            assert tokenizer.decode(ids) == text
    response = task.response_pool(1, seed=9)[0]["response"]
    ids = tokenizer(response)["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer.decode(ids, skip_special_tokens=True) == response


def test_tokenizer_save_load(task, tokenizer, tmp_path):
    from transformers import AutoTokenizer
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.unk_token_id) == (
        tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id)
    texts = [e["prompt"] + " " + e["response"] for e in task.sft_examples(20, seed=0)]
    assert loaded(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    short, long = "describe " + task.topics[0], "what do you know about " + task.topics[1]
    batch = loaded([short, long], padding=True)["input_ids"]
    assert batch[0] == tokenizer(short)["input_ids"] + [0] * 4 and batch[1] == tokenizer(long)["input_ids"]
