"""Scalar-model export/import round trip and the errors of a checkpoint that does not fit."""

import os

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rlhf_jax.models import ScalarModel, config_from_hf, init_params
from rlhf_jax.models.build import load_scalar_model, save_scalar_model
from rlhf_jax.models.errors import CheckpointError
from rlhf_jax.models.presets import preset_config


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = ScalarModel(config_from_hf(preset_config("tiny-llama")))
    params = init_params(model, jax.random.key(1))
    path = str(tmp_path_factory.mktemp("rm"))
    save_scalar_model(model, params, path)
    return model, params, path


def test_round_trip(exported):
    model, params, path = exported
    loaded_model, loaded = load_scalar_model(path)
    assert loaded_model.config.hidden_size == model.config.hidden_size
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name,array,message", [
    ("score.weight", np.zeros((2, 64), np.float32), "'score.weight' has shape (2, 64), expected (1, 64)"),
    ("model.norm.weight", np.zeros((65,), np.float32), "'model.norm.weight' has shape"),
])
def test_misshapen_tensor_is_named(exported, tmp_path, name, array, message):
    _, _, path = exported
    tensors = load_file(os.path.join(path, "model.safetensors"))
    tensors[name] = array
    for f in ("config.json",):
        with open(os.path.join(path, f)) as src, open(tmp_path / f, "w") as dst:
            dst.write(src.read())
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_scalar_model(str(tmp_path))


def test_missing_head_is_named(exported, tmp_path):
    _, _, path = exported
    tensors = load_file(os.path.join(path, "model.safetensors"))
    del tensors["score.bias"]
    with open(os.path.join(path, "config.json")) as src:
        (tmp_path / "config.json").write_text(src.read())
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="'score.bias' is missing"):
        load_scalar_model(str(tmp_path))


def test_missing_checkpoint_directory_is_named_before_any_download(tmp_path):
    from rlhf_jax.models.build import tokenizer_for
    missing = str(tmp_path / "llama-7b")
    with pytest.raises(CheckpointError, match="llama-7b: no such file or directory"):
        tokenizer_for("", missing)
