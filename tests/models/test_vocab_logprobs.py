"""The chunked LM-head log-probabilities and entropies against torch autograd.

Reference: ``torch.log_softmax(h @ W)`` at the tokens, ``-(p · log p).sum()``, and their
gradients by ``torch.autograd`` for a loss that weights both outputs, so the hand-written VJP's
entropy term is exercised too. Tied (``[vocab, embed]``) and untied (``[embed, vocab]``)
heads; chunk sizes that do and do not divide the sequence (the padded tail).
Tolerance: 2e-5 relative on the gradients (float32, different summation orders).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.models.vocab_logprobs import (chunk_positions, plain_logprobs_and_entropy,
                                            token_logprobs_and_entropy)

torch = pytest.importorskip("torch")

B, T, D, V = 3, 7, 16, 53


def torch_reference(h, w, tokens, vocab_major, g_lp, g_ent):
    ht = torch.tensor(h, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    logits = ht @ (wt.T if vocab_major else wt)
    logp = torch.log_softmax(logits, dim=-1)
    lp = logp.gather(-1, torch.tensor(tokens)[..., None])[..., 0]
    ent = -(logp.exp() * logp).sum(-1)
    ((lp * torch.tensor(g_lp)).sum() + (ent * torch.tensor(g_ent)).sum()).backward()
    return lp.detach().numpy(), ent.detach().numpy(), ht.grad.numpy(), wt.grad.numpy()


@pytest.mark.parametrize("vocab_major", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("rows", [6, 9, 1000, None],
                         ids=["2-positions", "3-positions-padded", "one", "plain"])
def test_values_and_gradients_match_torch(vocab_major, rows):
    rng = np.random.default_rng((rows or 0) + vocab_major)
    h = rng.normal(size=(B, T, D)).astype(np.float32)
    w = rng.normal(size=(V, D) if vocab_major else (D, V)).astype(np.float32)
    tokens = rng.integers(0, V, (B, T))
    g_lp, g_ent = rng.normal(size=(2, B, T)).astype(np.float32)
    want = torch_reference(h, w, tokens, vocab_major, g_lp, g_ent)

    def loss(h, w):
        if rows is None:  # the XLA:CPU form: whole logits, autodiff
            lp, ent = plain_logprobs_and_entropy(h, w, jnp.asarray(tokens), vocab_major=vocab_major)
        else:
            lp, ent = token_logprobs_and_entropy(h, w, jnp.asarray(tokens),
                                                 vocab_major=vocab_major, rows_per_chunk=rows)
        return jnp.sum(lp * g_lp) + jnp.sum(ent * g_ent), (lp, ent)

    (_, (lp, ent)), (dh, dw) = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(h, w)
    np.testing.assert_allclose(lp, want[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ent, want[1], rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(dh, want[2], rtol=2e-5, atol=2e-5 * np.abs(want[2]).max())
    np.testing.assert_allclose(dw, want[3], rtol=2e-5, atol=2e-5 * np.abs(want[3]).max())


def test_chunk_positions():
    assert chunk_positions(16, 128, 512) == 32
    assert chunk_positions(1024, 128, 512) == 1  # at least one position
    assert chunk_positions(2, 100, 512) == 100  # at most the sequence


def test_backward_never_holds_a_batch_by_vocabulary_float32_array():
    """XLA's temporaries for the gradient stay under one ``[b, t, vocab]`` float32 array, where
    ``log_softmax`` + autodiff needs several of them."""
    b, t, d, v = 8, 64, 32, 8192
    h = jnp.zeros((b, t, d), jnp.float32)
    w = jnp.zeros((v, d), jnp.float32)
    tokens = jnp.zeros((b, t), jnp.int32)

    def plain(h, w):
        logp = jax.nn.log_softmax(h @ w.T, axis=-1)
        return jnp.sum(jnp.take_along_axis(logp, tokens[..., None], axis=-1))

    def chunked(h, w):
        return jnp.sum(token_logprobs_and_entropy(h, w, tokens, vocab_major=True,
                                                  rows_per_chunk=64)[0])

    full = b * t * v * 4
    temp = {f.__name__: jax.jit(jax.grad(f, (0, 1))).lower(h, w).compile()
            .memory_analysis().temp_size_in_bytes for f in (plain, chunked)}
    assert temp["plain"] >= 2 * full, temp
    assert temp["chunked"] < full / 2, temp


def _compiled_text(hidden, weight, tokens):
    from rlhf_jax.models.vocab_logprobs import head_logprobs

    def loss(h, w):
        lp, ent = head_logprobs(h, w, tokens, vocab_major=True)
        return jnp.sum(lp) + jnp.sum(ent)

    return jax.jit(jax.grad(loss, (0, 1))).lower(hidden, weight).compile().as_text()


def test_head_logprobs_is_plain_on_cpu_and_chunked_for_a_tpu():
    """The form is chosen per compile target: XLA:CPU gets no loop over chunks; a TPU topology
    compiled from this CPU host gets the chunked loops (``rlhf-jax fit`` sees what a TPU runs)."""
    import importlib.util
    h, w, t = jnp.zeros((4, 256, 32)), jnp.zeros((512, 32)), jnp.zeros((4, 256), jnp.int32)
    assert "while" not in _compiled_text(h, w, t)
    if importlib.util.find_spec("libtpu") is None:
        pytest.skip("libtpu is not installed (pip install \"jax[tpu]==<jax>\")")
    from rlhf_jax import fit, sharding
    devices, _, _ = fit.topology_devices("v5e-8")
    mesh = sharding.make_mesh(data=1, fsdp=-1, devices=devices)
    on_tpu = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    shapes = [jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=on_tpu) for x in (h, w)]
    assert "while" in _compiled_text(*shapes, t)
