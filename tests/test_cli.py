"""``rlhf-jax generate`` end to end on a tiny random model with a word-level tokenizer."""

import os
import shutil
import subprocess

import jax
import numpy as np
import pytest

from rlhf_jax import cli
from rlhf_jax.models import CausalLM, config_from_hf, init_params, save_pretrained
from rlhf_jax.models.presets import preset_config

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran"]


def word_tokenizer():
    """A transformers fast tokenizer over a tiny word vocabulary (ids 0–3 are specials)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tiny"))
    model = CausalLM(config_from_hf(preset_config("tiny-llama")))
    save_pretrained(model, init_params(model, jax.random.key(0)), path, tokenizer=word_tokenizer())
    return path


def test_generate_prints_a_completion_per_prompt(tiny_dir, capsys):
    assert cli.main(["generate", "--model", tiny_dir, "--prompt", "the cat sat", "--prompt",
                     "a dog", "--max-new-tokens", "6", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("### completion") == 2
    assert "the cat sat" in out and "a dog" in out


def test_prompts_are_left_padded_to_a_bucket():
    ids, mask = cli.encode_prompts(word_tokenizer(), ["the cat", "a dog ran on the mat"],
                                   chat=False, pad_id=0, bucket=16)
    assert ids.shape == (2, 16)
    assert mask[0].tolist() == [0] * 14 + [1] * 2
    np.testing.assert_array_equal(ids[1, -6:], [9, 10, 11, 7, 4, 8])


def test_missing_model_is_a_clear_error(tmp_path):
    # Bad input ends the command with the error's message, without a traceback.
    with pytest.raises(SystemExit, match=r"rlhf-jax generate: .*nope: no such file"):
        cli.main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "x"])


def test_unknown_config_key_ends_the_command(tmp_path):
    config = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "synthetic", "rm.py")
    with pytest.raises(SystemExit, match="unknown config key 'rm.lrr'"):
        cli.main(["train-rm", "--config", config, "--workdir", str(tmp_path), "--config.rm.lrr=1"])


def test_console_script_is_installed():
    script = shutil.which("rlhf-jax")
    assert script, "the rlhf-jax console script is not on PATH (pip install -e .)"
    out = subprocess.run([script, "generate", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--max-new-tokens" in out
