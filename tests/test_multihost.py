"""Two processes joined by ``jax.distributed`` (4 CPU devices each) against one 8-device process.

``tests/multidevice/multihost_stages.py`` runs a LoRA reward model (3 steps, a checkpoint
every 2, the best restored) and then PPO against its export (3 steps; stopped after 2 and
resumed from the checkpoint by a new trainer), with pairs, prompts, rollouts and scoring split
over the processes; both runs' PPO scores with the one-process run's reward model. Compared
here:

- every logged metric of the first step of each stage (before any update: the data split, the
  rollout and the scoring alone), to 1e-5;
- the later steps' metrics and both exports, to 2e-3: the two runs reduce over devices in a
  different order (gloo across processes), and Adam turns roundoff-sized gradients into
  lr-sized steps (the reward model's score bias, whose Bradley–Terry gradient is 0 up to
  roundoff, moves by ~1e-4), so bit-equality is not expected after an update;
- the sampled response lengths of every PPO step, exactly.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

SCRIPT = os.path.join(os.path.dirname(__file__), "multidevice", "multihost_stages.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(out, devices, env, *extra):
    return subprocess.Popen([sys.executable, SCRIPT, str(out), str(devices), *extra], cwd=ROOT,
                            env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=900):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    single = json.loads(finish(launch(one, 8, {})).strip().splitlines()[-1])
    env = {"RLHF_JAX_COORDINATOR": f"localhost:{free_port()}", "RLHF_JAX_NUM_PROCESSES": "2"}
    reward_model = str(one / "rm" / "export")
    procs = [launch(two, 4, {**env, "RLHF_JAX_PROCESS_ID": str(i)}, reward_model) for i in (0, 1)]
    outputs = [finish(p) for p in procs]
    double = json.loads(outputs[0].strip().splitlines()[-1])
    return {"one": (one, single), "two": (two, double)}


def metrics(workdir, stage):
    return [json.loads(line) for line in open(os.path.join(workdir, stage, "metrics.jsonl"))]


def numeric(row):
    return {k: v for k, v in row.items() if isinstance(v, float) and not k.startswith("time/")}


@pytest.mark.slow
def test_two_processes_equal_one(runs):
    (one, single), (two, double) = runs["one"], runs["two"]
    assert (single["processes"], double["processes"]) == (1, 2)
    assert single["rm_best_step"] == double["rm_best_step"]
    assert single["ppo_steps"] == double["ppo_steps"] == 3
    for stage in ("rm", "ppo"):
        rows_1, rows_2 = metrics(one, stage), metrics(two, stage)
        assert [(r["step"], r.get("split")) for r in rows_1] == \
            [(r["step"], r.get("split")) for r in rows_2]
        for r1, r2 in zip(rows_1, rows_2):
            a, b = numeric(r1), numeric(r2)
            assert a.keys() == b.keys()
            tol = 1e-5 if r1["step"] == 1 else 2e-3
            for key in a:
                assert abs(a[key] - b[key]) <= tol * max(1.0, abs(a[key])), \
                    f"{stage} step {r1['step']} {key}: {a[key]} vs {b[key]}"
        if stage == "ppo":
            assert [r["env/response_length"] for r in rows_1] == \
                [r["env/response_length"] for r in rows_2]
        w1 = load_file(os.path.join(one, stage, "export", "model.safetensors"))
        w2 = load_file(os.path.join(two, stage, "export", "model.safetensors"))
        assert w1.keys() == w2.keys()
        for name in w1:
            np.testing.assert_allclose(w2[name], w1[name], atol=2e-3, err_msg=f"{stage} {name}")
    assert single["rm_eval"]["accuracy"] == double["rm_eval"]["accuracy"]
