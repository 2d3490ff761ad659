"""Win rates, the paired bootstrap, the length-controlled win rate and the chat judge (local server)."""

import http.server
import json
import threading

import numpy as np
import pytest
from scipy import special, stats

from rlhf_jax import evaluate


def test_bootstrap_matches_scipy_paired_percentile():
    rng = np.random.default_rng(0)
    per_prompt = [list(rng.choice([0.0, 0.5, 1.0], size=int(rng.integers(1, 6)), p=[0.3, 0.1, 0.6]))
                  for _ in range(80)]
    ours = evaluate.bootstrap_interval(per_prompt, samples=20000, seed=1)
    sums = np.asarray([sum(o) for o in per_prompt])
    counts = np.asarray([len(o) for o in per_prompt], float)
    ref = stats.bootstrap((sums, counts), lambda s, c, axis: s.sum(axis) / c.sum(axis), paired=True,
                          vectorized=True, method="percentile", n_resamples=20000,
                          random_state=np.random.default_rng(2)).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.01) and ours[1] == pytest.approx(ref.high, abs=0.01)
    flat = [o for p in per_prompt for o in p]
    assert evaluate.win_rate(flat) == pytest.approx(sum(flat) / len(flat))


def newton_logistic(y, x, steps=50):
    theta = np.zeros(2)
    design = np.stack([np.ones_like(x), x], 1)
    for _ in range(steps):
        p = special.expit(design @ theta)
        hess = design.T @ (design * (p * (1 - p))[:, None])
        theta -= np.linalg.solve(hess, design.T @ (p - y))
    return theta


def test_length_controlled_win_rate_matches_newton():
    rng = np.random.default_rng(3)
    diffs = rng.normal(20, 40, 600)
    y = (rng.random(600) < special.expit(0.4 + 0.03 * diffs)).astype(float)
    y[:30] = 0.5  # ties
    got = evaluate.length_controlled_win_rate(y, diffs)
    theta = newton_logistic(y, diffs / diffs.std())
    assert got["lc_win_rate"] == pytest.approx(special.expit(theta[0]), abs=1e-4)
    assert got["theta1_per_token"] == pytest.approx(theta[1] / diffs.std(), rel=1e-3)
    assert got["lc_win_rate"] < evaluate.win_rate(y)  # the raw rate is inflated by length


class _Judge(http.server.BaseHTTPRequestHandler):
    mode = "fair"
    calls = 0

    def do_POST(self):
        type(self).calls += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        first = prompt.split("# Output (a):")[1].split("# Output (b):")[0]
        if self.mode == "garbage":
            answer = "I cannot decide"
        else:
            answer = "Output (a)" if "good" in first else "Output (b)"
        payload = json.dumps({"choices": [{"message": {"content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Judge.calls, _Judge.mode = 0, "fair"
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def rows(texts):
    return [{"prompt_id": str(i), "sample_id": 0, "prompt": f"q{i}", "text": t, "length": len(t)}
            for i, t in enumerate(texts)]


def test_chat_judge_on_loopback_with_order_randomised_and_cache(server, tmp_path):
    cache = str(tmp_path / "judgements.jsonl")
    judge = evaluate.ChatJudge(base_url=server, model="m", cache_path=cache, backoff=0.01)
    a, b = rows(["good answer"] * 12), rows(["meh"] * 12)
    result = evaluate.compare_policies(a, b, judge)
    assert result["win_rate"] == 1.0 and result["comparisons"] == 12  # whatever order was shown
    assert _Judge.calls == 12
    again = evaluate.ChatJudge(base_url=server, model="m", cache_path=cache, backoff=0.01)
    assert evaluate.compare_policies(a, b, again)["win_rate"] == 1.0
    assert _Judge.calls == 12  # every judgement came from the cache


def test_chat_judge_garbage_then_clear_error(server):
    _Judge.mode = "garbage"
    judge = evaluate.ChatJudge(base_url=server, model="m", retries=2, backoff=0.01)
    with pytest.raises(evaluate.JudgeError, match="failed after 3 attempts: unparseable"):
        judge(rows(["x"])[0], rows(["y"])[0])


def test_chat_judge_unreachable_endpoint():
    judge = evaluate.ChatJudge(base_url="http://127.0.0.1:9/v1", model="m", retries=1, backoff=0.01,
                               timeout=1)
    with pytest.raises(evaluate.JudgeError, match="failed after 2 attempts"):
        judge(rows(["x"])[0], rows(["y"])[0])


def test_unpaired_samples_are_an_error():
    with pytest.raises(ValueError, match="no counterpart in B"):
        evaluate.compare_policies(rows(["a", "b"]), rows(["a"]), evaluate.ScoreJudge("length"))
