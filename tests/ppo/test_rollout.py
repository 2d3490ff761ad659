"""PPO's sharded rollout: the sampler in the rollout layout gives the single-device tokens,
and its compiled decode loop all-gathers no weight (the training layout's does, every token)."""

from tests.helpers import run_multidevice_script


def test_rollout_layout_matches_one_device_and_gathers_no_weight():
    out = run_multidevice_script("sharded_rollout.py")
    for mode in ("greedy", "sampled"):
        rollout, training = out[f"rollout_{mode}"], out[f"training_{mode}"]
        assert rollout["mesh"] == {"data": 4, "fsdp": 1, "tensor": 2}  # 2 kv heads → tensor 2
        assert rollout["equal"] and training["equal"], (mode, rollout, training)
        assert rollout["has_while"] and training["has_while"]
        assert rollout["big_all_gathers"] == [], rollout
        # the detector sees the FSDP layout's per-layer weight gathers (so it can fail)
        assert len(training["big_all_gathers"]) >= 4 * 2, training
