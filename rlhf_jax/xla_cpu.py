"""XLA:CPU settings that make our models faster on small CPU hosts.

Measured on this project's 2-core development machine (jax 0.10.2): for GEMMs
of the size a 135M model runs (``[512, 576] × [576, 1536]``), single-threaded
Eigen without XLA's YNNPACK fusions reaches 156 GFLOP/s against 89 with the
defaults, and a greedy decode step of SmolLM2-135M at batch 16 takes 62 ms
instead of 95 ms. Square 2048² products get slower (93 vs 150 GFLOP/s), so this
is a choice for small and medium models, not a universal win.

The flags must be in ``XLA_FLAGS`` before JAX creates its CPU backend; the
``rlhf-jax`` command calls :func:`tune_cpu_flags` first thing. Set
``RLHF_JAX_CPU_TUNING=0`` to keep XLA's defaults. They only touch the CPU
backend, so they are harmless on GPU and TPU hosts.

Transparent huge pages (:func:`huge_pages_env`): XLA:CPU allocates each large
temporary afresh on every call (a training step's stacked residuals are
hundreds of MB), and first-touching it in 4 KiB pages is a page fault per
page. With glibc's ``glibc.malloc.hugetlb=1`` tunable, malloc asks for 2 MiB
pages (``madvise``) and SmolLM2-135M's PPO-update forward + backward (16 × 192
tokens) falls from 19.0–20.1 s to 16.1 s on this project's 2-core VM
(``benchmarks.backward_profile --parts full``, 2026-12-02). The tunable is read
when a process starts, so the ``rlhf-jax`` command re-executes itself once
with it (:func:`reexec_with_huge_pages`) where the kernel's THP mode is
``madvise``; ``RLHF_JAX_CPU_TUNING=0`` opts out of this too.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Mapping, Optional, Sequence

log = logging.getLogger(__name__)

CPU_FLAGS = ("--xla_cpu_multi_thread_eigen=false", "--xla_cpu_experimental_ynn_fusion_type=")


def tune_cpu_flags() -> bool:
    """Append :data:`CPU_FLAGS` to ``XLA_FLAGS`` (unless disabled or set); return whether it did."""
    if os.environ.get("RLHF_JAX_CPU_TUNING", "1") == "0":
        return False
    current = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in CPU_FLAGS if f.split("=")[0] not in current]
    if not missing:
        return False
    if _cpu_backend_started():
        log.warning("XLA's CPU backend is already initialised: %s would have no effect", missing)
        return False
    os.environ["XLA_FLAGS"] = " ".join([current, *missing]).strip()
    return True


def _cpu_backend_started() -> bool:
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge._backends)
    except (ImportError, AttributeError):
        return False


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
_THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def transparent_huge_page_mode(path: str = _THP_MODE_FILE) -> Optional[str]:
    """The kernel's THP mode (``always`` / ``madvise`` / ``never``), or ``None`` where unknown."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def huge_pages_env(env: Mapping[str, str]) -> dict:
    """``env`` with :data:`HUGE_PAGES_TUNABLE` added to ``GLIBC_TUNABLES`` (kept if present)."""
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    if not any(t.startswith("glibc.malloc.hugetlb=") for t in tunables):
        tunables.append(HUGE_PAGES_TUNABLE)
    return {**env, "GLIBC_TUNABLES": ":".join(tunables)}


def wants_huge_pages_reexec(env: Mapping[str, str], thp_mode: Optional[str]) -> bool:
    """Whether re-executing with :func:`huge_pages_env` would change anything: tuning on,
    glibc, THP on request (``madvise``), and the tunable not yet in ``GLIBC_TUNABLES``."""
    if env.get("RLHF_JAX_CPU_TUNING", "1") == "0" or thp_mode != "madvise":
        return False
    if not (hasattr(os, "confstr") and "glibc" in (os.confstr("CS_GNU_LIBC_VERSION") or "")):
        return False
    return huge_pages_env(env)["GLIBC_TUNABLES"] != env.get("GLIBC_TUNABLES", "")


def reexec_with_huge_pages(argv: Sequence[str]) -> None:
    """Replace this process by ``python -m rlhf_jax.cli argv…`` with huge pages on, when
    :func:`wants_huge_pages_reexec` (else return). Call it before anything else has started."""
    if not wants_huge_pages_reexec(os.environ, transparent_huge_page_mode()):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "rlhf_jax.cli", *argv],
              huge_pages_env(os.environ))
