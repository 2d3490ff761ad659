"""ODIN (Chen et al. 2024 §4): its loss terms against NumPy, and the two-head model and export.

The correlation, length and orthogonality terms and the whole objective are checked against a
float64 NumPy transcription of the paper's formulas (``np.corrcoef`` on the kept rows), on
batches where filler rows, a negative quality–length correlation and unnormalised head weights
would each change the answer of a wrong convention. The gradient is checked against central
differences of the NumPy objective. The two-head export loads in transformers as a
``num_labels=2`` sequence classifier whose two logits are our quality and length heads.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.models import ScalarModel, config_from_hf
from rlhf_jax.models.build import init_some_params, load_scalar_model, save_scalar_model
from rlhf_jax.models.errors import CheckpointError
from rlhf_jax.models.presets import preset_config
from rlhf_jax.reward.losses import (odin_length_loss, odin_loss, orthogonality_loss,
                                    pearson_correlation)


def np_corr(x, y, w):
    keep = w > 0
    return np.corrcoef(x[keep].astype(np.float64), y[keep].astype(np.float64))[0, 1]


def np_odin(hc, hr, lc, lr, wq, wl, w, lam_l, lam_o, margin=0.0):
    """The paper's objective in float64: BT on the summed heads + λ_L·L_L + λ_O·L_O."""
    keep = w > 0
    diff = hc.sum(-1) - hr.sum(-1)
    ranking = np.mean(np.logaddexp(0.0, -(diff - margin))[keep])
    heads = np.concatenate([hc, hr])
    lengths = np.concatenate([lc, lr]).astype(np.float64)
    w2 = np.concatenate([w, w])
    length_term = abs(np_corr(heads[:, 0], lengths, w2)) - np_corr(heads[:, 1], lengths, w2)
    ortho = abs(wq @ wl) / (np.linalg.norm(wq) * np.linalg.norm(wl))
    return ranking + lam_l * length_term + lam_o * ortho


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    b = 12
    lc = rng.integers(5, 60, b).astype(np.float32)
    lr = rng.integers(5, 60, b).astype(np.float32)
    # the quality head anti-correlates with length (|ρ| must flip its sign), the length head
    # correlates with it; the last two rows are filler and would move every correlation
    hc = np.stack([-0.05 * lc + rng.normal(0, 0.5, b), 0.03 * lc + rng.normal(0, 0.3, b)], -1)
    hr = np.stack([-0.05 * lr + rng.normal(0, 0.5, b), 0.03 * lr + rng.normal(0, 0.3, b)], -1)
    w = np.ones(b, np.float32)
    w[-2:] = 0.0
    hc[-2:] = 50.0
    wq = rng.normal(0, 3.0, 16)
    wl = 0.4 * wq + rng.normal(0, 0.2, 16)   # far from orthogonal, and of different norms
    return {k: np.asarray(v, np.float32) for k, v in
            dict(hc=hc, hr=hr, lc=lc, lr=lr, w=w, wq=wq, wl=wl).items()}


def test_pearson_matches_numpy_on_kept_rows(batch):
    x, y, w = batch["hc"][:, 0], batch["lc"], batch["w"]
    ours = float(pearson_correlation(jnp.asarray(x), jnp.asarray(y), jnp.asarray(w)))
    np.testing.assert_allclose(ours, np_corr(x, y, w), atol=1e-5)
    assert abs(np_corr(x, y, w) - np.corrcoef(x, y)[0, 1]) > 0.05  # filler rows would matter
    flat = float(pearson_correlation(jnp.zeros(5), jnp.arange(5.0)))
    assert flat == 0.0 and np.isfinite(
        np.asarray(jax.grad(lambda v: pearson_correlation(v, jnp.arange(5.0)))(jnp.zeros(5)))).all()


def test_length_and_orthogonality_terms_match_numpy(batch):
    heads = np.concatenate([batch["hc"], batch["hr"]])
    lengths = np.concatenate([batch["lc"], batch["lr"]])
    w2 = np.concatenate([batch["w"], batch["w"]])
    ours = float(odin_length_loss(jnp.asarray(heads[:, 0]), jnp.asarray(heads[:, 1]),
                                  jnp.asarray(lengths), jnp.asarray(w2)))
    rho_q, rho_l = np_corr(heads[:, 0], lengths, w2), np_corr(heads[:, 1], lengths, w2)
    assert rho_q < -0.3 and rho_l > 0.3          # the absolute value is exercised
    np.testing.assert_allclose(ours, abs(rho_q) - rho_l, atol=1e-5)
    wq, wl = batch["wq"].astype(np.float64), batch["wl"].astype(np.float64)
    cosine = abs(wq @ wl) / (np.linalg.norm(wq) * np.linalg.norm(wl))
    np.testing.assert_allclose(float(orthogonality_loss(jnp.asarray(wq), jnp.asarray(wl))),
                               cosine, rtol=1e-5)
    # scale-free: shrinking a head does not meet the term
    np.testing.assert_allclose(float(orthogonality_loss(jnp.asarray(wq), jnp.asarray(1e-3 * wl))),
                               cosine, rtol=1e-4)
    orth = wl - (wl @ wq) / (wq @ wq) * wq
    assert float(orthogonality_loss(jnp.asarray(wq), jnp.asarray(orth))) < 1e-5


@pytest.mark.parametrize("lam_l,lam_o,margin", [(1.0, 1.0, 0.0), (0.5, 2.0, 0.3)])
def test_objective_and_gradient_match_numpy(batch, lam_l, lam_o, margin):
    args = [jnp.asarray(batch[k]) for k in ("hc", "hr", "lc", "lr", "wq", "wl", "w")]

    def ours(hc, hr, wq, wl):
        return odin_loss(hc, hr, args[2], args[3], wq, wl, args[6], length_coef=lam_l,
                         ortho_coef=lam_o, margin=margin)[0]

    def reference(hc, hr, wq, wl):
        return np_odin(hc, hr, batch["lc"], batch["lr"], wq, wl, batch["w"], lam_l, lam_o, margin)

    inputs = [batch[k].astype(np.float64) for k in ("hc", "hr", "wq", "wl")]
    np.testing.assert_allclose(float(ours(args[0], args[1], args[4], args[5])),
                               reference(*inputs), rtol=1e-5)
    grads = jax.grad(ours, argnums=(0, 1, 2, 3))(args[0], args[1], args[4], args[5])
    eps = 1e-5
    for i, grad in enumerate(grads):
        numeric = np.zeros_like(inputs[i])
        for idx in np.ndindex(inputs[i].shape):
            up = [x.copy() for x in inputs]
            down = [x.copy() for x in inputs]
            up[i][idx] += eps
            down[i][idx] -= eps
            numeric[idx] = (reference(*up) - reference(*down)) / (2 * eps)
        np.testing.assert_allclose(np.asarray(grad), numeric, atol=2e-4, rtol=2e-3)
    assert np.all(np.asarray(grads[0])[-2:] == 0.0)   # filler rows get no gradient


@pytest.fixture(scope="module")
def odin_export(tmp_path_factory):
    cfg = config_from_hf(preset_config("tiny-llama"))
    model = ScalarModel(cfg, length_head=True, heads="both")
    params = init_some_params(model, jax.random.key(3), lambda path: True)
    path = str(tmp_path_factory.mktemp("odin"))
    save_scalar_model(model, params, path)
    ids = np.asarray(jax.random.randint(jax.random.key(4), (3, 10), 3, cfg.vocab_size))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    both = np.asarray(model.apply({"params": params}, ids, attention_mask=mask).values)
    return path, params, ids, mask, both


def test_two_head_model_reads_sum_quality_and_length(odin_export):
    path, params, ids, mask, both = odin_export
    assert both.shape == (3, 2)
    for heads, expected in (("sum", both.sum(-1)), ("quality", both[:, 0]),
                            ("length", both[:, 1])):
        model, loaded = load_scalar_model(path, heads=heads)
        values = np.asarray(model.apply({"params": loaded}, ids, attention_mask=mask).values)
        np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
        assert ("length_score" in loaded) == (heads != "quality")  # quality: a plain RM
    config = json.load(open(os.path.join(path, "config.json")))
    assert config["num_labels"] == 2 and config["id2label"] == {"0": "quality", "1": "length"}


def test_one_head_export_refuses_a_head(tmp_path):
    cfg = config_from_hf(preset_config("tiny-llama"))
    model = ScalarModel(cfg)
    save_scalar_model(model, init_some_params(model, jax.random.key(0), lambda p: True),
                      str(tmp_path))
    with pytest.raises(CheckpointError, match="one-head reward model; head 'quality'"):
        load_scalar_model(str(tmp_path), heads="quality")


def test_two_head_export_matches_transformers(odin_export):
    torch = pytest.importorskip("torch", reason="the transformers reference needs CPU torch")
    import transformers
    path, params, ids, mask, both = odin_export
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        path, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    bias = np.asarray([float(params["score"]["bias"]), float(params["length_score"]["bias"])])
    full = [0, 2]  # transformers finds a row's last token by pad id; row 1 is padded by mask only
    np.testing.assert_allclose((both - bias)[full], logits[full], atol=1e-4)  # its score: no bias


def test_ppo_reward_head_choices_are_checked(odin_export, tmp_path):
    import ml_collections

    from rlhf_jax.config import ConfigError
    from rlhf_jax.ppo.rewards import reward_model_of
    path, params, ids, mask, both = odin_export

    def reward(model, head, calibration="none"):
        return ml_collections.ConfigDict({"model": model, "head": head, "calibration": calibration,
                                          "dtype": "float32", "param_dtype": "float32"})

    model, loaded = reward_model_of(reward(path, "quality"))
    values = np.asarray(model.apply({"params": loaded}, ids, attention_mask=mask).values)
    np.testing.assert_allclose(values, both[:, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="'reward.head' = 'style'"):
        reward_model_of(reward(path, "style"))
    with pytest.raises(ConfigError, match="fitted on the summed reward"):
        reward_model_of(reward(path, "quality", calibration="lowess"))
    plain = ScalarModel(config_from_hf(preset_config("tiny-llama")))
    save_scalar_model(plain, init_some_params(plain, jax.random.key(0), lambda p: True),
                      str(tmp_path))
    with pytest.raises(ConfigError, match="'reward.head' = 'quality'.*one-head reward model"):
        reward_model_of(reward(str(tmp_path), "quality"))
