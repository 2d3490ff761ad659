"""The backward-profile benchmark runs on small shapes and its trace names XLA's thunks."""

from rlhf_jax.benchmarks import backward_profile


def test_profile_times_each_part_and_lists_thunks(monkeypatch):
    real = backward_profile.losses
    monkeypatch.setattr(backward_profile, "losses",
                        lambda b, p, r: real(b, p, r, preset="tiny-llama"))
    out = backward_profile.main(["--batch", "2", "--prompt-len", "4", "--response-len", "4",
                                 "--repeats", "1", "--trace", "trunk", "--top", "50",
                                 "--xla-defaults"])
    assert set(out) == {"full", "trunk", "head", "head_chunked", "trace"}
    for part in ("full", "trunk", "head", "head_chunked"):
        assert 0 < out[part]["forward_s"] and 0 < out[part]["forward_backward_s"]
    # the update's head on this backend (plain on CPU) and the chunked form give the same loss
    real_params, parts = real(2, 4, 4, preset="tiny-llama")
    assert abs(float(parts["head"](real_params)) - float(parts["head_chunked"](real_params))) < 1e-5
    names = [name for _, _, name in out["trace"]]
    assert 0 < len(names) <= 50
    # compiled before the trace: it holds the call's XLA thunks, not the compile
    assert not any("ompile" in name for name in names), names
    assert any("fusion" in name or "dot" in name for name in names), names
