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


def test_huge_pages_env_adds_the_tunable_once_and_keeps_the_users():
    from rlhf_jax.xla_cpu import HUGE_PAGES_TUNABLE, huge_pages_env
    assert huge_pages_env({})["GLIBC_TUNABLES"] == HUGE_PAGES_TUNABLE
    both = huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})["GLIBC_TUNABLES"]
    assert both == "glibc.malloc.arena_max=2:" + HUGE_PAGES_TUNABLE
    assert huge_pages_env({"GLIBC_TUNABLES": both})["GLIBC_TUNABLES"] == both
    mine = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}  # the user's choice stands
    assert huge_pages_env(mine) == mine


def test_reexec_only_where_it_changes_something(tmp_path):
    from rlhf_jax.xla_cpu import (HUGE_PAGES_TUNABLE, transparent_huge_page_mode,
                                  wants_huge_pages_reexec)
    mode = tmp_path / "enabled"
    for text, expected in [("always [madvise] never\n", "madvise"), ("[always] madvise never", "always"),
                           ("always madvise [never]", "never"), ("garbled", None)]:
        mode.write_text(text)
        assert transparent_huge_page_mode(str(mode)) == expected
    assert transparent_huge_page_mode(str(tmp_path / "missing")) is None
    assert wants_huge_pages_reexec({}, "madvise")
    for env, thp in [({}, "always"), ({}, "never"), ({}, None),
                     ({"RLHF_JAX_CPU_TUNING": "0"}, "madvise"),
                     ({"GLIBC_TUNABLES": HUGE_PAGES_TUNABLE}, "madvise")]:
        assert not wants_huge_pages_reexec(env, thp), (env, thp)


def test_the_command_reexecutes_once_with_huge_pages(tmp_path):
    """``rlhf-jax`` (``main()`` without argv) re-executes itself once with the tunable where THP
    is ``madvise``, and never with ``RLHF_JAX_CPU_TUNING=0``; the command's output is unchanged.
    A ``sitecustomize`` prints each interpreter's ``GLIBC_TUNABLES`` as it starts."""
    from rlhf_jax.xla_cpu import HUGE_PAGES_TUNABLE, transparent_huge_page_mode
    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys\nsys.stderr.write('TUNABLES=%s\\n' % os.environ.get('GLIBC_TUNABLES', ''))\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}", "JAX_PLATFORMS": "cpu"}
    env.pop("GLIBC_TUNABLES", None)
    env.pop("RLHF_JAX_CPU_TUNING", None)
    command = [sys.executable, "-c", "import sys; sys.argv = ['rlhf-jax', '--help']; "
               "import rlhf_jax.cli as cli; cli.main()"]

    def starts(extra):
        out = subprocess.run(command, env={**env, **extra}, capture_output=True, text=True)
        assert out.returncode == 0 and "usage: rlhf-jax" in out.stdout, out.stderr
        return [line for line in out.stderr.splitlines() if line.startswith("TUNABLES=")]

    if transparent_huge_page_mode() == "madvise":
        assert starts({}) == ["TUNABLES=", "TUNABLES=" + HUGE_PAGES_TUNABLE]
    else:
        assert starts({}) == ["TUNABLES="]
    assert starts({"RLHF_JAX_CPU_TUNING": "0"}) == ["TUNABLES="]
    assert starts({"GLIBC_TUNABLES": HUGE_PAGES_TUNABLE}) == ["TUNABLES=" + HUGE_PAGES_TUNABLE]
