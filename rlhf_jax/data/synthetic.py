"""A synthetic preference task with a known gold judge and a controllable length bias.

Why it exists
-------------
*A Long Way to Go* (Singhal et al., 2023) asks how much of RLHF's measured gain is just response length: reward
models trained on human preferences learn to score longer outputs higher, and PPO exploits that. Studying this on
the paper's data needs large models and hours of training. This module builds a tiny, fully offline stand-in where
both halves of the question are *known*: every response has a true quality and a length computable from its text,
and the preference labels come from a rule whose length bias we set. It is sized for a 2-layer, width-64 decoder
with a word-level vocabulary of about 180 words (prompts ≤ 6 words, responses ≤ 40), so that the whole pipeline
(SFT -> reward model -> PPO -> length analysis) can run on 2 CPU cores, and the true quality acts as the gold judge
that the paper had to approximate with a model.

The task
--------
A task has ``num_topics`` topics (chosen, with ``seed``, from a catalogue of 24 such as "fruit", "color",
"animal"), each with ``words_per_topic`` on-topic content words (chosen, with ``seed``, from 12 per topic). Prompts
are a phrasing plus a topic name, e.g. ``"tell me about fruit"`` (at most 6 words). Responses are lowercase words
separated by single spaces, no punctuation; they mix

- on-topic words (content words of the prompt's topic),
- off-topic words (content words of any *other* topic of the task),
- neutral filler words (``FILLER_WORDS``: "very", "really", "indeed", "and", "the", ...). Every other word (topic
  names, prompt words, special tokens such as ``<eos>``, unknown words) is neutral as well.

Gold judge and length (from the text alone, plus the prompt's topic)::

    length(response)  = number of whitespace-separated words   (= tokens with this task's word-level tokenizer,
                                                                  before an EOS token is appended)
    quality(p, r)     = D − O − ρ·R
        D = number of *distinct* on-topic words in r
        R = number of repeated on-topic words (on-topic tokens − D)
        O = number of off-topic tokens (every occurrence counts)
        ρ = repetition_penalty (0.5 by default)

so ``quality`` is a float with ``−length(r) ≤ quality ≤ words_per_topic`` for any text; pool responses lie in
``[−max_off_topic − max(0, ρ·max_repeats − 1), words_per_topic]`` (``[−3, 8]`` with the defaults, mean ≈ 2.0), SFT
examples in ``[ceil(0.6·words_per_topic), words_per_topic]`` (``[5, 8]``, mean ≈ 6.5). Repetition is penalised so
that a policy cannot raise the gold score by repeating one good word (the paper notes repetitive, padded PPO
outputs).

Response pool (``sample_response``): draw independently ``D ~ U{0..words_per_topic}``, ``O ~ U{0..max_off_topic}``,
``R ~ U{0..max_repeats}`` (0 when D = 0) and a target length ``T ~ U{1..max_response_words}``; the response has
``max(T, D + O + R)`` words, the rest being fillers, in shuffled order. Because the target length is drawn
independently of the content and the content (≤ 13 words by default) only rarely exceeds it, quality and length are
nearly uncorrelated in the pool (|corr| ≈ 0.02 with the defaults): length bias in the labels is separable from
quality. Lengths span 1..40 words, so a pair's length difference spans about −39..+39, with both signs equally
common, and the paper's 10-token length-balancing bins have data on both sides.

Preference rule (``preference_probability``, the one place of it)::

    P(a ≻ b) = σ(α·(quality(a) − quality(b)) + β·(length(a) − length(b)))

``preference_pairs`` pairs two independent pool responses to the same prompt and labels them by one Bernoulli draw
from this probability. With ``β = 0`` labels are quality-only (Bradley–Terry in the true quality with temperature
1/α); with large ``β`` and small ``α`` a reward model learns length, the paper's failure mode (Sec. 3), and its
length-balancing intervention (Sec. 5) can be tested against a known answer.

SFT examples (``sft_examples``) are good, moderate-length responses: ``D ~ U{ceil(0.6·W)..W}`` distinct on-topic
words, no off-topic words, no repeats, ``min_words..max_words`` (8..16) words in all; well above the pool's mean
quality (6.5 vs 2.0 with the defaults) and shorter than the pool's longest responses, so that PPO against a
length-biased reward has room to grow its outputs.

Everything is seeded: the same arguments give identical output; no global RNG is used. Each method draws from its
own ``np.random.default_rng((seed, stream))`` so that, e.g., prompts and pair responses from one seed are not
correlated draws of one stream.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import expit

__all__ = [
    "CATALOGUE",
    "FILLER_WORDS",
    "PROMPT_TEMPLATES",
    "SPECIAL_TOKENS",
    "SyntheticTask",
    "QualityComponents",
    "gold_judge",
    "preference_probability",
]

# 24 topics × 12 content words; a task picks ``num_topics`` of them and ``words_per_topic`` words from each.
CATALOGUE: dict[str, tuple[str, ...]] = {
    "fruit": ("apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "pear", "plum", "melon", "kiwi",
              "papaya"),
    "color": ("red", "blue", "green", "yellow", "purple", "violet", "crimson", "indigo", "teal", "magenta",
              "scarlet", "amber"),
    "animal": ("dog", "cat", "horse", "rabbit", "tiger", "lion", "zebra", "giraffe", "elephant", "monkey", "wolf",
               "fox"),
    "bird": ("sparrow", "eagle", "owl", "parrot", "robin", "pigeon", "hawk", "crow", "swan", "duck", "penguin",
             "falcon"),
    "vehicle": ("car", "bus", "truck", "bicycle", "train", "tram", "scooter", "taxi", "van", "tractor",
                "motorcycle", "ambulance"),
    "weather": ("rain", "snow", "wind", "storm", "fog", "hail", "sunshine", "thunder", "lightning", "cloud",
                "drizzle", "frost"),
    "music": ("guitar", "piano", "violin", "drum", "flute", "trumpet", "cello", "harp", "saxophone", "melody",
              "rhythm", "chord"),
    "sport": ("soccer", "tennis", "golf", "hockey", "rugby", "cricket", "baseball", "boxing", "skiing", "rowing",
              "cycling", "swimming"),
    "tool": ("hammer", "saw", "wrench", "drill", "screwdriver", "pliers", "chisel", "shovel", "rake", "axe",
             "ladder", "clamp"),
    "kitchen": ("spoon", "fork", "knife", "plate", "bowl", "pan", "kettle", "oven", "stove", "cup", "teapot",
                "ladle"),
    "ocean": ("wave", "tide", "reef", "coral", "shark", "whale", "dolphin", "seaweed", "shell", "octopus",
              "jellyfish", "current"),
    "space": ("planet", "star", "moon", "comet", "galaxy", "orbit", "rocket", "asteroid", "nebula", "satellite",
              "telescope", "astronaut"),
    "body": ("hand", "foot", "knee", "elbow", "shoulder", "finger", "ankle", "wrist", "heart", "lung", "brain",
             "spine"),
    "clothing": ("shirt", "hat", "coat", "scarf", "glove", "sock", "boot", "jacket", "dress", "skirt", "sweater",
                 "belt"),
    "tree": ("oak", "pine", "maple", "birch", "willow", "cedar", "elm", "spruce", "palm", "bark", "branch", "leaf"),
    "job": ("teacher", "doctor", "nurse", "farmer", "baker", "pilot", "chef", "lawyer", "plumber", "painter",
            "soldier", "writer"),
    "city": ("street", "bridge", "tower", "park", "square", "museum", "subway", "harbor", "market", "avenue",
             "skyline", "plaza"),
    "school": ("book", "pencil", "desk", "lesson", "exam", "chalk", "homework", "classroom", "notebook", "eraser",
               "ruler", "backpack"),
    "vegetable": ("carrot", "potato", "onion", "garlic", "pepper", "cabbage", "lettuce", "spinach", "celery", "pea",
                  "bean", "broccoli"),
    "house": ("roof", "door", "window", "wall", "floor", "chimney", "garden", "garage", "attic", "basement",
              "stairs", "porch"),
    "emotion": ("joy", "anger", "fear", "sadness", "surprise", "pride", "shame", "hope", "love", "calm", "envy",
                "delight"),
    "computer": ("keyboard", "mouse", "screen", "laptop", "printer", "software", "memory", "processor", "cable",
                 "monitor", "server", "chip"),
    "game": ("chess", "puzzle", "card", "dice", "poker", "checkers", "domino", "riddle", "marble", "kite",
             "lottery", "bingo"),
    "shape": ("circle", "triangle", "cube", "sphere", "cone", "cylinder", "pyramid", "oval", "hexagon", "rectangle",
              "diamond", "spiral"),
}

# Neutral words: they change a response's length but not its quality.
FILLER_WORDS: tuple[str, ...] = ("very", "really", "indeed", "also", "and", "the", "so", "quite", "well", "just",
                                 "then", "truly", "yes", "surely", "simply", "certainly")

# Prompt phrasings; ``{topic}`` is replaced by the topic name. At most 6 words.
PROMPT_TEMPLATES: tuple[str, ...] = (
    "tell me about {topic}",
    "what do you know about {topic}",
    "describe {topic}",
    "write about {topic}",
    "talk about {topic}",
    "please tell me about {topic}",
    "give me words about {topic}",
    "i want to hear about {topic}",
)

# Special tokens of the word-level tokenizer, in id order: <pad> is id 0.
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<eos>", "<unk>", "<bos>")

_CATALOGUE_WORDS_PER_TOPIC = 12
_STREAM_VOCAB, _STREAM_PROMPTS, _STREAM_POOL, _STREAM_PAIRS, _STREAM_SFT = range(5)


def _check_catalogue() -> None:
    """The word lists must be disjoint, or quality would be ambiguous."""
    template_words = {w for t in PROMPT_TEMPLATES for w in t.split() if w != "{topic}"}
    seen: dict[str, str] = {}
    groups = [("topic name", tuple(CATALOGUE)), ("filler", FILLER_WORDS), ("prompt", tuple(template_words))]
    groups += [(f"topic {t!r}", ws) for t, ws in CATALOGUE.items()]
    for group, words in groups:
        for w in words:
            if w in seen and seen[w] != group:
                raise AssertionError(f"synthetic catalogue: word {w!r} is in both {seen[w]} and {group}")
            seen[w] = group
    assert all(len(ws) == _CATALOGUE_WORDS_PER_TOPIC and len(set(ws)) == len(ws) for ws in CATALOGUE.values())


_check_catalogue()


def preference_probability(dq, dl, alpha: float, beta: float):
    """P(a ≻ b) = σ(α·Δquality + β·Δlength), Δ = a − b: the synthetic task's labelling rule.

    The one place of the rule; ``dq`` and ``dl`` may be scalars or NumPy arrays (broadcast). ``beta`` sets the
    length bias that the paper (Singhal et al., 2023, Sec. 3) finds reward models pick up from human labels.
    """
    return expit(alpha * np.asarray(dq, dtype=np.float64) + beta * np.asarray(dl, dtype=np.float64))


@dataclasses.dataclass(frozen=True)
class QualityComponents:
    """The counts that make up ``quality`` (see the module docstring)."""
    distinct_on_topic: int   # D
    repeated_on_topic: int   # R
    off_topic: int           # O
    neutral: int             # fillers and every other word
    length: int              # D + R + O + neutral


@dataclasses.dataclass(frozen=True)
class SyntheticTask:
    """The synthetic preference task; see the module docstring for its formulas.

    Attributes:
      num_topics: how many catalogue topics the task uses (2..24).
      seed: chooses the topics and each topic's content words (the vocabulary); the data methods take their own seed.
      words_per_topic: content words per topic (1..12); also the maximum quality.
      max_response_words: longest pool response (target lengths are drawn from 1..this).
      max_off_topic: most off-topic tokens in a pool response.
      max_repeats: most repeated on-topic tokens in a pool response.
      repetition_penalty: ρ, quality lost per repeated on-topic token.
    """
    num_topics: int = 16
    seed: int = 0
    words_per_topic: int = 8
    max_response_words: int = 40
    max_off_topic: int = 3
    max_repeats: int = 2
    repetition_penalty: float = 0.5

    def __post_init__(self):
        def bad(field, expected):
            raise ValueError(f"SyntheticTask.{field}={getattr(self, field)!r}: expected {expected}")
        if not 2 <= self.num_topics <= len(CATALOGUE):
            bad("num_topics", f"an int in 2..{len(CATALOGUE)} (off-topic words need a second topic)")
        if self.seed < 0:
            bad("seed", "a non-negative int")
        if not 1 <= self.words_per_topic <= _CATALOGUE_WORDS_PER_TOPIC:
            bad("words_per_topic", f"an int in 1..{_CATALOGUE_WORDS_PER_TOPIC}")
        if self.max_off_topic < 0:
            bad("max_off_topic", "≥ 0")
        if self.max_repeats < 0:
            bad("max_repeats", "≥ 0")
        if self.repetition_penalty < 0:
            bad("repetition_penalty", "≥ 0")
        most_content = self.words_per_topic + self.max_off_topic + self.max_repeats
        if self.max_response_words < most_content:
            bad("max_response_words", f"≥ words_per_topic + max_off_topic + max_repeats = {most_content}")

    # ----------------------------------------------------------------------------------------------- vocabulary

    @functools.cached_property
    def topic_words(self) -> dict[str, tuple[str, ...]]:
        """Topic name -> its on-topic content words, for this task's topics (catalogue order)."""
        rng = np.random.default_rng((self.seed, _STREAM_VOCAB))
        names = list(CATALOGUE)
        chosen = sorted(rng.choice(len(names), size=self.num_topics, replace=False).tolist())
        out = {}
        for i in chosen:
            words = CATALOGUE[names[i]]
            keep = sorted(rng.choice(len(words), size=self.words_per_topic, replace=False).tolist())
            out[names[i]] = tuple(words[j] for j in keep)
        return out

    @property
    def topics(self) -> tuple[str, ...]:
        """This task's topic names."""
        return tuple(self.topic_words)

    @functools.cached_property
    def word_topic(self) -> dict[str, str]:
        """Content word -> the topic it belongs to (only this task's content words)."""
        return {w: t for t, ws in self.topic_words.items() for w in ws}

    @functools.cached_property
    def _off_topic_words(self) -> dict[str, tuple[str, ...]]:
        return {t: tuple(w for u, ws in self.topic_words.items() if u != t for w in ws) for t in self.topic_words}

    @property
    def max_prompt_words(self) -> int:
        """Words in the longest prompt."""
        return max(len(t.split()) for t in PROMPT_TEMPLATES)

    def topic_of(self, prompt: str) -> str:
        """The topic a prompt asks about; a ValueError naming the prompt if it names none (or several)."""
        found = {w for w in prompt.split() if w in self.topic_words}
        if len(found) != 1:
            what = "no topic" if not found else f"several topics {sorted(found)}"
            raise ValueError(f"synthetic task: prompt {prompt!r} names {what}; expected exactly one of "
                             f"{list(self.topics)}")
        return found.pop()

    # ------------------------------------------------------------------------------------- gold judge and length

    def length(self, response: str) -> int:
        """Number of whitespace-separated words (= word-level tokens, before EOS)."""
        return len(response.split())

    def quality_components(self, prompt: str, response: str) -> QualityComponents:
        """The counts D, R, O (and neutral words, length) of ``response`` for ``prompt``'s topic."""
        topic = self.topic_of(prompt)
        on_tokens, off, neutral = [], 0, 0
        for w in response.split():
            t = self.word_topic.get(w)
            if t is None:
                neutral += 1
            elif t == topic:
                on_tokens.append(w)
            else:
                off += 1
        distinct = len(set(on_tokens))
        return QualityComponents(distinct_on_topic=distinct, repeated_on_topic=len(on_tokens) - distinct,
                                 off_topic=off, neutral=neutral, length=len(on_tokens) + off + neutral)

    def quality(self, prompt: str, response: str) -> float:
        """The gold judge: D − O − ρ·R (see the module docstring); in [−length, words_per_topic]."""
        c = self.quality_components(prompt, response)
        return float(c.distinct_on_topic - c.off_topic - self.repetition_penalty * c.repeated_on_topic)

    # ------------------------------------------------------------------------------------------------ sampling

    def prompts(self, n: int, seed: int) -> list[str]:
        """``n`` prompts, topic and phrasing drawn uniformly."""
        _check_n(n)
        rng = np.random.default_rng((seed, _STREAM_PROMPTS))
        topics = self.topics
        out = []
        for _ in range(n):
            topic = topics[int(rng.integers(len(topics)))]
            template = PROMPT_TEMPLATES[int(rng.integers(len(PROMPT_TEMPLATES)))]
            out.append(template.format(topic=topic))
        return out

    def _compose(self, topic: str, distinct: int, off: int, repeats: int, length: int,
                 rng: np.random.Generator) -> str:
        """A response with these counts, padded with fillers to ``max(length, content)`` words, shuffled."""
        on_words, others = self.topic_words[topic], self._off_topic_words[topic]
        repeats = repeats if distinct else 0
        fillers = max(0, length - distinct - repeats - off)
        picked = [on_words[i] for i in rng.permutation(len(on_words))[:distinct]]
        u = rng.random(repeats + off + fillers)  # one draw for every with-replacement pick
        words = picked + [picked[int(x * distinct)] for x in u[:repeats]]
        words += [others[int(x * len(others))] for x in u[repeats:repeats + off]]
        words += [FILLER_WORDS[int(x * len(FILLER_WORDS))] for x in u[repeats + off:]]
        return " ".join([words[i] for i in rng.permutation(len(words))])

    def sample_response(self, prompt: str, rng: np.random.Generator) -> str:
        """One response from the pool distribution (module docstring): quality and length nearly independent."""
        topic = self.topic_of(prompt)
        distinct, off, repeats, target = rng.integers(
            (0, 0, 0, 1), (self.words_per_topic + 1, self.max_off_topic + 1, self.max_repeats + 1,
                           self.max_response_words + 1)).tolist()
        return self._compose(topic, distinct, off, repeats, target, rng)

    def response_pool(self, n: int, seed: int) -> list[dict]:
        """``n`` pool samples ``{id, prompt, response}`` (prompts from ``prompts(n, seed)``)."""
        rng = np.random.default_rng((seed, _STREAM_POOL))
        return [{"id": _row_id(i), "prompt": p, "response": self.sample_response(p, rng)}
                for i, p in enumerate(self.prompts(n, seed))]

    def preference_pairs(self, n: int, *, alpha: float, beta: float, seed: int) -> list[dict]:
        """``n`` labelled pairs ``{id, prompt, chosen, rejected}`` (all str), the preference-set schema.

        For each prompt (from ``prompts(n, seed)``) two different pool responses a, b are drawn and a is chosen with
        probability ``preference_probability(quality(a) − quality(b), length(a) − length(b), alpha, beta)``.
        """
        rng = np.random.default_rng((seed, _STREAM_PAIRS))
        out = []
        for i, prompt in enumerate(self.prompts(n, seed)):
            a = self.sample_response(prompt, rng)
            b = self.sample_response(prompt, rng)
            while b == a:  # identical responses carry no preference
                b = self.sample_response(prompt, rng)
            p = preference_probability(self.quality(prompt, a) - self.quality(prompt, b),
                                       self.length(a) - self.length(b), alpha, beta)
            chosen, rejected = (a, b) if rng.random() < p else (b, a)
            out.append({"id": _row_id(i), "prompt": prompt, "chosen": chosen, "rejected": rejected})
        return out

    def sft_examples(self, n: int, seed: int, *, min_words: int = 8, max_words: int = 16) -> list[dict]:
        """``n`` demonstrations ``{id, prompt, response}`` for ``prompts(n, seed)``.

        Each uses ≥ 60 % of the topic's words, nothing off-topic, no repeats, and has ``min_words..max_words`` words
        (more only if the content needs it); the response simply ends (append EOS when tokenizing).
        """
        if not 1 <= min_words <= max_words <= self.max_response_words:
            raise ValueError(f"sft_examples: expected 1 ≤ min_words ({min_words}) ≤ max_words ({max_words}) ≤ "
                             f"max_response_words ({self.max_response_words})")
        rng = np.random.default_rng((seed, _STREAM_SFT))
        lo = math.ceil(0.6 * self.words_per_topic)
        out = []
        for i, prompt in enumerate(self.prompts(n, seed)):
            distinct = int(rng.integers(lo, self.words_per_topic + 1))
            target = int(rng.integers(min_words, max_words + 1))
            response = self._compose(self.topic_of(prompt), distinct, 0, 0, target, rng)
            out.append({"id": _row_id(i), "prompt": prompt, "response": response})
        return out

    # ----------------------------------------------------------------------------------------------- tokenizer

    def corpus(self) -> list[str]:
        """Texts covering the task's whole vocabulary: every prompt, each topic's words, the fillers."""
        texts = [t.format(topic=topic) for topic in self.topics for t in PROMPT_TEMPLATES]
        texts += [" ".join(ws) for ws in self.topic_words.values()]
        texts.append(" ".join(FILLER_WORDS))
        return texts

    def vocabulary(self) -> dict[str, int]:
        """Token -> id: ``SPECIAL_TOKENS`` first (``<pad>`` = 0), then the corpus words sorted."""
        words = sorted({w for text in self.corpus() for w in text.split()})
        return {tok: i for i, tok in enumerate(list(SPECIAL_TOKENS) + words)}

    def tokenizer(self):
        """A word-level ``transformers.PreTrainedTokenizerFast`` over ``vocabulary()`` (offline, deterministic).

        Splits on whitespace; one token per word; unknown words map to ``<unk>``; decoding joins tokens with single
        spaces (no decoder is set). It adds no special tokens by
        itself (append ``eos_token_id`` where a sequence should end). ``save_pretrained`` /
        ``AutoTokenizer.from_pretrained`` round-trip.
        """
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        tok = Tokenizer(models.WordLevel(vocab=self.vocabulary(), unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.add_special_tokens(list(SPECIAL_TOKENS))
        pad, eos, unk, bos = SPECIAL_TOKENS
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, pad_token=pad, eos_token=eos, unk_token=unk, bos_token=bos,
            clean_up_tokenization_spaces=False,
            model_max_length=self.max_prompt_words + self.max_response_words + 2)


def gold_judge(task: SyntheticTask) -> Callable[[str, str], float]:
    """The task's gold judge ``(prompt, response) -> quality``; the analysis' stand-in for the paper's judges."""
    return task.quality


def _row_id(i: int) -> str:
    return f"synthetic-{i:06d}"


def _check_n(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"synthetic task: expected a non-negative int count, got {n!r}")



def gold_reward(prompts: Sequence[str], responses: Sequence[str]) -> list:
    """The default task's gold quality of each (prompt, response): a PPO reward function.

    Use with ``reward.kind = "function"`` and
    ``reward.function = "rlhf_jax.data.synthetic:gold_reward"`` to optimise the
    true quality instead of a learned (length-biased) reward model.
    """
    task = _default_task()
    return [task.quality(p, r) for p, r in zip(prompts, responses)]


@functools.lru_cache(maxsize=1)
def _default_task() -> "SyntheticTask":
    return SyntheticTask()
