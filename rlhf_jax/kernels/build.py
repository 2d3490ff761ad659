"""Compiling this package's C++ XLA FFI kernels on first use, and registering them with JAX.

Each kernel is one ``<name>.cc`` beside this file (plus the shared headers
here). It is compiled with the host's C++ compiler (``$CXX``, else ``g++`` or
``clang++``; ``-O3 -march=native``) against the FFI headers that ship with
jaxlib, and cached under ``$RLHF_JAX_CACHE`` (default ``~/.cache/rlhf_jax``)
keyed by the sources, the compiler, the flags, jaxlib and the CPU's features,
so a machine compiles each kernel once (a few seconds). :func:`register`
returns ``None`` or why the kernel cannot be used here; callers then keep
XLA's own operations. ``RLHF_JAX_CPU_KERNELS=0`` switches every kernel off.

Whether a model *uses* them by default is :func:`profitable_here`: the panel
kernel keeps up to 16 rows in AVX-512 registers; without AVX-512 it falls back to
4 rows, which measured ~3× slower than XLA's own matmul on a 2-core AMD EPYC
(AVX2) host (llama-135m, 8 × 64 tokens: 14.0 s against 4.5 s). So decoding uses
them only on CPUs with AVX-512F, unless ``RLHF_JAX_CPU_KERNELS=1`` forces them.
"""

from __future__ import annotations

import ctypes
import functools
import glob
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

log = logging.getLogger(__name__)

HERE = os.path.dirname(__file__)
COMPILE_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")


@functools.cache
def register(name: str, targets: tuple) -> Optional[str]:
    """Build ``<name>.cc`` and register each ``(ffi_target, symbol)`` of ``targets`` on CPU.

    Returns ``None`` on success, else the reason the kernel is unavailable
    (logged once).
    """
    reason = _why_not(name, targets)
    if reason:
        log.info("CPU kernel %s not used: %s; XLA's own operations are used instead", name, reason)
    return reason


def _why_not(name: str, targets: tuple) -> Optional[str]:
    if os.environ.get("RLHF_JAX_CPU_KERNELS", "1") == "0":
        return "RLHF_JAX_CPU_KERNELS=0"
    if jax.default_backend() != "cpu":
        return f"the default backend is {jax.default_backend()}, not cpu"
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
    if not compiler:
        return "no C++ compiler (g++ or clang++, or $CXX) on PATH"
    source = os.path.join(HERE, f"{name}.cc")
    try:
        library = ctypes.cdll.LoadLibrary(build(source, compiler))
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or err
        return f"compiling {source} with {compiler} failed: {str(detail)[-2000:]}"
    for target, symbol in targets:
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                    platform="cpu")
    return None


def build(source: str, compiler: str, extra_flags: tuple = ()) -> str:
    """Path of ``source`` compiled to a shared library, reusing a cached build for this machine.

    ``extra_flags`` go after :data:`COMPILE_FLAGS` (tests build the portable
    paths with ``-mno-avx512f``).
    """
    flags = (*COMPILE_FLAGS, *extra_flags)
    inputs = [source, *sorted(glob.glob(os.path.join(HERE, "*.h")))]
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             check=True).stdout
    digest = hashlib.sha256()
    for part in [*(open(f, "rb").read() for f in inputs), version.encode(),
                 " ".join(flags).encode(), _jaxlib_version().encode(),
                 platform.machine().encode(), _cpu_flags().encode()]:
        digest.update(part + b"\0")
    cache = os.path.join(os.environ.get("RLHF_JAX_CACHE", os.path.expanduser("~/.cache/rlhf_jax")),
                         "kernels")
    stem = os.path.splitext(os.path.basename(source))[0]
    library = os.path.join(cache, f"{stem}-{digest.hexdigest()[:16]}.so")
    if os.path.exists(library):
        return library
    os.makedirs(cache, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".so.tmp")
    os.close(fd)
    try:
        subprocess.run([compiler, *flags, f"-I{jax.ffi.include_dir()}", source, "-o", tmp],
                       capture_output=True, text=True, check=True)
        os.replace(tmp, library)  # atomic: concurrent builders each publish a complete file
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    log.info("compiled %s → %s", source, library)
    return library


def profitable_here() -> bool:
    """Use the kernels by default: on CPUs with AVX-512F, or when ``RLHF_JAX_CPU_KERNELS=1``."""
    setting = os.environ.get("RLHF_JAX_CPU_KERNELS", "auto")
    if setting == "1":
        return True
    if setting == "0":
        return False
    return "avx512f" in _cpu_flags().split()


def _jaxlib_version() -> str:
    try:
        return importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:  # e.g. jaxlib built from source
        return jax.__version__


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
