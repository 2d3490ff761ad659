"""``fit`` skips compiles whose verdict is already certain, and says so (no libtpu needed:
the phases here compile for this host's CPU)."""

import jax
import jax.numpy as jnp
import pytest

from rlhf_jax import sharding
from rlhf_jax.fit import GIB, Chip, compile_phases
from rlhf_jax.fit.phases import compile_phase

# 1 MiB usable: a [256, 256] float32 argument (256 KiB) fits, 2 MiB of resident state does not
TINY = Chip("tiny", hbm_gib=1 / 1024, usable_gib=1 / 1024, bf16_flops=1e12, hbm_bytes_per_s=1e9)


class NeverLowered:
    def lower(self, *args):
        raise AssertionError("a phase whose floor exceeds HBM was compiled")


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])


def small_phase(mesh, name="double", resident=0):
    x = jax.ShapeDtypeStruct((256, 256), jnp.float32, sharding=sharding.replicated(mesh))
    return dict(name=name, fn=jax.jit(lambda a: a * 2), args=(x,), mesh=mesh, num_chips=1,
                flops=256 * 256, resident_bytes=resident)


def test_a_phase_over_hbm_from_its_arguments_and_resident_state_is_not_compiled(mesh):
    x = jax.ShapeDtypeStruct((256, 256), jnp.float32, sharding=sharding.replicated(mesh))
    phase = compile_phase("huge", NeverLowered(), (x,), mesh=mesh, flops=1.0, chip=TINY,
                          num_chips=1, resident_bytes=2 * 1024 ** 2)
    assert not phase.compiled and phase.compile_s == 0.0
    assert phase.total_bytes == 256 * 256 * 4 + 2 * 1024 ** 2  # the floor: arguments + resident
    assert phase.total_bytes > TINY.usable_gib * GIB
    assert "not compiled: its arguments (0.00 GiB) and what stays resident" in phase.note


def test_stop_at_first_miss_skips_later_phases_and_only_then(mesh):
    plan = [small_phase(mesh, "over", resident=2 * 1024 ** 2), small_phase(mesh, "after")]
    kept_going = compile_phases(plan, chip=TINY)
    assert [p.compiled for p in kept_going] == [False, True]
    assert kept_going[1].peak_bytes >= 256 * 256 * 4  # XLA's peak holds the argument
    stopped = compile_phases(plan, chip=TINY, stop_at_first_miss=True)
    assert [p.compiled for p in stopped] == [False, False]
    assert stopped[1].note.endswith("not compiled: an earlier phase does not fit")
    assert stopped[1].total_bytes == 256 * 256 * 4
    # a fitting first phase lets the rest compile
    assert all(p.compiled for p in compile_phases([small_phase(mesh), small_phase(mesh, "b")],
                                                  chip=TINY, stop_at_first_miss=True))
