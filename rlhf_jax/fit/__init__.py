"""Will a stage fit a TPU slice? Ahead-of-time compilation for a topology, from a CPU box.

``rlhf-jax fit --config FILE[:VARIANT] --topology v5e-8`` builds every compiled function of
the config's stage *abstractly* (parameter and batch shapes only: no weights, no data, no
tokenizer), compiles each for the topology's chips (libtpu's ``get_topology_desc``; no TPU
needed), and prints one table:

- **peak GiB/chip**: XLA's ``peak_memory_in_bytes`` of the compiled phase (arguments, outputs
  and temporaries as the buffer assignment overlaps them), plus what stays resident across
  phases without being an argument of this one (for PPO: the reference and the reward model
  while the update runs, the optimizer state while sampling);
- **donated GiB/chip**: the bytes XLA aliases from inputs to outputs (a donated train state
  shows here; 0 means it is copied);
- **FLOPs/step**, counted by hand (:func:`decoder_forward_flops`): ``cost_analysis()`` counts
  a loop body once, so a scanned or accumulated step reads 100× too low;
- **roofline s/step**: ``FLOPs / (chips × peak bf16 FLOP/s)``, or, for a decode loop, the larger
  of that and ``bytes read / (chips × HBM bandwidth)``, from :data:`CHIPS`.

The verdict compares each phase's peak with the chip's usable HBM; the command exits 1 when
a phase does not fit. A phase whose arguments plus resident bytes already exceed usable HBM
is not compiled (a program's peak holds its arguments): its row gives that floor, "≥ X", and
``--stop-at-first-miss`` treats every phase after the first that does not fit the same way.
Batch sizes are per process, as the stages read them: a slice with ``h`` hosts trains on
``h ×`` the configured batch.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from rlhf_jax import sharding
from rlhf_jax.config import ConfigError
from rlhf_jax.fit.chips import CHIPS, GIB, SLICES, Chip, topology_devices
from rlhf_jax.fit.counting import (decoder_forward_flops, matmul_params, shard_bytes,
                                   train_flops)
from rlhf_jax.fit.phases import (Phase, _hosts, abstract, compile_phase, compile_phases, fits,
                                 out_of_memory_bytes)
from rlhf_jax.fit.stages import fit_dpo, fit_ppo, fit_reward_model, fit_sft

STAGES = {"sft": fit_sft, "rm": fit_reward_model, "ppo": fit_ppo, "dpo": fit_dpo}
"""The stage fitters by config section; a study config (several sections) fits each."""


def stages_of(config) -> list:
    """``[(section name, stage config)]``: the stage of a stage config (``model`` beside one of
    :data:`STAGES`' sections), or each stage of a study config (``sft``, ``rm``, ``ppo``)."""
    if "model" in config:
        names = [key for key in STAGES if key in config]
        if len(names) != 1:
            raise ConfigError(f"a stage config needs exactly one of the sections {sorted(STAGES)} "
                              f"beside 'model'; this one has {names}")
        return [(names[0], config)]
    found = [(key, config[key]) for key in STAGES if key in config and "model" in config[key]]
    if not found:
        raise ConfigError(f"the config has no stage to fit: expected a stage config ('model' and "
                          f"one of {sorted(STAGES)}) or a study config holding such stages")
    return found


# ----------------------------------------------------------------------------- report

@dataclasses.dataclass
class Report:
    slice_name: str
    topology: str
    chip: Chip
    num_chips: int
    hosts: int
    stage: str
    mesh: dict
    phases: list

    @property
    def fits(self) -> bool:
        return all(fits(p, self.chip) for p in self.phases)

    @property
    def exact(self) -> bool:
        """Every phase compiled: :attr:`peak_gib` is XLA's, not a floor."""
        return all(p.compiled for p in self.phases)

    @property
    def peak_gib(self) -> float:
        return max(p.total_bytes for p in self.phases) / GIB

    def table(self) -> str:
        head = (f"{self.stage} on {self.slice_name} ({self.topology}: {self.num_chips} × TPU "
                f"{self.chip.name}, {self.hosts} host(s), usable HBM {self.chip.usable_gib:.2f} "
                f"GiB/chip), mesh data={self.mesh['data']} fsdp={self.mesh['fsdp']} "
                f"tensor={self.mesh['tensor']}")
        rows = ["| phase | peak GiB/chip | of which resident | donated GiB/chip | FLOPs/step | "
                "roofline s/step | fits | compile s | shapes |", "|" + "---|" * 9]
        for p in self.phases:
            ok = fits(p, self.chip)
            peak = _gib(p.total_bytes) if p.compiled else f"≥ {_gib(p.total_bytes)}"
            rows.append(f"| {p.name} | {peak} | {_gib(p.resident_bytes)} | "
                        f"{_gib(p.alias_bytes)} | {p.flops:.3g} | {p.roofline_s:.3g} | "
                        f"{'yes' if ok else 'NO'} | {p.compile_s:.0f} | {p.note} |")
        headroom = self.chip.usable_gib - self.peak_gib
        verdict = (f"verdict: fits, {headroom:.2f} GiB/chip headroom" if self.fits else
                   f"verdict: does NOT fit, {'at least ' if not self.exact else ''}"
                   f"{-headroom:.2f} GiB/chip over")
        return "\n".join([head, *rows, verdict])


def _gib(n: int) -> str:
    """GiB with 2 decimals, or 3 significant digits below 0.1 GiB (tiny models stay legible)."""
    x = n / GIB
    return f"{x:.2f}" if x >= 0.1 or x == 0 else f"{x:.3g}"


def fit(config, slice_name: str, *, mesh: Optional[Sequence[int]] = None,
        stop_at_first_miss: bool = False) -> list:
    """One :class:`Report` per stage of ``config`` on the slice (``mesh``: data, fsdp, tensor
    sizes replacing each stage's ``mesh`` section). ``stop_at_first_miss``: once a phase does
    not fit, the stage's later phases are not compiled (their rows give only the floor of
    arguments + resident, printed "≥"); a phase whose floor alone exceeds HBM is never
    compiled."""
    devices, chip, topology = topology_devices(slice_name)
    reports = []
    for name, stage in stages_of(config):
        stage = stage.copy_and_resolve_references()
        if mesh is not None:
            with stage.unlocked():
                stage.mesh.data, stage.mesh.fsdp, stage.mesh.tensor = (int(m) for m in mesh)
        shape = sharding.resolve_mesh_shape(**dict(stage.mesh), num_devices=len(devices))
        phases = STAGES[name](stage, devices, chip, stop_at_first_miss=stop_at_first_miss)
        reports.append(Report(slice_name=slice_name, topology=topology, chip=chip,
                              num_chips=len(devices), hosts=_hosts(devices), stage=name,
                              mesh=dict(zip(sharding.MESH_AXES, shape)), phases=phases))
    return reports


__all__ = ["CHIPS", "SLICES", "Chip", "Phase", "Report", "STAGES", "abstract", "compile_phase",
           "compile_phases", "decoder_forward_flops", "fit", "fits", "matmul_params",
           "out_of_memory_bytes", "shard_bytes", "stages_of", "topology_devices", "train_flops"]
