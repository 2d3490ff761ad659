"""The KV-cached sampler against transformers (PyTorch) and plain NumPy reference rules.

References: ``transformers`` greedy ``generate`` (token-for-token equality) and
full, uncached PyTorch forwards over prompt + sampled prefix, from which the
allowed top-k / top-p sets and the log-softmax are computed in NumPy.
Log-prob tolerance: 1e-4 absolute.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="sampler reference needs CPU torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from rlhf_jax.generate import sample  # noqa: E402
from rlhf_jax.models import load_pretrained  # noqa: E402
from rlhf_jax.models.presets import preset_config  # noqa: E402
from tests.helpers import left_padded_batch, torch_logits, torch_model  # noqa: E402

PROMPT_LENGTHS = [9, 3, 6, 1]
NEW = 12


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gpt2"])
def models(request, tmp_path_factory):
    ref = torch_model(preset_config(request.param), seed=3)
    path = str(tmp_path_factory.mktemp(request.param))
    ref.save_pretrained(path)
    model, params = load_pretrained(path)
    ids, mask = left_padded_batch(np.random.default_rng(2), PROMPT_LENGTHS, model.config.vocab_size)
    return {"ref": ref, "model": model, "params": params, "ids": ids, "mask": mask}


def _sample(m, key=0, **kw):
    out = sample(m["model"], m["params"], jnp.asarray(m["ids"]), jnp.asarray(m["mask"]),
                 jax.random.key(key), max_new_tokens=NEW, **kw)
    return jax.tree.map(np.asarray, out)


def _hf_greedy(m, eos_id):
    with torch.no_grad():
        out = m["ref"].generate(
            input_ids=torch.tensor(m["ids"], dtype=torch.long), attention_mask=torch.tensor(m["mask"]),
            do_sample=False, max_new_tokens=NEW, eos_token_id=eos_id, pad_token_id=0)
    return out[:, m["ids"].shape[1]:].numpy()


def _eos_from_free_run(m, row, step):
    """A token that greedy decoding emits at (row, step) when nothing stops it."""
    return int(_sample(m, temperature=0.0).tokens[row, step])


@pytest.mark.parametrize("eos", ["none", "emitted"])
def test_greedy_matches_transformers_generate(models, eos):
    eos_id = None if eos == "none" else _eos_from_free_run(models, row=1, step=4)
    ours = _sample(models, temperature=0.0, eos_id=eos_id)
    ref = _hf_greedy(models, eos_id)
    n = ref.shape[1]
    np.testing.assert_array_equal(ours.tokens[:, :n], ref)
    assert np.all(ours.tokens[:, n:] == 0) and np.all(ours.mask[:, n:] == 0)
    if eos_id is not None:
        assert ours.lengths[1] <= 5  # row 1 stopped at (or before) the chosen token


def _reference_step_logits(m, out, temperature):
    """``[b, NEW, vocab]`` float64: uncached torch logits for each sampled position, scaled by 1/T."""
    full_ids = np.concatenate([m["ids"], out.tokens], axis=1)
    full_mask = np.concatenate([m["mask"], out.mask], axis=1)
    logits = torch_logits(m["ref"], full_ids, full_mask).astype(np.float64)
    p = m["ids"].shape[1]
    return logits[:, p - 1:p - 1 + NEW] / temperature


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_logprobs_equal_full_forward_log_softmax(models):
    out = _sample(models, temperature=1.0)
    ref = _log_softmax(_reference_step_logits(models, out, 1.0))
    ref_at_tokens = np.take_along_axis(ref, out.tokens[..., None], -1)[..., 0]
    live = out.mask.astype(bool)
    assert live.sum() >= 10
    np.testing.assert_allclose(out.logprobs[live], ref_at_tokens[live], atol=1e-4)


def _filtered_log_probs(scaled_v, top_k, top_p):
    """NumPy reference of the sampling distribution: top-k, then top-p on the renormalised rest.

    Returns log-probabilities with −inf outside the allowed set.
    """
    logits = scaled_v.copy()
    if top_k:
        kth = np.sort(logits)[-top_k]
        logits[logits < kth] = -np.inf
    if top_p < 1.0:
        order = np.argsort(-logits, kind="stable")
        probs = np.exp(_log_softmax(logits[order]))
        mass_before = np.cumsum(probs) - probs
        removed = order[mass_before >= top_p]
        logits[removed] = -np.inf
    return _log_softmax(logits)


@pytest.mark.parametrize("kw", [{"top_k": 5}, {"top_p": 0.6}, {"top_k": 20, "top_p": 0.5}])
def test_filtered_sampling_follows_the_reference_distribution(models, kw):
    temperature = 0.8
    top_k, top_p = kw.get("top_k", 0), kw.get("top_p", 1.0)
    for seed in range(3):
        out = _sample(models, key=seed, temperature=temperature, **kw)
        scaled = _reference_step_logits(models, out, temperature)
        for b, t in zip(*np.nonzero(out.mask)):
            ref = _filtered_log_probs(scaled[b, t], top_k, top_p)
            token = out.tokens[b, t]
            assert np.isfinite(ref[token]), (kw, seed, b, t)  # inside the allowed set
            assert abs(out.logprobs[b, t] - ref[token]) <= 1e-4, (kw, seed, b, t)


def test_same_key_same_output_other_key_other_output(models):
    a, b, c = _sample(models, key=5), _sample(models, key=5), _sample(models, key=6)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.logprobs, b.logprobs)
    assert not np.array_equal(a.tokens, c.tokens)


def test_rows_stop_at_eos_and_pad_after(models):
    free = _sample(models, key=1, temperature=1.0)
    eos = int(free.tokens[0, 2])  # row 0 emits this at step 2 when nothing stops it
    out = _sample(models, key=1, temperature=1.0, eos_id=[eos, 99999])
    lengths = out.mask.sum(-1)
    assert lengths[0] <= 3 and lengths.max() > 3, lengths  # one row stopped, another went on
    for row in range(out.tokens.shape[0]):
        n = int(lengths[row])
        np.testing.assert_array_equal(out.tokens[row, :n], free.tokens[row, :n])  # same key, same path
        assert np.all(out.mask[row, :n] == 1) and np.all(out.mask[row, n:] == 0)
        assert eos not in out.tokens[row, :n - 1]
        if n < NEW:
            assert out.tokens[row, n - 1] == eos
            assert np.all(out.tokens[row, n:] == 0) and np.all(out.logprobs[row, n:] == 0)


def test_bad_arguments_raise(models):
    with pytest.raises(ValueError, match="top_p"):
        _sample(models, top_p=0.0)
    if models["model"].config.position == "learned":
        with pytest.raises(ValueError, match="learned positions"):
            sample(models["model"], models["params"], jnp.asarray(models["ids"]),
                   jnp.asarray(models["mask"]), jax.random.key(0), max_new_tokens=600)
    with pytest.raises(ValueError, match="prompt_mask"):
        sample(models["model"], models["params"], jnp.asarray(models["ids"]),
               jnp.asarray(models["mask"][:, 1:]), jax.random.key(0), max_new_tokens=2)


def test_unrolled_and_scanned_decoding_agree(models):
    from rlhf_jax.models.transformer import stack_layers, unstack_layers
    a = _sample(models, key=3, temperature=1.0, unroll_layers=True)
    b = _sample(models, key=3, temperature=1.0, unroll_layers=False)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
    n = models["model"].config.num_layers
    back = stack_layers(unstack_layers(models["params"], n), n)
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(models["params"])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_decoding_view_gives_the_same_logits(models):
    """Unrolled layers, (when tied) a transposed LM-head copy and, where the CPU kernel builds,
    panel-packed projections give transformers' logits (1e-4)."""
    from rlhf_jax.generate import decoding_view
    from rlhf_jax.kernels import panel_matmul
    model, params = models["model"], models["params"]
    view, view_params = decoding_view(model, params)
    assert not view.config.scan_layers and not view.config.tie_word_embeddings
    panels = view.kernels == "cpu_panels"
    assert panels == panel_matmul.available(), panel_matmul.unavailable_reason()
    head = view_params["lm_head"]["kernel"]
    if panels:
        head = panel_matmul.unpack_panels(head, model.config.vocab_size)
    if model.config.tie_word_embeddings:
        np.testing.assert_array_equal(np.asarray(head),
                                      np.asarray(params["model"]["embed_tokens"]["embedding"]).T)
    ids, mask = models["ids"], models["mask"]
    ours = np.asarray(view.apply({"params": view_params}, jnp.asarray(ids),
                                 attention_mask=jnp.asarray(mask)).logits)
    ref = torch_logits(models["ref"], ids, mask)
    real = mask.astype(bool)  # padded positions' logits are not defined by either side
    np.testing.assert_allclose(ours[real], ref[real], atol=1e-4)
    again = decoding_view(view, view_params)
    assert again[0] is view and again[1] is view_params


def test_top_k_beyond_vocab_keeps_everything(models):
    vocab = models["model"].config.vocab_size
    a = _sample(models, key=2, temperature=1.0, top_k=10 * vocab)
    b = _sample(models, key=2, temperature=1.0)
    np.testing.assert_array_equal(a.tokens, b.tokens)


def test_repetition_penalty_matches_transformers_greedy(models):
    # Unpadded prompts: transformers also penalises pad tokens in the prompt, we do not.
    ids, mask = left_padded_batch(np.random.default_rng(5), [7, 7, 7], models["model"].config.vocab_size)
    ours = sample(models["model"], models["params"], jnp.asarray(ids), jnp.asarray(mask),
                  jax.random.key(0), max_new_tokens=NEW, temperature=0.0, repetition_penalty=1.2)
    plain = sample(models["model"], models["params"], jnp.asarray(ids), jnp.asarray(mask),
                   jax.random.key(0), max_new_tokens=NEW, temperature=0.0)
    with torch.no_grad():
        ref = models["ref"].generate(
            input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
            do_sample=False, max_new_tokens=NEW, repetition_penalty=1.2, eos_token_id=None,
            pad_token_id=0)[:, ids.shape[1]:].numpy()
    np.testing.assert_array_equal(np.asarray(ours.tokens), ref)
    assert not np.array_equal(np.asarray(ours.tokens), np.asarray(plain.tokens))  # it acts


def nucleus_cutoff_by_sorting(logits, top_p):
    """Reference: sort each row, keep tokens while the mass before them is below top_p (float64)."""
    cutoffs = []
    for row in logits:
        ordered = np.sort(row.astype(np.float64))[::-1]
        probs = np.exp(ordered - ordered.max())
        probs /= probs.sum()
        cutoffs.append(ordered[np.cumsum(probs) - probs < top_p].min())
    return np.asarray(cutoffs, np.float32)


@pytest.mark.parametrize("scale", [0.1, 1.0, 3.0, 30.0])
@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.999])
def test_top_p_cutoff_equals_sorting_reference(scale, top_p):
    """Equal to the sorting reference, or where float32 sums round differently from float64
    (the mass before the cutoff token within 1e-6 of top_p), a cutoff with the defining property:
    mass(logits > cutoff) < top_p ≤ mass(logits ≥ cutoff)."""
    from rlhf_jax.generate import top_p_cutoff
    rng = np.random.default_rng(int(scale * 10) + int(top_p * 1000))
    logits = (rng.normal(size=(6, 3000)) * scale).astype(np.float32)
    logits[0] = 1.0                       # all tied: every token kept
    logits[1, :1500] = -1e30              # half removed by an earlier top-k
    logits[2, :10] = logits[2].max() + 5  # a tied head holding most of the mass
    logits[3] = np.round(logits[3])       # many ties at the cutoff
    got = np.asarray(top_p_cutoff(jnp.asarray(logits), top_p))[:, 0]
    want = nucleus_cutoff_by_sorting(logits, top_p)
    for row, cutoff in enumerate(got):
        if cutoff == want[row]:
            continue
        x = logits[row].astype(np.float64)
        probs = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
        # a disagreement is allowed only on the rounding edge: the mass above one of the two
        # cutoffs lies within 1e-6 of top_p
        edge = min(abs(probs[x > v].sum() - top_p) for v in (cutoff, want[row]))
        assert edge < 1e-6, (row, cutoff, want[row], edge)
        assert cutoff in logits[row]
        assert probs[x > cutoff].sum() < top_p + 1e-6 and probs[x >= cutoff].sum() >= top_p - 1e-6


def test_process_logits_keeps_exactly_the_nucleus():
    """Through the sampler's filter: the tokens left are those at or above the reference cutoff."""
    from rlhf_jax.generate import process_logits
    logits = np.random.default_rng(7).normal(size=(4, 500)).astype(np.float32) * 2
    out = np.asarray(process_logits(jnp.asarray(logits), jnp.float32(0.7), greedy=False, top_k=0,
                                    use_top_p=True, top_p=jnp.float32(0.8)))
    cutoff = nucleus_cutoff_by_sorting(logits / np.float32(0.7), 0.8)
    kept = out > -1e29
    np.testing.assert_array_equal(kept, (logits / np.float32(0.7)) >= cutoff[:, None])
    assert (kept.sum(axis=1) < 500).all() and (kept.sum(axis=1) >= 1).all()


def test_greedy_tokens_is_argmax_with_first_index_on_ties():
    from rlhf_jax.generate import greedy_tokens
    rng = np.random.default_rng(0)
    logits = rng.integers(-3, 4, (64, 50)).astype(np.float32)  # many ties
    logits[5] = 7.0  # a whole row tied
    np.testing.assert_array_equal(np.asarray(greedy_tokens(jnp.asarray(logits))),
                                  np.argmax(logits, axis=-1))


def test_sampled_tokens_are_jax_categorical_draws():
    """``_choose`` draws exactly ``jax.random.categorical``'s tokens for the same key (Gumbel-max
    with a cheaper argmax), on rows with filtered (−inf) entries and ties included."""
    from rlhf_jax.generate import _choose
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 301)).astype(np.float32) * 2
    logits[1, 50:] = -np.inf                      # a top-k style filtered row
    logits[2, :] = 0.5                            # all equal
    logits[3, ::7] = 9.0                          # many ties at the top
    logits = jnp.asarray(logits)
    choose = jax.jit(lambda x, k: _choose(x, k, False))
    for key in jax.random.split(jax.random.key(3), 50):
        ref = jax.random.categorical(key, logits, axis=-1)
        np.testing.assert_array_equal(np.asarray(choose(logits, key)), np.asarray(ref))
