"""The backward-profile benchmark runs on small shapes and its trace names XLA's thunks."""

from rlhf_jax.benchmarks import backward_profile


def test_profile_times_each_part_and_lists_thunks(monkeypatch):
    real = backward_profile.losses
    monkeypatch.setattr(backward_profile, "losses",
                        lambda b, p, r: real(b, p, r, preset="tiny-llama"))
    out = backward_profile.main(["--batch", "2", "--prompt-len", "4", "--response-len", "4",
                                 "--repeats", "1", "--trace", "trunk", "--top", "5",
                                 "--xla-defaults"])
    assert set(out) == {"full", "trunk", "head", "trace"}
    for part in ("full", "trunk", "head"):
        assert 0 < out[part]["forward_s"] and 0 < out[part]["forward_backward_s"]
    assert 0 < len(out["trace"]) <= 5 and all(s >= 0 and n >= 1 for s, n, _ in out["trace"])
