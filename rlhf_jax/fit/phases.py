"""One compiled phase of a stage: lowered on abstract arguments, compiled for a topology, measured."""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from rlhf_jax import sharding
from rlhf_jax.fit.chips import GIB, Chip
from rlhf_jax.fit.counting import shard_bytes

@dataclasses.dataclass
class Phase:
    """One compiled function of a stage, compiled for the topology."""

    name: str
    peak_bytes: int            # XLA's peak for the phase's program, per chip
    resident_bytes: int        # held across phases but not an argument of this one
    alias_bytes: int           # donated input bytes reused for outputs
    argument_bytes: int
    flops: float               # hand-counted, per call
    roofline_s: float
    note: str = ""
    compiled: bool = True      # False: not compiled, ``peak_bytes`` is a floor (its arguments)
    compile_s: float = 0.0

    @property
    def total_bytes(self) -> int:
        return self.peak_bytes + self.resident_bytes


def compile_phase(name: str, fn: Callable, args: Sequence, *, mesh, flops: float, chip: Chip,
                  num_chips: int, read_bytes: float = 0.0, resident_bytes: int = 0,
                  note: str = "", rules=sharding.DEFAULT_RULES, try_compile: bool = True) -> Phase:
    """``fn`` (jitted) lowered on abstract ``args`` under ``mesh`` (and logical ``rules``) and
    compiled for its devices.

    Not compiled when ``try_compile`` is false, or when its arguments plus ``resident_bytes``
    already exceed the chip's usable HBM: a program's peak holds its arguments, so the verdict
    is certain and the compile (minutes for a 70B sampler) is skipped. Such a phase reports
    that floor (``compiled=False``), which the tables print as "≥".
    """
    roofline = max(flops / (num_chips * chip.bf16_flops),
                   read_bytes / chip.hbm_bytes_per_s if read_bytes else 0.0)
    arguments = shard_bytes(args)
    floor = arguments + int(resident_bytes)
    if not try_compile or floor > chip.usable_gib * GIB:
        why = ("an earlier phase does not fit" if not try_compile else
               f"its arguments ({arguments / GIB:.2f} GiB) and what stays resident "
               f"({resident_bytes / GIB:.2f} GiB) exceed usable HBM")
        return Phase(name=name, peak_bytes=arguments, resident_bytes=int(resident_bytes),
                     alias_bytes=0, argument_bytes=arguments, flops=flops, roofline_s=roofline,
                     note=f"{note}; not compiled: {why}".lstrip("; "), compiled=False)
    start = time.perf_counter()
    with sharding.use_mesh(mesh, rules):
        lowered = fn.lower(*args)
        try:
            compiled = lowered.compile()
        except Exception as err:  # XLA:TPU refuses programs over the chip's HBM
            needed = out_of_memory_bytes(str(err))
            if needed is None:
                raise
            return Phase(name=name, peak_bytes=needed + arguments, resident_bytes=int(resident_bytes),
                         alias_bytes=0, argument_bytes=arguments, flops=flops, roofline_s=roofline,
                         note=f"{note}; XLA refused it: out of HBM (temporaries {needed / GIB:.2f} GiB "
                              f"+ arguments)".lstrip("; "),
                         compile_s=time.perf_counter() - start)
    memory = compiled.memory_analysis()
    return Phase(name=name, peak_bytes=int(memory.peak_memory_in_bytes),
                 resident_bytes=int(resident_bytes), alias_bytes=int(memory.alias_size_in_bytes),
                 argument_bytes=int(memory.argument_size_in_bytes), flops=flops,
                 roofline_s=roofline, note=note, compile_s=time.perf_counter() - start)


def fits(phase: Phase, chip: Chip) -> bool:
    """The phase's peak plus resident bytes are within the chip's usable HBM."""
    return phase.total_bytes <= chip.usable_gib * GIB


def compile_phases(plan: Sequence[dict], *, chip: Chip, stop_at_first_miss: bool = False) -> list:
    """:func:`compile_phase` over ``plan`` (one dict of its arguments per phase, in order); with
    ``stop_at_first_miss``, the phases after one that does not fit are not compiled."""
    out = []
    for kwargs in plan:
        missed = stop_at_first_miss and any(not fits(p, chip) for p in out)
        out.append(compile_phase(**kwargs, chip=chip, try_compile=not missed))
    return out


_OOM = re.compile(r"Ran out of memory in memory space hbm|Ran out of memory on HBM|RESOURCE_EXHAUSTED")
_REQUIRED = re.compile(r"required for [^(]*\(([\d.]+)([KMGT]?)\)")


def out_of_memory_bytes(message: str) -> Optional[int]:
    """The bytes XLA:TPU says a program needs when it refuses it for HBM (``None``: another error)."""
    if not _OOM.search(message):
        return None
    found = _REQUIRED.search(message)
    if not found:
        return 0
    scale = {"": 1, "K": 1024, "M": 1024 ** 2, "G": GIB, "T": 1024 ** 4}[found.group(2)]
    return int(float(found.group(1)) * scale)


def abstract(tree, shardings):
    """``ShapeDtypeStruct`` leaves carrying ``shardings`` (a matching tree, or one sharding)."""
    if not isinstance(shardings, (dict, list, tuple)) and not dataclasses.is_dataclass(shardings):
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shardings), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def _batch_struct(example_batch: dict, mesh) -> dict:
    return abstract({k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype)
                     for k, v in example_batch.items()}, sharding.batch_sharding(mesh))


def _hosts(devices) -> int:
    return len({d.process_index for d in devices})
