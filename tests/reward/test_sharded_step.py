"""One reward-model step on 8 simulated devices (data=2, fsdp=2, tensor=2) equals the 1-device step.

Runs ``tests/multidevice/reward_step.py`` in a subprocess (JAX fixes its device
count at start-up). Tolerances: loss and margins 1e-5, params after one AdamW
step (eps 1e-6) 1e-5.
"""

from tests.helpers import run_multidevice_script


def test_sharded_reward_step_equals_single_device():
    result = run_multidevice_script("reward_step.py")
    assert result["loss_diff"] <= 1e-5 and result["margin_diff"] <= 1e-5
    assert result["param_update_size"] > 1e-4, "the step must move the params"
    assert result["param_diff"] <= 1e-5
    assert result["q_proj_spec"] == ["None", "fsdp", "tensor", "None"]
