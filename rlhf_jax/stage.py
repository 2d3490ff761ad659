"""What every training stage (SFT, reward model, PPO) shares: the experiment's tokenizer and its checks.

A stage is data + loss + loop on top of these; models never import data, so the
experiment-level choice "the synthetic task's own tokenizer, else ``data.tokenizer``,
else the model checkpoint's" lives here rather than in :mod:`rlhf_jax.models`.
"""

from __future__ import annotations

from rlhf_jax.models.build import tokenizer_for


def experiment_tokenizer(config):
    """The experiment's tokenizer: the synthetic task's own, or ``data.tokenizer`` / the model's."""
    if config.data.source == "synthetic" and not config.data.tokenizer:
        from rlhf_jax.data.preferences import synthetic_task
        return synthetic_task(config.data).tokenizer()
    return tokenizer_for(config.data.tokenizer, config.model.init)


def check_vocab(tokenizer, model_config, role: str = "model") -> None:
    """The tokenizer's ids must fit the model's embedding (``role`` names the model in the error)."""
    if len(tokenizer) > model_config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the {role}'s vocab_size is "
                         f"{model_config.vocab_size}: set model.overrides.vocab_size (presets) or "
                         "use the checkpoint's own tokenizer")
