"""What the ``rlhf-jax`` command prints at start-up: other libraries' noise kept out of stderr.

Three messages look like failures and are not:

* On a machine with ``libtpu`` installed (for ``rlhf-jax fit``) and no TPU attached, JAX tries
  the TPU plugin anyway: libtpu writes "could not determine TPU accelerator type" and a
  ``TPU_WORKER_HOSTNAMES`` error from C++, and JAX logs "Unable to initialize backend 'tpu'",
  before falling back to the CPU. :func:`platforms_for_this_host` sets ``JAX_PLATFORMS=cpu``
  in exactly that case, so JAX ends up on the device it would have picked, without the noise.
  It never narrows the choice where a TPU chip is attached or another PJRT plugin (CUDA, ROCm)
  is installed, and it leaves a ``JAX_PLATFORMS`` the user set alone.
* transformers logs "PyTorch was not found. Models won't be available…" when torch is absent;
  rlhf_jax only uses its tokenizers and configs. That message is one of transformers'
  *advisory* warnings, which ``TRANSFORMERS_NO_ADVISORY_WARNINGS=1`` turns off (its other
  warnings stay).
* TFDS prints "Downloading and preparing dataset" to stdout for a builder that reads a local
  file; :class:`rlhf_jax.data.tfds_pairs.PairsBuilder` logs its own line instead.

``rlhf-jax fit`` needs libtpu itself (it compiles for TPU topologies on this host); there
:func:`quiet_compile_only_tpu` gives libtpu's start-up the placeholders it asks for.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from importlib import metadata
from typing import MutableMapping

GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips are PCI devices of this vendor (as jax's hardware_utils reads them)


def tpu_chips_attached(pci_root: str = "/sys/bus/pci/devices") -> int:
    """How many Google PCI devices (TPU chips) the host has."""
    count = 0
    for vendor in glob.glob(os.path.join(pci_root, "*", "vendor")):
        try:
            with open(vendor) as f:
                count += f.read().strip() == GOOGLE_PCI_VENDOR
        except OSError:
            continue
    return count


def other_pjrt_plugins() -> list:
    """Installed JAX plugins other than libtpu (``jax_plugins.*`` modules and entry points)."""
    names = [e.name for e in metadata.entry_points(group="jax_plugins")]
    spec = importlib.util.find_spec("jax_plugins")
    if spec is not None:
        for root in spec.submodule_search_locations or []:
            names += [n for n in os.listdir(root) if not n.startswith(("_", "."))]
    return sorted(set(names))


def platforms_for_this_host(env: MutableMapping[str, str] = os.environ,
                            pci_root: str = "/sys/bus/pci/devices") -> bool:
    """Set ``JAX_PLATFORMS=cpu`` where JAX could only end up on the CPU after a failed TPU
    initialisation (libtpu installed, no TPU chip attached, no other plugin, nothing set by the
    user). Returns whether it did."""
    if "JAX_PLATFORMS" in env or "JAX_FORCE_TPU_INIT" in env:
        return False
    if importlib.util.find_spec("libtpu") is None or tpu_chips_attached(pci_root) > 0:
        return False
    if other_pjrt_plugins():
        return False
    env["JAX_PLATFORMS"] = "cpu"
    return True


def quiet_compile_only_tpu(env: MutableMapping[str, str] = os.environ,
                           pci_root: str = "/sys/bus/pci/devices") -> bool:
    """For ``rlhf-jax fit`` on a host without a TPU chip: libtpu starts to compile for a named
    topology, and on start-up looks for this host's accelerator type and worker hostnames,
    printing a warning and a C++ error when it finds none. Give it placeholders (each only if
    unset): a single local worker. The topology ``fit`` compiles for is named explicitly, so
    the compiled programs and their memory figures are the same (checked on v5e-8 and v4-8).
    Returns whether it set anything."""
    if tpu_chips_attached(pci_root) > 0:
        return False
    changed = False
    for key, value in (("TPU_WORKER_HOSTNAMES", "localhost"),
                       ("TPU_ACCELERATOR_TYPE", "v5litepod-8")):
        if key not in env:
            env[key] = value
            changed = True
    return changed


def quiet_start_up(env: MutableMapping[str, str] = os.environ) -> None:
    """Before JAX or transformers is imported: the settings above (each only if unset)."""
    env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    platforms_for_this_host(env)
