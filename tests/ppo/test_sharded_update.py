"""One PPO update on 8 simulated devices (data=2, fsdp=2, tensor=2) equals the 1-device update.

Runs ``tests/multidevice/ppo_update.py`` in a subprocess. Tolerances: params and
every logged metric 1e-5 (AdamW with eps 1e-8 amplifies float noise in
near-zero gradients less than that here; the reference is the same update on
one device).
"""

from tests.helpers import run_multidevice_script


def test_sharded_ppo_update_equals_single_device():
    result = run_multidevice_script("ppo_update.py")
    assert result["param_update_size"] > 1e-4, "the update must move the params"
    assert result["param_diff"] <= 1e-5 and result["metric_diff"] <= 1e-5
    assert result["q_proj_spec"] == ["None", "fsdp", "tensor", "None"]
