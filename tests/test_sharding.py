"""Sharding over a device mesh: 8 simulated CPU devices, and two processes over localhost.

JAX fixes its device count when it starts, so the multi-device checks run in
subprocesses (``tests/multidevice/*.py``) and report JSON. Reference: the same
computation on a single device. Tolerances: logits and loss 1e-5, gradients
1e-6, params after one AdamW step 1e-5.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from rlhf_jax import sharding

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _run(script, *args, env=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT, **(env or {})}
    return subprocess.Popen([sys.executable, os.path.join(HERE, "multidevice", script), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _json_line(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


@pytest.fixture(scope="module")
def eight_devices():
    return _json_line(_run("sharded_equivalence.py", "tiny-llama"))


def test_sharded_forward_equals_single_device(eight_devices):
    assert eight_devices["logit_diff"] <= 1e-5
    assert eight_devices["logits_spec"][0] == "('data', 'fsdp')"


def test_sharded_optimizer_step_equals_single_device(eight_devices):
    assert eight_devices["loss_diff"] <= 1e-5
    assert eight_devices["grad_diff"] <= 1e-6
    assert eight_devices["param_update_size"] > 1e-4, "the step must actually move the params"
    assert eight_devices["param_diff"] <= 1e-5


def test_params_are_really_sharded(eight_devices):
    # q_proj [layers, embed, heads, head_dim]: embed over fsdp=2, heads over tensor=2.
    assert eight_devices["q_proj_spec"] == ["None", "fsdp", "tensor", "None"]
    layers, embed, heads, head_dim = eight_devices["q_proj_shape"]
    assert eight_devices["q_proj_shard_shape"] == [layers, embed // 2, heads // 2, head_dim]
    assert eight_devices["num_devices_with_q_proj"] == 8
    assert eight_devices["embedding_spec"] == ["tensor", "fsdp"]
    assert eight_devices["embedding_shard_shape"] == [128, 32]


def test_export_of_sharded_params_reloads_onto_the_mesh(eight_devices):
    assert eight_devices["reload_diff"] == 0.0  # float32 out, float32 back
    assert eight_devices["reload_q_proj_spec"] == ["None", "fsdp", "tensor", "None"]


def test_indivisible_axis_is_replicated(eight_devices):
    # SmolLM2-135M has 3 kv heads: tensor=2 cannot split them.
    assert eight_devices["indivisible_kv_heads_k_proj_spec"] == ["None", "fsdp", "None", "None"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_over_localhost():
    env = {"RLHF_JAX_COORDINATOR": f"127.0.0.1:{_free_port()}", "RLHF_JAX_NUM_PROCESSES": "2"}
    procs = [_run("multihost_forward.py", env={**env, "RLHF_JAX_PROCESS_ID": str(i)}) for i in (0, 1)]
    try:
        result = _json_line(procs[0], timeout=240)
        procs[1].communicate(timeout=60)
    finally:
        for p in procs:
            p.kill()
    assert result["processes"] == 2 and result["devices"] == 8
    assert result["global_batch_shape"] == [8, 16]  # each process fed 4 rows
    assert result["logit_diff"] <= 1e-5


@pytest.mark.parametrize("sizes,devices,expected", [
    ((-1, 1, 1), 8, (8, 1, 1)), ((2, -1, 2), 8, (2, 2, 2)), ((1, 1, -1), 4, (1, 1, 4)),
    ((2, 2, 2), 8, (2, 2, 2)),
])
def test_resolve_mesh_shape(sizes, devices, expected):
    assert sharding.resolve_mesh_shape(*sizes, num_devices=devices) == expected


@pytest.mark.parametrize("sizes,devices,message", [
    ((-1, -1, 1), 8, "at most one"), ((3, -1, 1), 8, "do not divide"), ((2, 2, 1), 8, "needs 4"),
])
def test_bad_mesh_shape(sizes, devices, message):
    with pytest.raises(ValueError, match=message):
        sharding.resolve_mesh_shape(*sizes, num_devices=devices)


def test_single_process_does_not_initialize(monkeypatch):
    for var in ("RLHF_JAX_COORDINATOR", "RLHF_JAX_NUM_PROCESSES", "RLHF_JAX_PROCESS_ID",
                "RLHF_JAX_DISTRIBUTED"):
        monkeypatch.delenv(var, raising=False)
    assert sharding.initialize_distributed() is False
    with pytest.raises(ValueError, match="coordinator"):
        sharding.initialize_distributed(num_processes=2, process_id=0)
