"""rlhf_jax against TRL 0.11.4 and PyTorch on the same work: the PPO iteration, the RM and SFT steps.

See :mod:`rlhf_jax.benchmarks.vs_torch.work` for the cases, ``ours`` and ``torch_side`` for
each stack, ``report`` for the tables, and ``__main__`` for how the processes alternate.
"""
