"""Pairwise evaluation of policy A against B on the same prompts (Singhal et al. 2023 Tables 2, 3, 6).

A judge compares A's and B's answers to each prompt and returns 1 (A better),
0 (B better) or 0.5 (tie). Judges:

- :class:`ScoreJudge`: compares two precomputed scores, e.g. a reward model's
  (``rlhf-jax score``) or the synthetic task's gold quality;
- :class:`ChatJudge`: an LLM over any OpenAI-compatible ``/chat/completions``
  endpoint with an AlpacaFarm-style pairwise prompt; the order of the two outputs
  is randomised per comparison (seeded); failed calls are retried with
  exponential backoff, then raise; every judgement is appended to a JSONL cache
  and reused on rerun, so nothing already judged is lost.

Statistics: :func:`win_rate` (ties count ½) with a paired bootstrap 95% interval
over prompts (:func:`bootstrap_interval`), and :func:`length_controlled_win_rate`,
AlpacaEval 2's length-controlled win rate (Dubois et al. 2024), which the paper
predates: a GLM of the judge's preference on ``tanh`` of the standardised
length difference in characters (and an instruction-difficulty term when one is
known), read with the length difference set to 0.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from typing import Callable, Optional, Sequence

import numpy as np
from scipy import optimize, special


def win_rate(outcomes: Sequence[float]) -> float:
    """Mean outcome: the fraction of comparisons A wins, ties counting ½."""
    outcomes = np.asarray(outcomes, float)
    if outcomes.size == 0:
        raise ValueError("no comparisons to compute a win rate from")
    return float(outcomes.mean())


def bootstrap_interval(outcomes_by_prompt: Sequence[Sequence[float]], *, samples: int = 2000,
                       seed: int = 0, level: float = 0.95) -> tuple:
    """Paired bootstrap over prompts: resample prompts with replacement, all their comparisons with them."""
    per_prompt = [np.asarray(o, float) for o in outcomes_by_prompt if len(o)]
    if not per_prompt:
        raise ValueError("no comparisons to bootstrap")
    sums = np.asarray([o.sum() for o in per_prompt])
    counts = np.asarray([len(o) for o in per_prompt])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(per_prompt), size=(samples, len(per_prompt)))
    rates = sums[draws].sum(1) / counts[draws].sum(1)
    tail = (1.0 - level) / 2
    return float(np.quantile(rates, tail)), float(np.quantile(rates, 1.0 - tail))


LC_CS = np.logspace(-4, 4, 10)
"""The inverse L1 strengths searched by cross-validation (sklearn's ``LogisticRegressionCV(Cs=10)``)."""


def l1_logistic_fit(features, targets, C: float) -> np.ndarray:
    """``argmin_θ ‖θ‖₁ + C·Σᵢ [log(1 + e^{xᵢθ}) − yᵢ·xᵢθ]``: liblinear's L1 logistic objective
    (no separate intercept) with soft targets ``y ∈ [0, 1]``, solved with ``θ = u − v``,
    ``u, v ≥ 0`` by L-BFGS-B."""
    x = np.asarray(features, float)
    y = np.asarray(targets, float)
    d = x.shape[1]

    def objective(uv):
        theta = uv[:d] - uv[d:]
        z = x @ theta
        value = np.sum(uv) + C * np.sum(np.logaddexp(0.0, z) - y * z)
        g = C * (x.T @ (special.expit(z) - y))
        return value, np.concatenate([1.0 + g, 1.0 - g])

    fit = optimize.minimize(objective, np.zeros(2 * d), jac=True, method="L-BFGS-B",
                            bounds=[(0.0, None)] * (2 * d),
                            options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 10000})
    return fit.x[:d] - fit.x[d:]


def _soft_log_loss(targets, probabilities) -> float:
    p = np.clip(probabilities, 1e-15, 1 - 1e-15)
    return float(-np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p)))


def length_controlled_win_rate(outcomes: Sequence[float], lengths_a: Sequence[float],
                               lengths_b: Sequence[float], instruction_difficulty=None, *,
                               n_splits: int = 5, Cs: Sequence[float] = LC_CS) -> dict:
    """AlpacaEval 2's length-controlled win rate of A (the model) against B (the baseline).

    The GLM of ``alpaca_eval.metrics.glm_winrate`` (``length_controlled_noreg``, or
    ``length_controlled_minimal`` without a difficulty)::

        P(A preferred)ᵢ = σ(θ_len·tanh(Δᵢ / sd(Δ)) + θ_diff·difficultyᵢ + θ₀)

    with ``Δ = len(B) − len(A)`` in **characters** (AlpacaEval's baseline-minus-model
    ``len(output_1) − len(output_2)``, ``sd`` with n − 1), ``difficulty`` the
    instruction-difficulty feature of each comparison's prompt (AlpacaEval's are
    fitted across its leaderboard; pass them when known, else the term is left
    out), and no separate intercept (``θ₀`` multiplies the constant feature
    ``not_gamed_baseline``). Every comparison enters with its outcome as a soft
    target: 1 (A better), 0 (B better) or ½ for a tie, so there is no "decisive"
    subset — ties pull toward ½. The fit is L1-regularised (:func:`l1_logistic_fit`),
    its strength chosen among ``Cs`` by ``n_splits``-fold cross-validated soft
    log-loss with sklearn's ``GroupKFold`` folds over comparisons, then refitted on
    all. The LC win rate is the mean over comparisons of the prediction with the
    length term at 0: ``mean σ(θ_diff·difficultyᵢ + θ₀)``. Not reproduced: AlpacaEval's
    regularisation toward its own "gamed" baseline annotations (``λ = 0.2``), which
    exist only for its 805 instructions.

    Returns ``{"lc_win_rate", "C", "coefficients", "share_a_not_longer"}``. The last is the
    fraction of comparisons with ``len(A) ≤ len(B)``: near 0 (every A longer), the readout
    at zero length difference is an extrapolation of the fitted length curve, not an
    average over comparable lengths; when the tanh feature saturates it is nearly collinear
    with the constant and the fit is ill-posed (the alpaca-eval package then returns values
    near 0 or 1 as well).
    """
    y = np.asarray(outcomes, float)
    len_a, len_b = np.asarray(lengths_a, float), np.asarray(lengths_b, float)
    n = y.size
    if not (len_a.shape == len_b.shape == y.shape) or n < n_splits:
        raise ValueError(f"need ≥ {n_splits} comparisons with one length of each side; got "
                         f"{y.shape}, {len_a.shape}, {len_b.shape}")
    if np.any((y < 0) | (y > 1)):
        raise ValueError("outcomes must be in [0, 1] (1: A better, 0: B better, 0.5: tie)")
    delta = len_b - len_a
    sd = delta.std(ddof=1)
    columns = {"length": np.tanh(delta / sd) if sd > 0 else np.zeros(n)}
    if instruction_difficulty is not None:
        columns["instruction_difficulty"] = np.asarray(instruction_difficulty, float)
    columns["constant"] = np.ones(n)
    x = np.stack(list(columns.values()), axis=1)
    fold = (n - 1 - np.arange(n)) % n_splits  # GroupKFold with one group per comparison
    losses = []
    for C in Cs:
        per_fold = []
        for f in range(n_splits):
            train, test = fold != f, fold == f
            theta = l1_logistic_fit(x[train], y[train], C)
            per_fold.append(_soft_log_loss(y[test], special.expit(x[test] @ theta)))
        losses.append(np.mean(per_fold))
    best = float(Cs[int(np.argmin(losses))])
    theta = l1_logistic_fit(x, y, best)
    at_zero = x.copy()
    at_zero[:, 0] = 0.0
    return {"lc_win_rate": float(np.mean(special.expit(at_zero @ theta))), "C": best,
            "coefficients": dict(zip(columns, map(float, theta))),
            "share_a_not_longer": float(np.mean(delta >= 0))}


def compare_policies(rows_a: Sequence[dict], rows_b: Sequence[dict], judge: Callable,
                     *, seed: int = 0, instruction_difficulty: Optional[dict] = None) -> dict:
    """Judge A's sample ``k`` against B's sample ``k`` for every prompt; the summary table row.

    ``instruction_difficulty``: ``{prompt_id: difficulty}`` for the LC model's
    difficulty term (:func:`length_controlled_win_rate`), when known.
    """
    by_b = {(r["prompt_id"], r["sample_id"]): r for r in rows_b}
    missing = [(r["prompt_id"], r["sample_id"]) for r in rows_a
               if (r["prompt_id"], r["sample_id"]) not in by_b]
    if missing:
        raise ValueError(f"{len(missing)} of A's samples have no counterpart in B (first: "
                         f"prompt {missing[0][0]!r}, sample {missing[0][1]}): sample both policies on "
                         "the same prompts with the same number of samples")
    outcomes, chars_a, chars_b, per_prompt = [], [], [], {}
    for a in rows_a:
        b = by_b[(a["prompt_id"], a["sample_id"])]
        outcome = judge(a, b)
        outcomes.append(outcome)
        chars_a.append(len(a["text"]))
        chars_b.append(len(b["text"]))
        per_prompt.setdefault(a["prompt_id"], []).append(outcome)
    low, high = bootstrap_interval(list(per_prompt.values()), seed=seed)
    difficulty = (None if instruction_difficulty is None
                  else [instruction_difficulty[r["prompt_id"]] for r in rows_a])
    lc = length_controlled_win_rate(outcomes, chars_a, chars_b, difficulty)
    return {"win_rate": win_rate(outcomes), "ci_low": low, "ci_high": high,
            "lc_win_rate": lc["lc_win_rate"], "lc_share_a_not_longer": lc["share_a_not_longer"],
            "comparisons": len(outcomes),
            "ties": int(sum(o == 0.5 for o in outcomes)),
            "mean_length_a": float(np.mean([r["length"] for r in rows_a])),
            "mean_length_b": float(np.mean([r["length"] for r in rows_b]))}


class ScoreJudge:
    """1 / 0 / ½ by comparing ``row[key]`` of the two answers (a reward-model or gold score)."""

    def __init__(self, key: str = "score", tolerance: float = 0.0):
        self.key, self.tolerance = key, tolerance

    def __call__(self, a: dict, b: dict) -> float:
        diff = a[self.key] - b[self.key]
        return 0.5 if abs(diff) <= self.tolerance else float(diff > 0)


PAIRWISE_PROMPT = """Select the output (a) or (b) that best matches the given instruction. Choose your \
preferred output, which can be subjective. Your answer should ONLY contain: Output (a) or Output (b).

# Instruction:
{instruction}

# Output (a):
{output_a}

# Output (b):
{output_b}

# Which is best, Output (a) or Output (b)?"""
"""An AlpacaFarm-style pairwise judging prompt (our wording)."""


class JudgeError(RuntimeError):
    """The LLM judge cannot judge: no endpoint or model configured, or the endpoint kept
    failing or answering something unparseable."""


class ChatJudge:
    """Pairwise LLM judge over an OpenAI-compatible chat-completions endpoint, with a persistent cache.

    ``base_url`` (e.g. ``http://localhost:8000/v1``), ``model`` and ``api_key``
    default to ``$RLHF_JAX_JUDGE_BASE_URL``, ``$RLHF_JAX_JUDGE_MODEL`` and
    ``$OPENAI_API_KEY``. ``cache_path``: a JSONL file of earlier judgements.
    """

    def __init__(self, *, base_url: Optional[str] = None, model: Optional[str] = None,
                 api_key: Optional[str] = None, cache_path: Optional[str] = None, seed: int = 0,
                 retries: int = 4, backoff: float = 1.0, timeout: float = 60.0):
        self.base_url = (base_url or os.environ.get("RLHF_JAX_JUDGE_BASE_URL", "")).rstrip("/")
        self.model = model or os.environ.get("RLHF_JAX_JUDGE_MODEL", "")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY", "")
        if not self.base_url or not self.model:
            raise JudgeError("the chat judge needs an endpoint and a model: --base-url and "
                             "--judge-model (or RLHF_JAX_JUDGE_BASE_URL and RLHF_JAX_JUDGE_MODEL)")
        self.cache_path, self.seed = cache_path, seed
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.cache = self._load_cache()

    def _load_cache(self) -> dict:
        cache = {}
        if self.cache_path and os.path.exists(self.cache_path):
            with open(self.cache_path) as f:
                for line in f:
                    if line.strip():
                        row = json.loads(line)
                        cache[row["key"]] = row["outcome"]
        return cache

    def _key(self, a: dict, b: dict) -> str:
        return json.dumps([a["prompt"], a["text"], b["text"], self.model])

    def __call__(self, a: dict, b: dict) -> float:
        key = self._key(a, b)
        if key in self.cache:
            return self.cache[key]
        swap = random.Random(f"{self.seed}:{key}").random() < 0.5  # order randomised, seeded
        first, second = (b, a) if swap else (a, b)
        choice = self._ask(PAIRWISE_PROMPT.format(instruction=a["prompt"], output_a=first["text"],
                                                  output_b=second["text"]))
        outcome = 0.5 if choice is None else float((choice == "a") != swap)
        self.cache[key] = outcome
        if self.cache_path:
            with open(self.cache_path, "a") as f:
                f.write(json.dumps({"key": key, "outcome": outcome}) + "\n")
        return outcome

    def _ask(self, prompt: str) -> Optional[str]:
        """``"a"``, ``"b"``, or ``None`` (a tie: the judge named both or neither)."""
        body = json.dumps({"model": self.model, "temperature": 0, "max_tokens": 8,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        last_error = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(
                f"{self.base_url}/chat/completions", data=body, method="POST",
                headers={"Content-Type": "application/json",
                         **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    answer = json.loads(response.read())["choices"][0]["message"]["content"]
            except (urllib.error.URLError, TimeoutError, OSError, KeyError, IndexError,
                    TypeError, json.JSONDecodeError) as err:
                last_error = err
                continue
            text = answer.lower()
            has_a, has_b = "output (a)" in text, "output (b)" in text
            if has_a != has_b:
                return "a" if has_a else "b"
            if has_a and has_b:
                return None
            last_error = ValueError(f"unparseable judgement {answer!r}")
        raise JudgeError(f"judge at {self.base_url} failed after {self.retries + 1} attempts: "
                         f"{last_error}")
