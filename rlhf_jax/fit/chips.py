"""TPU chips and slices: HBM, peak rates, and the compile-only devices of a topology (libtpu)."""

from __future__ import annotations

import dataclasses
import os

import jax

from rlhf_jax.config import ConfigError

GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU chip: HBM, what a program may use of it, peak bf16 FLOP/s and HBM bandwidth."""

    name: str
    hbm_gib: float
    usable_gib: float
    bf16_flops: float
    hbm_bytes_per_s: float


CHIPS = {
    # Peak bf16 FLOP/s and HBM bandwidth per chip: Google Cloud's TPU system-architecture pages.
    # Usable HBM: the runtime's bytes_limit on v5e (15.75 GiB) and v4 (30.75 GiB) as measured on
    # those VMs; for v5p and v6e the HBM less the same 0.25 GiB / 1.25 GiB reserve (assumed).
    "v4": Chip("v4", 32.0, 30.75, 275e12, 1228e9),
    "v5e": Chip("v5e", 16.0, 15.75, 197e12, 819e9),
    "v5p": Chip("v5p", 95.0, 93.75, 459e12, 2765e9),
    "v6e": Chip("v6e", 32.0, 31.25, 918e12, 1640e9),
}

SLICES = {
    # slice name → (topology for get_topology_desc, its options). Chips: v5e and v6e count
    # chips in the name, v4 and v5p count TensorCores (2 per chip, one megacore device each).
    # v5e-8 and v6e-8 are single-host VMs with 8 chips; larger v5e/v6e slices have 4 per host.
    "v5e-4": ("v5e:2x2", {}), "v5e-8": ("v5e:2x4", {"chips_per_host_bounds": [2, 4, 1]}),
    "v5e-16": ("v5e:4x4", {}),
    "v6e-8": ("v6e:2x4", {"chips_per_host_bounds": [2, 4, 1]}), "v6e-16": ("v6e:4x4", {}),
    "v4-8": ("v4:2x2x1", {"chip_config_name": "megacore"}),
    "v4-16": ("v4:2x2x2", {"chip_config_name": "megacore"}),
    "v4-32": ("v4:2x2x4", {"chip_config_name": "megacore"}),
    "v5p-8": ("v5p:2x2x1", {}), "v5p-16": ("v5p:2x2x2", {}), "v5p-32": ("v5p:2x2x4", {}),
}


def _chip_of(topology: str) -> Chip:
    family = topology.split(":")[0].split("-")[0]
    if family not in CHIPS:
        raise ConfigError(f"topology {topology!r}: unknown chip {family!r} (known: {sorted(CHIPS)})")
    return CHIPS[family]


def topology_devices(name: str) -> tuple:
    """``(devices, chip, topology)`` of a slice name (``v5e-8``, :data:`SLICES`) or a topology
    (``v5e:2x4``). Needs libtpu (``pip install "jax[tpu]==<jax version>"``); runs on CPU."""
    topology, options = SLICES.get(name, (name, {}))
    if topology.startswith("v4") and not options:
        options = {"chip_config_name": "megacore"}
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # another JAX process may hold it
    try:
        from jax.experimental import topologies
        desc = topologies.get_topology_desc(topology, "tpu", **options)
    except Exception as err:  # libtpu missing, or a name it does not know
        raise ConfigError(f"cannot describe TPU topology {topology!r} ({name}): {err}. Needs "
                          f"libtpu: pip install \"jax[tpu]=={jax.__version__}\"; slice names: "
                          f"{sorted(SLICES)}") from None
    return list(desc.devices), _chip_of(topology), topology
