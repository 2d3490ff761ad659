"""A CPU matmul for decoding: ``y = x · W`` with ``W`` pre-packed in 16-column panels.

A decode step multiplies a few rows (the batch) by every weight matrix of the
model, so its speed is how fast the weights stream through the cores. XLA:CPU
runs these skinny products at 75–95 GFLOP/s with 16 rows, on one core under
:mod:`rlhf_jax.xla_cpu`'s flags. This kernel (``panel_matmul.cc``, an XLA FFI
custom call) keeps up to 16 rows of ``x`` in registers while each panel
``P[p] = W[:, 16p : 16p + 16]`` (stored contiguously, ``[k, 16]``) streams
through once, and splits the panels between the threads of XLA's intra-op pool.
SmolLM2-135M's projections for one decode step at batch 16 take ~36 ms this
way against ~130 ms as ``jnp.dot`` in the same jitted chain (2 cores; see
``python -m rlhf_jax.benchmarks.decode`` for whole-step numbers).

The kernel is compiled from source on first use with the host's C++ compiler
(``-O3 -march=native``, against the FFI headers that ship with jaxlib) and
cached under ``$RLHF_JAX_CACHE`` (default ``~/.cache/rlhf_jax``), keyed by the
source, the compiler, jaxlib and the CPU. Where that cannot happen (no
compiler, not a CPU backend, ``RLHF_JAX_CPU_KERNELS=0``) :func:`available`
says why and callers keep XLA's matmul. Float32 only; single device (the
custom call has no sharding rule).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from typing import Optional

import jax
import jax.numpy as jnp

log = logging.getLogger(__name__)

PANEL = 16  # columns per panel; must match kLanes in panel_matmul.cc
TARGET = "rlhf_jax_panel_matmul"
SOURCE = os.path.join(os.path.dirname(__file__), "panel_matmul.cc")
COMPILE_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")


def pack_panels(w_kn: jnp.ndarray) -> jnp.ndarray:
    """``[k, n]`` → ``[ceil(n / 16), k, 16]``: panel ``p`` is ``W[:, 16p : 16p + 16]``, zero-padded."""
    k, n = w_kn.shape
    panels = -(-n // PANEL)
    padded = jnp.pad(w_kn, ((0, 0), (0, panels * PANEL - n)))
    return padded.reshape(k, panels, PANEL).transpose(1, 0, 2)


def unpack_panels(packed_pkl: jnp.ndarray, n: int) -> jnp.ndarray:
    """Inverse of :func:`pack_panels`: ``[panels, k, 16]`` → ``[k, n]``."""
    panels, k, lanes = packed_pkl.shape
    return packed_pkl.transpose(1, 0, 2).reshape(k, panels * lanes)[:, :n]


def panel_matmul(x: jnp.ndarray, packed_pkl: jnp.ndarray, n: int) -> jnp.ndarray:
    """``x[..., k] · W[k, n]`` with ``W`` given as :func:`pack_panels` panels; float32.

    Call :func:`available` first: this emits the custom call unconditionally.
    """
    if x.dtype != jnp.float32 or packed_pkl.dtype != jnp.float32:
        raise TypeError(f"panel_matmul is float32 only; got x {x.dtype}, panels {packed_pkl.dtype}")
    panels, k, lanes = packed_pkl.shape
    if lanes != PANEL or x.shape[-1] != k or panels != -(-n // PANEL):
        raise ValueError(f"panel_matmul: x {x.shape} and panels {packed_pkl.shape} do not make a "
                         f"[..., {k}] × [{k}, {n}] product (panels must be [ceil(n/16), k, 16])")
    lead = x.shape[:-1]
    x_mk = x.reshape(-1, k)
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((x_mk.shape[0], n), jnp.float32))
    return call(x_mk, packed_pkl).reshape(*lead, n)


def available() -> bool:
    """Whether :func:`panel_matmul` can run here (compiling and registering it on first call)."""
    return unavailable_reason() is None


@functools.cache
def unavailable_reason() -> Optional[str]:
    """``None`` when the kernel is registered, else why it is not (logged once)."""
    reason = _why_not()
    if reason:
        log.info("CPU panel matmul not used: %s; XLA's matmul is used instead", reason)
    return reason


def _why_not() -> Optional[str]:
    if os.environ.get("RLHF_JAX_CPU_KERNELS", "1") == "0":
        return "RLHF_JAX_CPU_KERNELS=0"
    if jax.default_backend() != "cpu":
        return f"the default backend is {jax.default_backend()}, not cpu"
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
    if not compiler:
        return "no C++ compiler (g++ or clang++, or $CXX) on PATH"
    try:
        library = _build(compiler)
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or err
        return f"compiling {SOURCE} with {compiler} failed: {str(detail)[-2000:]}"
    import ctypes
    handler = ctypes.cdll.LoadLibrary(library).RlhfPanelMatmul
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handler), platform="cpu")
    return None


def _build(compiler: str) -> str:
    """Path of the compiled library, building it unless a cached build for this machine exists."""
    with open(SOURCE, "rb") as f:
        source = f.read()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             check=True).stdout
    key = hashlib.sha256(b"\0".join([
        source, version.encode(), " ".join(COMPILE_FLAGS).encode(),
        importlib.metadata.version("jaxlib").encode(),
        platform.machine().encode(), _cpu_flags().encode()])).hexdigest()[:16]
    cache = os.path.join(os.environ.get("RLHF_JAX_CACHE", os.path.expanduser("~/.cache/rlhf_jax")),
                         "kernels")
    library = os.path.join(cache, f"panel_matmul-{key}.so")
    if os.path.exists(library):
        return library
    os.makedirs(cache, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".so.tmp")
    os.close(fd)
    try:
        subprocess.run([compiler, *COMPILE_FLAGS, f"-I{jax.ffi.include_dir()}", SOURCE, "-o", tmp],
                       capture_output=True, text=True, check=True)
        os.replace(tmp, library)  # atomic: concurrent builders each publish a complete file
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    log.info("compiled %s → %s", SOURCE, library)
    return library


def _cpu_flags() -> str:
    """The CPU's feature flags (``-march=native`` builds are only valid on the same kind of CPU)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


__all__ = ["PANEL", "available", "pack_panels", "panel_matmul", "unavailable_reason",
           "unpack_panels"]
