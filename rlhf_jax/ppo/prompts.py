"""RL prompts for PPO: the synthetic task's, or the distinct prompts of a dataset split.

Paper (§3): WebGPT's questions, Stack Exchange's ``rl`` folder, and hh-rlhf
helpful-base prompts for RLCD. Each prompt is formatted with the policy template
(``data.prompt_template``: Alpaca for WebGPT/RLCD, "Question: …\\n\\nAnswer: " for
Stack) and tokenised once; prompts of ``data.max_prompt_length`` tokens or more are
dropped and counted (paper: 512). An empty set after filtering is an error.

``data.prompt_split`` names a split of the source, or ``preference:train`` /
``preference:eval``: the prompts of the reward-model data's train or eval side as
:func:`~rlhf_jax.data.preferences.preference_splits` makes it, so that a held-out
fraction (``data.eval_split = ""``) stays held out from PPO and serves as eval prompts.
The hold-out splits pairs, and a prompt can head several pairs: ``preference:eval``
leaves out (and counts) prompts that also occur on the train side.
"""

from __future__ import annotations

import logging

from rlhf_jax.config import ConfigError
from rlhf_jax.data import pipeline
from rlhf_jax.data.records import DataError, DropCounter
from rlhf_jax.data.templates import policy_prompt

log = logging.getLogger(__name__)


PREFERENCE_SIDES = ("preference:train", "preference:eval")


def raw_prompts(config) -> list:
    """The distinct raw prompts of ``data.prompt_split``, in first-seen order."""
    data = config.data
    if data.source == "synthetic":
        from rlhf_jax.data.preferences import synthetic_task
        return synthetic_task(data).prompts(data.synthetic.num_prompts, seed=data.synthetic.seed + 2)
    if data.prompt_split.startswith("preference:"):
        return _preference_side_prompts(data)
    else:
        from rlhf_jax.data.sources import load_pairs
        from rlhf_jax.data.preferences import tfds_data_dir
        pairs = load_pairs(data.source, data.prompt_split, path=data.path or None,
                           data_dir=tfds_data_dir(data.data_dir), **dict(data.get("options", {}) or {}))
    return _distinct_prompts(pairs)


def _distinct_prompts(pairs) -> list:
    seen, out = set(), []
    for i in range(len(pairs)):
        prompt = pairs[i]["prompt"]
        if prompt not in seen:
            seen.add(prompt)
            out.append(prompt)
    return out


def _preference_side_prompts(data) -> list:
    """``preference:train|eval``: the distinct prompts of that side; eval minus any train prompt."""
    if data.prompt_split not in PREFERENCE_SIDES:
        raise ConfigError(f"data.prompt_split = {data.prompt_split!r}: expected a split of "
                          f"{data.source} or one of {list(PREFERENCE_SIDES)}")
    from rlhf_jax.data.preferences import preference_splits
    train, eval_ = preference_splits(data)
    if data.prompt_split == "preference:train":
        return _distinct_prompts(train)
    seen_in_train = set(_distinct_prompts(train))
    drops, out = DropCounter(), []
    for prompt in _distinct_prompts(eval_):
        if prompt in seen_in_train:
            drops.add("also a prompt of the train side")
        else:
            out.append(prompt)
    drops.log(log, "preference:eval prompts")
    return out


def prompt_set(config, tokenizer, *, need: int = None) -> list:
    """``[{"text": raw prompt, "ids": tokenised policy prompt}]`` after the length filter.

    Fewer than ``need`` prompts left (default ``ppo.batch_size``) is a ``ConfigError``.
    """
    drops, out = DropCounter(), []
    texts = raw_prompts(config)
    formatted = []
    for i, text in enumerate(texts):
        try:
            formatted.append(policy_prompt(text, config.data.prompt_template))
        except ValueError as err:
            raise DataError(f"{config.data.source}/{config.data.prompt_split} prompt {i}: cannot apply "
                            f"data.prompt_template={config.data.prompt_template!r}: {err}") from None
    ids = pipeline.policy_prompt_ids(tokenizer, formatted)
    for text, token_ids in zip(texts, ids):
        if len(token_ids) >= config.data.max_prompt_length:  # the paper keeps len < 512
            drops.add(f"not shorter than data.max_prompt_length={config.data.max_prompt_length} "
                      "tokens")
            continue
        if not token_ids:
            drops.add("empty after tokenisation")
            continue
        out.append({"text": text, "ids": list(token_ids)})
    drops.log(log, "rl prompts")
    need = config.ppo.batch_size if need is None else need
    if len(out) < need:
        raise ConfigError(f"only {len(out)} prompts of {config.data.source}/{config.data.prompt_split} "
                          f"left after filtering ({drops.summary('prompts')}); {need} needed")
    return out
