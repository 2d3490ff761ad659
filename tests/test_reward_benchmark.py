"""The RM benchmark's FLOP count against the model's own parameter count (an independent tally)."""

import jax
import numpy as np

from rlhf_jax.benchmarks.reward_step import PRESET, model_flops_per_step
from rlhf_jax.models import ScalarModel, config_from_hf
from rlhf_jax.models.presets import preset_config


def test_flops_use_the_non_embedding_matmul_parameters():
    hf = preset_config(PRESET)
    model = ScalarModel(config_from_hf(hf))
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 4), np.int32))["params"]
    layers = shapes["model"]["layers"]
    matmul = sum(int(np.prod(x.shape)) for path, x in jax.tree_util.tree_leaves_with_path(layers)
                 if x.ndim >= 3)  # stacked [layers, ...] kernels; norms are [layers, hidden]
    seq = 128
    attention = 12 * hf["num_hidden_layers"] * hf["num_attention_heads"] * hf["head_dim"] * seq ** 2
    assert model_flops_per_step(hf, pairs=1, seq_len=seq) == 2 * (6 * matmul * seq + attention)
