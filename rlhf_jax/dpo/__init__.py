"""Direct preference optimisation: the DPO family of losses (:mod:`rlhf_jax.dpo.losses`)."""
