"""SIGTERM and SIGINT only set :class:`rlhf_jax.preemption.PreemptionGuard`'s flag (the loop
saves at its next step boundary); a second signal acts at once; handlers are put back; and in
a two-process job every process stops after the same step when one of them is signalled."""

import json
import os
import signal
import subprocess
import sys

import pytest

from rlhf_jax.preemption import PreemptionGuard
from tests.test_multihost import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "multidevice", "preemption_agreement.py")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_sets_the_flag_and_the_handlers_come_back(sig):
    before = signal.getsignal(sig)
    with PreemptionGuard() as guard:
        assert not guard.should_stop()
        os.kill(os.getpid(), sig)  # delivered to the main thread before the next bytecode
        assert guard.should_stop() and guard.received == signal.Signals(sig).name
    assert signal.getsignal(sig) is before


def test_a_second_ctrl_c_stops_at_once():
    with PreemptionGuard() as guard:
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.received == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # Python's own SIGINT handler, put back
            os.kill(os.getpid(), signal.SIGINT)


def test_every_process_stops_after_the_same_step():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT,
           "RLHF_JAX_COORDINATOR": f"localhost:{free_port()}", "RLHF_JAX_NUM_PROCESSES": "2"}
    procs = [subprocess.Popen([sys.executable, SCRIPT], cwd=ROOT, text=True,
                              env={**env, "RLHF_JAX_PROCESS_ID": str(i)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in (0, 1)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["stopped_after"] for r in results] == [3, 3]
    assert results[1]["received"] == "SIGTERM"
    assert results[0]["received"] == "a signal on another process"
