"""A CPU matmul for decoding: ``y = x · W`` with ``W`` pre-packed in 16-column panels.

A decode step multiplies a few rows (the batch) by every weight matrix of the
model, so its speed is how fast the weights stream through the cores. XLA:CPU
runs these skinny products at 75–95 GFLOP/s with 16 rows, on one core under
:mod:`rlhf_jax.xla_cpu`'s flags. This kernel (``panel_matmul.cc``, an XLA FFI
custom call) keeps up to 16 rows of ``x`` in registers while each panel
``P[p] = W[:, 16p : 16p + 16]`` (stored contiguously, ``[k, 16]``) streams
through once, and splits the panels between the threads of XLA's intra-op pool.
With it (and :mod:`rlhf_jax.kernels.decode_attention`) SmolLM2-135M's greedy
decode at batch 16 runs at ~430–470 tok/s against ~215–230 with XLA's own ops
on 2 cores (``python -m rlhf_jax.benchmarks.decode --without-cpu-kernels``).

The kernel is compiled on first use (:mod:`rlhf_jax.kernels.build`). Where
that cannot happen (no compiler, not a CPU backend, ``RLHF_JAX_CPU_KERNELS=0``)
:func:`available` is false, :func:`unavailable_reason` says why, and callers
keep XLA's matmul. Float32 only; single device (the custom call has no
sharding rule).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from rlhf_jax.kernels import build

PANEL = 16  # columns per panel; must match kLanes in panel_matmul.cc
TARGET = "rlhf_jax_panel_matmul"


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
    return panel_matmuls(x, ((packed_pkl, n),))[0]


def panel_matmuls(x: jnp.ndarray, weights: Sequence[Tuple[jnp.ndarray, int]]) -> list:
    """``[x · W_i for each (packed W_i, n_i) of weights]`` in one kernel call; float32.

    One call transposes ``x`` once and splits the panels of every product
    between the threads together, which beats a call per product when the
    products are small (a decode step's q/k/v, or gate and up). Call
    :func:`available` first.
    """
    k = x.shape[-1]
    for packed_pkl, n in weights:
        if x.dtype != jnp.float32 or packed_pkl.dtype != jnp.float32:
            raise TypeError(f"panel_matmul is float32 only; got x {x.dtype}, panels "
                            f"{packed_pkl.dtype}")
        panels, rows, lanes = packed_pkl.shape
        if lanes != PANEL or rows != k or panels != -(-n // PANEL):
            raise ValueError(f"panel_matmul: x {x.shape} and panels {packed_pkl.shape} do not make "
                             f"a [..., {k}] × [{k}, {n}] product (panels must be "
                             "[ceil(n/16), k, 16])")
    lead = x.shape[:-1]
    x_mk = x.reshape(-1, k)
    call = jax.ffi.ffi_call(TARGET, [jax.ShapeDtypeStruct((x_mk.shape[0], n), jnp.float32)
                                     for _, n in weights])
    outputs = call(x_mk, *(packed_pkl for packed_pkl, _ in weights))
    return [y.reshape(*lead, n) for y, (_, n) in zip(outputs, weights)]


def available() -> bool:
    """Whether :func:`panel_matmul` can run here (compiling and registering it on first call)."""
    return unavailable_reason() is None


def unavailable_reason() -> Optional[str]:
    """``None`` when the kernel is registered, else why it is not (see :mod:`.build`)."""
    return build.register("panel_matmul", ((TARGET, "RlhfPanelMatmul"),))


__all__ = ["PANEL", "available", "pack_panels", "panel_matmul", "panel_matmuls",
           "unavailable_reason", "unpack_panels"]
