"""`rlhf-jax fit`: stages compiled ahead of time for a TPU topology, on this CPU machine.

Needs libtpu (`pip install "jax[tpu]==<jax version>"`, which `.ci/run` installs); without it
the tests skip, saying so. The memory figures are XLA's; the tests check them against
quantities computed here from the shapes (the train state's bytes per chip), and the
hand-counted FLOPs against the textbook 6·N·tokens.
"""

import importlib.util
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from rlhf_jax import fit
from rlhf_jax.config import load_config

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                reason="libtpu is not installed (pip install \"jax[tpu]==<jax>\")")

GIB = 1024 ** 3


def tiny_rm_config():
    config = load_config("configs/synthetic/rm.py")
    with config.unlocked():
        config.model.init = "preset:tiny-llama"
        config.model.overrides = {}
        config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, -1, 1
    return config


@pytest.fixture(scope="module")
def tiny_rm_report():
    (report,) = fit.fit(tiny_rm_config(), "v5e-8")
    return report


def test_slices_resolve_to_their_chip_counts():
    devices, chip, topology = fit.topology_devices("v5e-8")
    assert (len(devices), chip.name, topology) == (8, "v5e", "v5e:2x4")
    assert len({d.process_index for d in devices}) == 1  # one 8-chip host
    devices, chip, _ = fit.topology_devices("v4-8")
    assert (len(devices), chip.name) == (4, "v4")


def test_rm_step_memory_is_xlas_and_counts_the_sharded_state(tiny_rm_report):
    from rlhf_jax.models import ScalarModel
    from rlhf_jax.models.build import abstract_params, model_config
    report = tiny_rm_report
    assert [p.name for p in report.phases] == ["rm step", "rm eval"]
    assert report.mesh == {"data": 1, "fsdp": 8, "tensor": 1}
    step, evaluation = report.phases
    config = tiny_rm_config()
    params = abstract_params(ScalarModel(model_config(config.model)))
    param_bytes = sum(np.prod(x.shape) * 4 for x in jax.tree.leaves(params))
    # the state (params + Adam's two moments) is sharded over 8 chips: at least 3/8 of it
    # per chip, and XLA's peak holds at least the arguments
    assert step.argument_bytes >= 3 * param_bytes / 8
    assert step.peak_bytes >= step.argument_bytes
    assert step.alias_bytes > 0  # the donated state is reused for the new one
    assert evaluation.resident_bytes > 0 and evaluation.alias_bytes == 0
    assert report.fits and "verdict: fits" in report.table()


def test_hand_counted_flops_match_six_n_tokens():
    from rlhf_jax.models.build import model_config
    import ml_collections as mlc
    spec = mlc.ConfigDict({"init": "preset:llama-2-7b", "overrides": {}, "dtype": "bfloat16",
                           "param_dtype": "float32", "remat": "none"})
    cfg = model_config(spec)
    n = fit.matmul_params(cfg, lm_head=True)
    embed = cfg.vocab_size * cfg.hidden_size
    assert n + embed == pytest.approx(6.738e9, rel=1e-3)  # Llama-2-7B: 6,738,415,616 params (less norms)
    tokens, context = 1024, 1
    assert fit.train_flops(cfg, tokens, context) == pytest.approx(6 * n * tokens, rel=1e-3)


def test_cli_exits_one_when_the_stage_does_not_fit(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}  # the CLI sets it
    base = [sys.executable, "-m", "rlhf_jax.cli", "fit", "--config", "configs/synthetic/rm.py",
            "--topology", "v5e-8", "--config.model.init=preset:tiny-llama"]
    ok = subprocess.run(base, capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "rm step" in ok.stdout and "verdict: fits" in ok.stdout
    # a batch too large for 16 GiB chips: 4096 pairs × 96 tokens of a 4096-wide model
    big = subprocess.run(base + ["--config.rm.batch_size=4096",
                                 "--config.model.overrides={'hidden_size': 4096, 'intermediate_size': 16384, 'num_attention_heads': 32, 'num_key_value_heads': 32, 'head_dim': 128}"],
                         capture_output=True, text=True, env=env)
    assert big.returncode == 1, big.stderr[-2000:]
    assert "does NOT fit" in big.stdout
    bad = subprocess.run(base[:-3] + ["--topology", "v9z-8"], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "v9z" in bad.stderr and "Traceback" not in bad.stderr


def test_ppo_phases_compile_for_tpu_even_with_cpu_kernels_forced():
    """The suite forces RLHF_JAX_CPU_KERNELS=1: a sampler compiled for TPU devices must still
    use XLA's matmul (the CPU FFI kernel has no TPU emitter: 'Custom emitter ... not found')."""
    assert os.environ.get("RLHF_JAX_CPU_KERNELS") == "1"
    config = load_config("configs/synthetic/ppo.py", ["--config.model.init=preset:tiny-llama",
                                                      "--config.reward.model=preset:tiny-llama"])
    (report,) = fit.fit(config, "v5e-8")
    names = [p.name for p in report.phases]
    assert names == ["sampler", "reference forward", "policy + values forward", "reward scoring",
                     "update"]
    phases = dict(zip(names, report.phases))
    assert phases["update"].alias_bytes > 0          # the PPO state is donated
    assert phases["sampler"].alias_bytes == 0
    # while sampling, the optimizer state, the reference and the reward model stay resident
    assert phases["sampler"].resident_bytes > phases["reward scoring"].resident_bytes / 4
    assert all(p.flops > 0 and p.peak_bytes > 0 for p in report.phases)
    assert report.fits


def test_decoding_kernels_follow_the_params_devices():
    from rlhf_jax.generate import decoding_kernels
    from rlhf_jax.models import CausalLM
    from rlhf_jax.models.build import abstract_params, model_config
    from rlhf_jax.kernels import panel_matmul
    import ml_collections as mlc
    spec = mlc.ConfigDict({"init": "preset:tiny-llama", "overrides": {}, "dtype": "float32",
                           "param_dtype": "float32", "remat": "none"})
    model = CausalLM(model_config(spec))
    shapes = abstract_params(model)
    devices, _, _ = fit.topology_devices("v5e-8")
    from rlhf_jax import sharding
    mesh = sharding.make_mesh(data=1, fsdp=-1, devices=devices)
    on_tpu = fit.abstract(shapes, sharding.param_shardings(model, mesh))
    assert decoding_kernels(model, on_tpu) == "xla"
    on_cpu = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    expected = "cpu_panels" if panel_matmul.available() else "xla"
    assert decoding_kernels(model, on_cpu) == expected   # one CPU device, float32, forced on


def tiny_ppo_config(lora_rank: int):
    config = load_config("configs/synthetic/ppo.py:standard", [
        "--config.model.init=preset:tiny-llama", "--config.reward.kind=length_only",
        "--config.reward.model=", f"--config.model.lora_rank={lora_rank}"])
    return config


def test_ppo_with_lora_keeps_no_reference_copy_and_donates_the_state():
    """LoRA's reference is the state's base (nothing extra resident), its optimizer state
    covers the adapters alone (a smaller state than full fine-tuning), and the update's state
    is donated (aliased)."""
    (full,) = fit.fit(tiny_ppo_config(0), "v5e-8")
    (lora,) = fit.fit(tiny_ppo_config(4), "v5e-8")
    phases = {r: {p.name: p for p in report.phases} for r, report in (("full", full), ("lora", lora))}
    assert phases["lora"]["update"].alias_bytes > 0 and phases["full"]["update"].alias_bytes > 0
    assert phases["lora"]["update"].argument_bytes < phases["full"]["update"].argument_bytes
    # full fine-tuning keeps a reference copy resident while the sampler runs; LoRA does not
    assert phases["lora"]["sampler"].resident_bytes < phases["full"]["sampler"].resident_bytes
    assert lora.fits and full.fits


def tiny_dpo_config(lora_rank: int, loss: str = "dpo"):
    config = load_config(f"configs/synthetic/dpo.py:{loss}")
    with config.unlocked():
        config.model.init = "preset:tiny-llama"
        config.model.lora_rank = lora_rank
        config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, -1, 1
    return config


def test_dpo_phases_follow_where_the_reference_comes_from():
    """Full fine-tuning: a frozen copy (its own forward, resident beside the train state);
    LoRA: the base inside the step (no copy, a second forward counted in the step's FLOPs);
    SimPO: no reference at all."""
    reports = {name: fit.fit(tiny_dpo_config(rank, loss), "v5e-8")[0]
               for name, rank, loss in (("copy", 0, "dpo"), ("base", 4, "dpo"),
                                        ("none", 0, "simpo"))}
    names = {k: [p.name for p in r.phases] for k, r in reports.items()}
    assert names == {"copy": ["dpo step", "dpo reference", "dpo eval"],
                     "base": ["dpo step", "dpo eval"], "none": ["dpo step", "dpo eval"]}
    copy = {p.name: p for p in reports["copy"].phases}
    # the step keeps the frozen copy resident (no more than the reference forward's arguments:
    # the copy and a batch); the reference forward keeps the train state (params + 2 moments)
    assert 0 < copy["dpo step"].resident_bytes <= copy["dpo reference"].argument_bytes
    assert copy["dpo reference"].resident_bytes > 2 * copy["dpo step"].resident_bytes
    assert reports["none"].phases[0].resident_bytes == reports["base"].phases[0].resident_bytes == 0
    # FLOPs, as relations between phases counted separately: the step is 3 passes (forward,
    # two backward products) over both sides of each pair, the reference forward 1; LoRA drops
    # the base's weight-gradient pass and adds the base's reference forward (3 again); SimPO
    # has no reference; the eval is the reference forward at the eval batch (×2 with LoRA)
    flops = {k: {p.name: p.flops for p in r.phases} for k, r in reports.items()}
    config = tiny_dpo_config(0)
    per_pair = copy["dpo reference"].flops / config.dpo.batch_size
    assert flops["copy"]["dpo step"] == pytest.approx(3 * copy["dpo reference"].flops)
    assert flops["base"]["dpo step"] == pytest.approx(flops["copy"]["dpo step"])
    assert flops["none"]["dpo step"] == pytest.approx(flops["copy"]["dpo step"])
    assert flops["copy"]["dpo eval"] == pytest.approx(per_pair * config.dpo.eval_batch_size)
    assert flops["base"]["dpo eval"] == pytest.approx(2 * flops["copy"]["dpo eval"])
    assert all(r.fits for r in reports.values())


def test_odin_reward_model_compiles_with_its_second_head(tiny_rm_report):
    """ODIN (``rm.loss = odin``): the same phases, and a train state larger by the length head
    alone: its kernel and bias, with Adam's two moments, six small buffers that the TPU
    layout pads to at most 1 KiB each."""
    config = tiny_rm_config()
    with config.unlocked():
        config.rm.loss = "odin"
    (odin,) = fit.fit(config, "v5e-8")
    assert [p.name for p in odin.phases] == ["rm step", "rm eval"] and odin.fits
    extra = odin.phases[0].argument_bytes - tiny_rm_report.phases[0].argument_bytes
    assert 0 < extra <= 6 * 1024


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo"])
def test_group_estimator_ppo_compiles(estimator):
    """GRPO / Dr. GRPO: PPO's phases at the same shapes (groups are consecutive rows of the same
    batch), the update without its value loss."""
    config = tiny_ppo_config(0)
    with config.unlocked():
        config.ppo.advantage_estimator = estimator
        config.ppo.group_size = 4
    (report,) = fit.fit(config, "v5e-8")
    (gae,) = fit.fit(tiny_ppo_config(0), "v5e-8")
    assert [p.name for p in report.phases] == [p.name for p in gae.phases]
    assert report.fits
