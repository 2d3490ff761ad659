"""Rollout pieces against direct computations: response-position log-probs and values, length cuts."""

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.models import config_from_hf, init_params
from rlhf_jax.models.heads import PolicyWithValue
from rlhf_jax.models.presets import preset_config
from rlhf_jax.ppo import rollout


def test_response_logprobs_and_values_match_a_full_forward():
    model = PolicyWithValue(config_from_hf(preset_config("tiny-llama")))
    params = init_params(model, jax.random.key(0))
    rng = np.random.default_rng(0)
    prompt = rng.integers(3, 256, (3, 6)).astype(np.int32)
    prompt_mask = np.ones_like(prompt)
    prompt_mask[0, :2] = 0  # left padding
    response = rng.integers(3, 256, (3, 5)).astype(np.int32)
    response_mask = (np.arange(5)[None] < np.array([[5], [2], [4]])).astype(np.int32)
    logprobs, values, entropy = rollout.policy_outputs(model, params, prompt, prompt_mask, response,
                                                       response_mask, with_values=True,
                                                       with_entropy=True)
    ids = np.concatenate([prompt, response], 1)
    mask = np.concatenate([prompt_mask, response_mask], 1)
    full = model.apply({"params": params}, ids, attention_mask=mask)
    logp = np.asarray(jax.nn.log_softmax(full.logits, -1))
    for b in range(3):
        for t in range(5):
            pos = 6 - 1 + t  # the position that predicts response token t
            assert abs(logprobs[b, t] - logp[b, pos, response[b, t]]) < 1e-5
            assert abs(values[b, t] - full.values[b, pos]) < 1e-5
            p = np.exp(logp[b, pos])
            assert abs(entropy[b, t] + np.sum(p * logp[b, pos])) < 1e-4


def test_cut_to_length():
    tokens = jnp.asarray([[5, 6, 1, 0, 0], [5, 6, 7, 8, 9], [1, 0, 0, 0, 0]])
    mask = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    caps = jnp.asarray([3, 3, 3])
    out_tokens, out_mask, lengths, ended = rollout.cut_to_length(tokens, mask, caps, eos_ids=(1,),
                                                                 pad_id=0)
    assert lengths.tolist() == [3, 3, 1]
    assert ended.tolist() == [True, False, True]
    assert out_tokens.tolist() == [[5, 6, 1, 0, 0], [5, 6, 7, 0, 0], [1, 0, 0, 0, 0]]
    assert out_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]
    _, _, _, ended_cut = rollout.cut_to_length(tokens, mask, jnp.asarray([2, 2, 2]), eos_ids=(1,),
                                               pad_id=0)
    assert ended_cut.tolist() == [False, False, True]  # EOS after the cap does not count
    _, per_row, lengths, ended = rollout.cut_to_length(tokens, mask, jnp.asarray([2, 4, 1]),
                                                       eos_ids=(1,), pad_id=0)
    assert lengths.tolist() == [2, 4, 1] and ended.tolist() == [False, False, True]


def test_length_caps_are_trls_length_sampler_per_generation_chunk():
    # TRL 0.5: LengthSampler(154, 156) is np.random.choice(list(range(154, 156))), called once
    # per chunk of 4 prompts in _generate_batched: caps take both 154 and 155, constant per chunk.
    caps = np.concatenate([rollout.length_caps(64, 154, 156, 4, [0, step, 1]) for step in range(50)])
    assert set(caps.tolist()) == {154, 155}
    chunks = caps.reshape(-1, 4)
    assert (chunks == chunks[:, :1]).all()
    assert 0.4 < np.mean(chunks[:, 0] == 155) < 0.6  # uniform over the two values
    assert rollout.length_caps(6, 10, 20, 4, [1]).shape == (6,)  # a last, shorter chunk
