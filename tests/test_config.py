"""Experiment configs: loading, typed overrides, locking, and every shipped config file."""

import glob
import os

import ml_collections
import pytest

from rlhf_jax.config import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(__file__))
CONFIG = """
import ml_collections
def get_config(arg="base"):
    return ml_collections.ConfigDict({"name": arg, "rm": {"lr": 1e-5, "epochs": 1, "bal": True,
        "buckets": (64, 128), "init": None}})
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text(CONFIG)
    return str(path)


def test_typed_overrides_and_lock(config_file):
    cfg = load_config(config_file, ["--config.rm.lr=2e-5", "--config.rm.epochs=3",
                                    "--config.rm.bal=false", "--config.rm.buckets=(32, 64)",
                                    "--config.name=x=y", "--config.rm.init=[1, 2]"])
    assert cfg.rm.lr == 2e-5 and isinstance(cfg.rm.lr, float)
    assert cfg.rm.epochs == 3 and cfg.rm.bal is False and cfg.rm.buckets == (32, 64)
    assert cfg.name == "x=y" and cfg.rm.init == [1, 2]
    with pytest.raises(AttributeError):
        cfg.rm.new_key = 1  # locked: a misspelt key is an error, not a new field


def test_integer_into_float_field_is_converted(config_file):
    assert load_config(config_file, ["--config.rm.lr=1"]).rm.lr == 1.0


def test_file_argument_selects_a_variant(config_file):
    assert load_config(config_file + ":bal").name == "bal"


@pytest.mark.parametrize("override,message", [
    ("--config.rm.lrr=1e-5", "'rm.lrr'"),
    ("--config.xx.lr=1e-5", "'xx'"),
    ("--config.rm.epochs=1.5", "'rm.epochs' is int"),
    ("--config.rm.lr=fast", "'rm.lr' is float"),
    ("--config.rm.bal=maybe", "'rm.bal' is a bool"),
    ("--config.rm.buckets=7", "'rm.buckets' is a sequence"),
    ("--config.rm.lr", "expected --config.KEY=VALUE"),
])
def test_bad_override_names_the_key(config_file, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(config_file, [override])


def test_missing_file_and_missing_get_config(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(str(tmp_path / "nope.py"))
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="defines no get_config"):
        load_config(str(bad))


def _shipped_configs():
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)):
        variants = [""]
        text = open(path).read()
        if "VARIANTS" in text:
            namespace = {}
            exec(compile(text, path, "exec"), namespace)
            variants += [":" + v for v in namespace["VARIANTS"]]
        for v in variants:
            yield os.path.relpath(path, ROOT) + v


@pytest.mark.parametrize("name", list(_shipped_configs()))
def test_every_shipped_config_loads_and_documents_itself(name):
    cfg = load_config(os.path.join(ROOT, name))
    assert isinstance(cfg, ml_collections.ConfigDict)
    path = os.path.join(ROOT, name.split(":")[0])
    doc = open(path).read().split('"""')[1]
    assert "rlhf-jax " in doc and "Sized for" in doc, f"{path}: docstring lacks command/hardware"


def test_free_form_sections_accept_new_keys_and_dicts(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text("import ml_collections\ndef get_config():\n    return ml_collections.ConfigDict("
                    "{'model': {'overrides': {}}, 'data': {'options': {'ties': 'second'}}})\n")
    cfg = load_config(str(path), ["--config.model.overrides.vocab_size=512",
                                  "--config.data.options.ties=drop",
                                  "--config.data.options={'empty': 'drop'}"])
    assert cfg.model.overrides.vocab_size == 512
    assert dict(cfg.data.options) == {"empty": "drop"}
    with pytest.raises(ConfigError, match="is a section"):
        load_config(str(path), ["--config.data.options=3"])
