"""The XLA:CPU tuning only edits XLA_FLAGS before the backend starts, and can be turned off."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = ("import os; from rlhf_jax.xla_cpu import tune_cpu_flags; changed = tune_cpu_flags(); "
         "import jax; jax.numpy.ones(1).block_until_ready(); "
         "print(changed, repr(os.environ.get('XLA_FLAGS', '')))")


def _probe(**env):
    full = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", **env}
    for key in [k for k, v in env.items() if v is None]:
        full.pop(key)
    return subprocess.run([sys.executable, "-c", PROBE], env=full, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_flags_are_added_before_the_backend_starts():
    out = _probe(XLA_FLAGS=None, RLHF_JAX_CPU_TUNING=None)
    assert out.startswith("True") and "--xla_cpu_multi_thread_eigen=false" in out


def test_opt_out_and_user_flags_win():
    assert _probe(XLA_FLAGS=None, RLHF_JAX_CPU_TUNING="0") == "False ''"
    out = _probe(XLA_FLAGS="--xla_cpu_multi_thread_eigen=true", RLHF_JAX_CPU_TUNING=None)
    assert "--xla_cpu_multi_thread_eigen=true" in out and "eigen=false" not in out
    assert "--xla_cpu_experimental_ynn_fusion_type=" in out
