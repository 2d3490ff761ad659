"""``rlhf_jax.console``: the command narrows JAX to the CPU only where JAX would have ended up
there after a failed TPU initialisation, and never where a TPU chip or another plugin exists
or the user chose."""

import importlib.util

import pytest

from rlhf_jax import console


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A fake PCI tree (empty: no TPU chip) and libtpu installed, no other plugin."""
    real = importlib.util.find_spec
    monkeypatch.setattr(console.importlib.util, "find_spec",
                        lambda name: object() if name == "libtpu" else
                        (None if name == "jax_plugins" else real(name)))
    monkeypatch.setattr(console, "other_pjrt_plugins", lambda: [])
    return tmp_path


def add_pci_device(root, name, vendor):
    (root / name).mkdir()
    (root / name / "vendor").write_text(vendor + "\n")


def test_libtpu_without_a_chip_runs_on_the_cpu(host):
    add_pci_device(host, "0000:00:04.0", "0x8086")  # an Intel device is not a TPU
    env = {}
    assert console.platforms_for_this_host(env, pci_root=str(host))
    assert env == {"JAX_PLATFORMS": "cpu"}


def test_a_tpu_chip_leaves_the_choice_to_jax(host):
    add_pci_device(host, "0000:00:05.0", console.GOOGLE_PCI_VENDOR)
    assert console.tpu_chips_attached(str(host)) == 1
    env = {}
    assert not console.platforms_for_this_host(env, pci_root=str(host)) and env == {}


@pytest.mark.parametrize("env", [{"JAX_PLATFORMS": "tpu"}, {"JAX_PLATFORMS": ""},
                                 {"JAX_FORCE_TPU_INIT": "1"}])
def test_what_the_user_set_wins(host, env):
    before = dict(env)
    assert not console.platforms_for_this_host(env, pci_root=str(host)) and env == before


def test_another_plugin_leaves_the_choice_to_jax(host, monkeypatch):
    monkeypatch.setattr(console, "other_pjrt_plugins", lambda: ["xla_cuda12"])
    env = {}
    assert not console.platforms_for_this_host(env, pci_root=str(host)) and env == {}


def test_without_libtpu_nothing_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(console.importlib.util, "find_spec", lambda name: None)
    env = {}
    assert not console.platforms_for_this_host(env, pci_root=str(tmp_path)) and env == {}


def test_quiet_start_up_keeps_a_users_transformers_setting(host):
    env = {"TRANSFORMERS_NO_ADVISORY_WARNINGS": "0"}
    console.quiet_start_up(env)
    assert env["TRANSFORMERS_NO_ADVISORY_WARNINGS"] == "0"


def test_fit_gets_libtpu_placeholders_only_without_a_chip(tmp_path):
    env = {"TPU_ACCELERATOR_TYPE": "v4-8"}
    assert console.quiet_compile_only_tpu(env, pci_root=str(tmp_path))
    assert env == {"TPU_ACCELERATOR_TYPE": "v4-8", "TPU_WORKER_HOSTNAMES": "localhost"}
    add_pci_device(tmp_path, "0000:00:05.0", console.GOOGLE_PCI_VENDOR)
    env = {}
    assert not console.quiet_compile_only_tpu(env, pci_root=str(tmp_path)) and env == {}
