"""Default config sections shared by the experiment files under ``configs/``.

An experiment file builds its ``ConfigDict`` from these and changes a few
visible lines. Every key an experiment might override exists here (configs are
locked: ``--config.rm.lr=…`` can only replace an existing key, with a value of
its type).
"""

from __future__ import annotations

import ml_collections as mlc

from rlhf_jax.ppo.variants import PPO_VARIANTS, with_ppo_variant  # noqa: F401  (configs use them)
from rlhf_jax.reward.interventions import RM_INTERVENTIONS


def model_spec(init: str = "preset:tiny-llama", remat: str = "none", **overrides) -> mlc.ConfigDict:
    """``init``: ``preset:NAME`` | ``smollm2`` | HF directory | ``.gguf`` | a previous stage's export.

    ``lora_rank > 0`` trains LoRA adapters (:mod:`rlhf_jax.models.lora`) of that rank, scale
    ``lora_alpha / lora_rank`` and input dropout ``lora_dropout`` on the projections named in
    ``lora_targets`` (comma-separated: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj,
    down_proj), with the base frozen; 0 fine-tunes every weight.
    """
    return mlc.ConfigDict({"init": init, "overrides": dict(overrides), "dtype": "float32",
                           "param_dtype": "float32", "remat": remat,
                           "lora_rank": 0, "lora_alpha": 32.0, "lora_dropout": 0.0,
                           "lora_targets": "q_proj,v_proj"})


def with_lora(config: mlc.ConfigDict, rank: int, alpha: float, dropout: float,
              targets: str = "q_proj,v_proj", base_dtype: str = "bfloat16") -> mlc.ConfigDict:
    """LoRA on ``config.model``, the base frozen in ``base_dtype`` (the paper: PEFT on the
    default Llama targets q_proj and v_proj; adapters stay float32)."""
    m = config.model
    m.lora_rank, m.lora_alpha, m.lora_dropout, m.lora_targets = rank, float(alpha), dropout, targets
    m.param_dtype = base_dtype
    return config


def _source_keys(source: str) -> dict:
    """The keys every stage reads: which data, and its tokenizer."""
    return {
        "source": source,          # synthetic | a name in rlhf_jax.data.sources.SOURCES
        "tokenizer": "",           # "" = the model checkpoint's (synthetic: the task's own)
    }


def _file_keys() -> dict:
    """Where a preference source's files are, how to read them, and the seed of its hold-out."""
    return {
        "path": "",                # local copy of the source ("" = download from its public location)
        "data_dir": "",            # TFDS data_dir ("" = $TFDS_DATA_DIR or ~/tensorflow_datasets)
        "options": {},             # source-specific reader options (e.g. ties for webgpt)
        "seed": 0,                 # hold-out and max_*_pairs subsets
    }


_SYNTHETIC_TASK = {"num_topics": 16, "seed": 0}
_PREFERENCE_SPLIT_KEYS = {
    "train_split": "train",
    "eval_split": "eval",      # "" = hold out eval_fraction of train
    "eval_fraction": 0.1,
    "max_train_pairs": 0,      # 0 = all
    "max_eval_pairs": 0,
}
_SYNTHETIC_PAIRS = {"num_train": 2000, "num_eval": 500, "alpha": 1.0, "beta": 0.0}


def preference_data_spec(source: str = "synthetic") -> mlc.ConfigDict:
    """``data`` of the reward-model stage: preference pairs, their splits, template and lengths."""
    return mlc.ConfigDict({
        **_source_keys(source), **_file_keys(), **_PREFERENCE_SPLIT_KEYS,
        "max_length": 512,         # paper: pairs longer than 512 tokens are dropped
        "buckets": (64, 128, 256, 512),
        "template": "question_answer",  # reward-model input template
        "synthetic": {"task": dict(_SYNTHETIC_TASK), **_SYNTHETIC_PAIRS, "seed": 0},
    })


def sft_data_spec(source: str = "synthetic") -> mlc.ConfigDict:
    """``data`` of the SFT stage: demonstrations (``sft.train_file``, or the synthetic task's).

    The demonstrations' seed and hold-out are ``seed`` and ``sft.eval_fraction``."""
    return mlc.ConfigDict({
        **_source_keys(source),
        "max_length": 512,
        "buckets": (64, 128, 256, 512),
        "prompt_template": "plain",     # policy prompt template
        "synthetic": {"task": dict(_SYNTHETIC_TASK), "num_sft": 2000, "seed": 0},
    })


def dpo_data_spec(source: str = "synthetic") -> mlc.ConfigDict:
    """``data`` of the DPO stage: the reward model's preference pairs and splits, read with the
    policy's prompt template (no reward-model input template)."""
    data = preference_data_spec(source)
    del data["template"]
    data.prompt_template = "plain"  # policy prompt template
    return data


def with_length_biased_pairs(data: mlc.ConfigDict) -> mlc.ConfigDict:
    """The synthetic task's length-biased preference pairs, as ``configs/synthetic/rm.py``
    trains its reward model and ``configs/synthetic/dpo.py`` its policies on them (one place,
    so both see the same pairs): P(a ≻ b) = σ(α·Δquality + β·Δlength) with α = 1, β = 0.3;
    2,000 train and 500 eval pairs, inputs up to 96 tokens."""
    data.buckets = (48, 96)
    data.max_length = 96
    data.synthetic.alpha, data.synthetic.beta = 1.0, 0.3
    data.synthetic.num_train, data.synthetic.num_eval = 2000, 500
    return data


def prompt_data_spec(source: str = "synthetic") -> mlc.ConfigDict:
    """``data`` of the PPO stage: RL prompts, their template and length filter.

    The preference-split keys are there for ``prompt_split = "preference:train|eval"``
    (the prompts of the reward model's own train or eval side, split as that stage split
    them): copy them from the reward model's data with :func:`prompt_data_from`.
    """
    return mlc.ConfigDict({
        **_source_keys(source), **_file_keys(),
        "prompt_split": "train",   # the distinct prompts of this split, or preference:train|eval
        "prompt_template": "plain",
        "max_prompt_length": 512,  # paper: prompts of 512 tokens or more are dropped (keeps < 512)
        **_PREFERENCE_SPLIT_KEYS,
        "synthetic": {"task": dict(_SYNTHETIC_TASK), "num_prompts": 1000, **_SYNTHETIC_PAIRS,
                      "seed": 0},
    })


def prompt_data_from(preference_data: mlc.ConfigDict) -> mlc.ConfigDict:
    """PPO's ``data`` over the same source, files, splits and seed as a reward model's ``data``."""
    data = prompt_data_spec(preference_data.source)
    shared = preference_data.copy_and_resolve_references()
    for key in data:
        if key == "synthetic":
            for sub in data.synthetic:
                if sub in shared.synthetic:
                    data.synthetic[sub] = shared.synthetic[sub]
        elif key in shared:
            data[key] = shared[key]
    return data


def checkpoint_spec(keep_latest: int = 2) -> mlc.ConfigDict:
    """``checkpoint``: how many of the latest checkpoints a stage keeps besides its best one (an
    unreadable latest one falls back to the one before: keep at least 2)."""
    return mlc.ConfigDict({"keep_latest": keep_latest})


def mesh_spec(data: int = -1, fsdp: int = 1, tensor: int = 1) -> mlc.ConfigDict:
    return mlc.ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor})


def reward_model_section() -> mlc.ConfigDict:
    return mlc.ConfigDict({
        "lr": 2e-5, "lr_schedule": "linear", "warmup_steps": 0, "epochs": 1, "batch_size": 8,
        "eval_batch_size": 16, "accum_steps": 1, "weight_decay": 0.0,
        "max_grad_norm": 1.0,      # HF Trainer's default, as the paper's train_rm.py ran it (≤ 0: off)
        "margin": 0.0, "center_coef": 0.0,
        "append_eos": False,       # the paper's preprocess_function appends nothing
        "log_every": 10, "eval_every": 200,
        "intervention": "none",    # none | bal | rda | ctr (Table 4)
        # bradley_terry | odin (rlhf_jax.reward.losses.REWARD_LOSSES): ODIN trains a quality
        # and a length head on their sum, with λ_L on its length loss and λ_O on orthogonality
        "loss": "bradley_terry", "odin": {"length_coef": 1.0, "ortho_coef": 1.0},
        "cartography": False,      # log r⁺ − r⁻ per example per pass (C-TR needs it)
        # post-hoc length calibration fitted on the eval pairs and stored with the export
        # (none | lowess; rlhf_jax.reward.calibration): LOWESS span and robustifying iterations
        "calibration": "none", "calibration_frac": 0.3, "calibration_it": 3,
        "bal": {"bin_width": 10, "limit": 200},
        "rda": {"fraction": 0.25},
        # C-TR keeps examples with confidence in [low, high] (values, or quantiles with by="quantile"),
        # from cartography_from's log or a standard run of cartography_epochs (≥ 2) epochs.
        "ctr": {"low": -1e9, "high": 1e9, "by": "value", "cartography_from": "",
                "cartography_epochs": 3},
    })


def sft_section() -> mlc.ConfigDict:
    return mlc.ConfigDict({
        "lr": 1e-4, "lr_schedule": "linear", "warmup_steps": 0, "epochs": 1, "batch_size": 8,
        "eval_batch_size": 16, "accum_steps": 1, "weight_decay": 0.0, "max_grad_norm": 1.0,
        "log_every": 10,
        "eval_every": 200,
        "train_file": "",          # JSONL of {prompt, response} ("" with data.source=synthetic)
        "eval_fraction": 0.05,
    })


def dpo_section() -> mlc.ConfigDict:
    """The DPO stage's loss and optimiser (``loss``: a name in
    :data:`rlhf_jax.dpo.losses.PREFERENCE_LOSSES`; each loss reads its own options)."""
    return mlc.ConfigDict({
        "loss": "dpo",
        "beta": 0.1,               # DPO / R-DPO: β on the log-ratios; SimPO: β on mean log-probs
        "label_smoothing": 0.0,    # DPO: conservative label smoothing ε
        "alpha": 0.0,              # R-DPO: α on the length difference |y_w| − |y_l| (tokens)
        "gamma": 0.5,              # SimPO: target reward margin γ
        "lr": 5e-6, "lr_schedule": "linear", "warmup_steps": 0, "epochs": 1, "batch_size": 8,
        "eval_batch_size": 16, "accum_steps": 1, "weight_decay": 0.0, "max_grad_norm": 1.0,
        "log_every": 10,
        "eval_every": 200,
        "eval_prompts": 32,        # eval pairs' prompts sampled at each evaluation (0: none)
        "eval_max_new_tokens": 128,
        "eval_temperature": 1.0,
    })


def dpo_config(source: str = "synthetic", init: str = "preset:tiny-llama") -> mlc.ConfigDict:
    """A complete ``rlhf-jax dpo`` config with defaults (the policy starts from ``init``, and
    the frozen reference is the same checkpoint)."""
    return mlc.ConfigDict({"seed": 0, "model": model_spec(init), "data": dpo_data_spec(source),
                           "dpo": dpo_section(), "mesh": mesh_spec(),
                           "checkpoint": checkpoint_spec()})


def reward_model_config(source: str = "synthetic", init: str = "preset:tiny-llama") -> mlc.ConfigDict:
    """A complete ``rlhf-jax train-rm`` config with defaults."""
    return mlc.ConfigDict({"seed": 0, "model": model_spec(init), "data": preference_data_spec(source),
                           "rm": reward_model_section(), "mesh": mesh_spec(),
                           "checkpoint": checkpoint_spec()})


def sft_config(source: str = "synthetic", init: str = "preset:tiny-llama") -> mlc.ConfigDict:
    """A complete ``rlhf-jax sft`` config with defaults."""
    return mlc.ConfigDict({"seed": 0, "model": model_spec(init), "data": sft_data_spec(source),
                           "sft": sft_section(), "mesh": mesh_spec(),
                           "checkpoint": checkpoint_spec()})


INTERVENTIONS = tuple(RM_INTERVENTIONS)  # the registry of rlhf_jax.reward.interventions
RM_VARIANTS = INTERVENTIONS + ("odin", "calibrated")
"""``configs/rm/*.py:VARIANT``: the paper's interventions (Table 4), then ODIN's two-head model
(``rm.loss = "odin"``) and the standard model with its LOWESS length trend fitted
(``rm.calibration = "lowess"``), which PPO's ``:odin`` and ``:calibrated`` read."""


def with_intervention(config: mlc.ConfigDict, intervention: str) -> mlc.ConfigDict:
    """Select a reward-model variant (:data:`RM_VARIANTS`; the one line a paper variant
    changes)."""
    if intervention not in RM_VARIANTS:
        raise ValueError(f"unknown reward-model variant {intervention!r}; expected one of "
                         f"{RM_VARIANTS}")
    if intervention == "odin":
        config.rm.loss = "odin"
    elif intervention == "calibrated":
        config.rm.calibration = "lowess"
    else:
        config.rm.intervention = intervention
    return config


PAPER_CTR_CUTS = {"webgpt": (-0.2, 0.4), "stack_exchange": (-1.0, 1.0), "rlcd": (-1.0, 2.0)}
"""C-TR's fixed confidence cuts per dataset: ``examine_dcarto.ipynb``'s ``cuts`` (the "both"
files, ``low < confidence < high``, that trained the C-TR reward models used for PPO)."""


def paper_reward_model_config(source: str, intervention: str) -> mlc.ConfigDict:
    """The paper's reward-model setting (§3, App. A) for one dataset: LLaMA-7B, 512 tokens.

    As ``rlhfutils/rmcode.py`` and ``trl-general/train_rms.sh`` ran it: the SFT
    model (``checkpoints/llama-7b-sft``; override ``model.init``) with a scalar head,
    AdamW lr 1e-5 with linear decay and no warm-up, weight decay 0.001, gradient
    clipping at 1.0 (HF Trainer's default), 8 pairs per update (2 per device × 2
    accumulation × 2 GPUs), 4 epochs (2 with BAL), eval every 500 updates, no EOS
    on the inputs, pairs over 512 tokens dropped. C-TR: confidence from a 5-epoch
    cartography run, cut at :data:`PAPER_CTR_CUTS`. LoRA as the scripts trained it
    (PEFT ``SEQ_CLS``: r 8, α 32, dropout 0.1 on q_proj and v_proj, the score head in full)
    on a bfloat16 base; bfloat16 compute, remat, FSDP over all chips. Full fine-tuning:
    ``--config.model.lora_rank=0 --config.model.param_dtype=float32``.
    """
    config = reward_model_config(source, init="checkpoints/llama-7b-sft")
    with_lora(config, rank=8, alpha=32, dropout=0.1)
    config.model.dtype = "bfloat16"
    config.model.remat = "full"
    config.data.max_length = 512
    config.data.buckets = (128, 256, 384, 512)
    config.rm.lr = 1e-5
    config.rm.lr_schedule = "linear"
    config.rm.warmup_steps = 0
    config.rm.weight_decay = 0.001
    config.rm.max_grad_norm = 1.0
    config.rm.epochs = 2 if intervention == "bal" else 4
    config.rm.batch_size = 8
    config.rm.accum_steps = 1
    config.rm.eval_batch_size = 32
    config.rm.ctr.by = "value"
    config.rm.ctr.low, config.rm.ctr.high = PAPER_CTR_CUTS[source]
    config.rm.ctr.cartography_epochs = 5
    config.rm.eval_every = 500
    config.mesh = mesh_spec(data=1, fsdp=-1, tensor=1)
    return with_intervention(config, intervention)


DPO_LOSS_SETTINGS = {"dpo": {"beta": 0.1}, "rdpo": {"beta": 0.1, "alpha": 0.01},
                     "simpo": {"beta": 2.0, "gamma": 1.0}}
"""Each loss's coefficients in the paper-dataset configs: DPO's β = 0.1 (Rafailov et al.),
R-DPO's α = 0.01 per token (within the 0.005–0.05 Park et al. swept), SimPO's β = 2, γ = 1
(γ/β = 0.5, within Meng et al.'s Llama-3-8B-base ranges)."""


def paper_dpo_config(source: str, loss: str, prompt_template: str) -> mlc.ConfigDict:
    """DPO-family training on one of the paper's datasets, at the paper's scale: the SFT model
    (``checkpoints/llama-7b-sft``), the reward model's pairs and 512-token limit, LoRA as the
    paper's runs (r 8, α 32, dropout 0.1 on q_proj and v_proj, a bfloat16 base; the reference
    is that base with the adapters off), bfloat16 compute, remat, FSDP over all chips; the
    policy prompt template of the paper's PPO runs on that dataset. AdamW lr 5e-6 with linear
    decay and 100 warm-up steps, 8 pairs per update, one epoch."""
    from rlhf_jax.dpo.losses import PREFERENCE_LOSSES
    if loss not in PREFERENCE_LOSSES:
        raise ValueError(f"unknown DPO loss {loss!r}; expected one of {sorted(PREFERENCE_LOSSES)}")
    config = dpo_config(source, init="checkpoints/llama-7b-sft")
    with_lora(config, rank=8, alpha=32, dropout=0.1)
    config.model.dtype = "bfloat16"
    config.model.remat = "full"
    config.data.max_length = 512
    config.data.buckets = (128, 256, 384, 512)
    config.data.prompt_template = prompt_template
    config.dpo.loss = loss
    config.dpo.update(DPO_LOSS_SETTINGS[loss])
    config.dpo.lr = 5e-6
    config.dpo.warmup_steps = 100
    config.dpo.batch_size = 8
    config.dpo.eval_batch_size = 32
    config.dpo.eval_every = 500
    config.dpo.eval_prompts = 64
    config.dpo.eval_max_new_tokens = 256
    config.mesh = mesh_spec(data=1, fsdp=-1, tensor=1)
    return config


def ppo_config(source: str = "synthetic", init: str = "") -> mlc.ConfigDict:
    """A complete ``rlhf-jax ppo`` config with TRL 0.5's defaults as the paper used them (§2.2, App. A).

    ``model.remat = "dots_no_batch"``: the update keeps each layer's projection outputs and
    recomputes attention in its backward pass (the forward-only roles never remat). On
    SmolLM2-135M at 16 × (64 + 128) tokens (this project's 2-core host, 2026-12-06) the update
    took 16.8–17.5 s against 20.6–23.0 without remat, and the PPO process peaked at 7.1–7.2 GB
    of RSS against 11.8–11.9: the scanned layers' stacked residuals, zero-filled and copied by XLA on every
    call, are most of both."""
    return mlc.ConfigDict({
        "seed": 0, "model": model_spec(init, remat="dots_no_batch"),
        "data": prompt_data_spec(source),
        "mesh": mesh_spec(), "checkpoint": checkpoint_spec(),
        "ppo": {
            "steps": 100, "batch_size": 64, "mini_batch_size": 64, "ppo_epochs": 1,
            # TRL 0.5: Adam at a constant lr, no gradient clipping (max_grad_norm ≤ 0 = off)
            "lr": 1.4e-5, "lr_schedule": "constant", "warmup_steps": 0, "weight_decay": 0.0,
            "max_grad_norm": 0.0,
            "clip_range": 0.2, "clip_range_value": 0.2, "vf_coef": 0.1, "entropy_coef": 0.0,
            "gamma": 1.0, "lam": 0.95, "init_kl_coef": 0.04, "adaptive_kl": True,
            "kl_target": 0.1, "kl_horizon": 10000.0, "kl_estimator": "k1",
            "whiten_advantages": True, "whiten_rewards": False, "ratio_threshold": 10.0,
            "ratio_skip": "zero_loss",  # zero_loss (TRL 0.5: loss × 0, Adam still steps) | freeze
            "value_model": "shared",   # shared (a head on the policy, as TRL) | separate (from the RM)
            "reference": "",           # "" = the initial policy; else a checkpoint of the same shape
            "reference_param_dtype": "",  # the frozen reference's storage ("" = model.param_dtype)
            "save_every": 25,
            # gae (the paper) | grpo | dr_grpo: rlhf_jax.ppo.algo.ADVANTAGE_ESTIMATORS; the group
            # ones sample group_size responses per prompt and use no value loss
            "advantage_estimator": "gae", "group_size": 1,
        },
        # caps: LengthSampler(min, max) = uniform over min … max − 1, one draw per cap_chunk rows
        # (the paper: output_max_length 156 → LengthSampler(154, 156), TRL generates 4 at a time)
        # rollout_tensor: the sampler's layout (rlhf_jax.ppo.roles.Rollout): 0 = tensor groups of
        # the largest size dividing a host's devices and the kv heads, t = groups of t, −1 = FSDP
        "generation": {"min_new_tokens": 154, "max_new_tokens": 156, "cap_chunk": 4,
                       "temperature": 1.0, "top_k": 0, "top_p": 1.0, "prompt_bucket": 64,
                       "rollout_tensor": 0},
        # kind: model | function (reward.function = "module:name", f(prompts, responses) -> scores)
        #       | length_only (LPPO)
        "reward": {"kind": "model", "model": "", "function": "", "tokenizer": "",
                   "template": "question_answer",
                   # the frozen reward model, sharded over the mesh: compute and storage dtypes
                   "dtype": "float32", "param_dtype": "float32",
                   "append_eos": False,  # as the paper's scoring pipeline
                   "max_length": 512, "buckets": (128, 256, 384, 512),
                   # none | lowess: subtract the length trend stored with the export
                   # (train-rm with rm.calibration='lowess'; rlhf_jax.reward.calibration)
                   "calibration": "none",
                   # which head of an ODIN reward model scores: sum (as trained) | quality
                   # (ODIN's PPO) | length; a one-head reward model has only sum
                   "head": "sum"},
        "shaping": {
            "shapers": (),             # names in rlhf_jax.ppo.shaping.SHAPERS, applied in order
            "target_length": 156.0,    # N of LPPO and of the length penalty's "paper" variant
            "length_penalty_variant": "code",  # code: 2σ·(1 − 0.01·len) (the runs) | paper: (1 − len/N)·σ
            "scaling_clip": 0.3,
            "window": 10,              # batches in the reward-statistics window
            "window_groups": 1,        # one window per group of rows (the paper: 2 processes)
            "omit_long": "off",        # off | mask | replace (the paper's code)
            "eos_penalty": 0.0, "overlong_buffer": 0, "overlong_penalty": 1.0,
        },
    })


def paper_ppo_config(source: str, variant: str, *, target_length: float, prompt_split: str,
                     prompt_template: str, options: dict, reward_model: str) -> mlc.ConfigDict:
    """The paper's PPO setting (§2.2, App. A: TRL 0.5 defaults as its scripts ran them) for one dataset.

    ``trl-general/run_rlhf.sh`` and ``rlhfutils/rl_utils.py``: LLaMA-7B SFT policy
    (``checkpoints/llama-7b-sft``; override ``model.init``) with the value head on
    its trunk; 64 prompts per step (32 per process × 2 processes); Adam, lr 1.4e-5
    constant, no gradient clipping; cliprange 0.2, value clip 0.2, vf_coef 0.1,
    γ 1, λ 0.95, β₀ 0.04 adaptive (target 0.1, horizon 10000); one PPO epoch of
    minibatches of 2 (TRL's default of 1 per process × 2 processes: 32 updates a
    step); the reward window per process (``window_groups = 2``); top_k 0, top_p 1,
    temperature 1; caps from ``LengthSampler(154, 156)``, one draw per 4 rows.
    LPPO generates with ``output_max_length = N + 24`` (the WebGPT run: 180 for
    N = 156); omit-long with 200 (its one run, on Stack). LoRA as the scripts ran it (r 16,
    α 32, dropout 0.05 on q_proj and v_proj; the value head in full; the reference is the base
    with adapters off), on a bfloat16 base where the scripts loaded it in 8 bits; bfloat16
    compute, remat, FSDP. Full fine-tuning: ``--config.model.lora_rank=0
    --config.model.param_dtype=float32`` (docs/paper-fidelity.md).
    """
    config = ppo_config(source, init="checkpoints/llama-7b-sft")
    with_lora(config, rank=16, alpha=32, dropout=0.05)
    config.reward.model = reward_model
    config.data.prompt_split = prompt_split
    config.data.prompt_template = prompt_template
    config.data.options = options
    config.model.dtype = "bfloat16"
    config.model.remat = "full"
    config.ppo.reference_param_dtype = "bfloat16"  # frozen roles: bfloat16 storage and compute
    config.reward.dtype = config.reward.param_dtype = "bfloat16"
    config.mesh = mesh_spec(data=1, fsdp=-1, tensor=1)
    config.ppo.mini_batch_size = 2
    config.shaping.window_groups = 2
    config.ppo.steps = 200
    with_ppo_variant(config, variant, target_length)
    if variant in ("lppo", "lppo_beta0"):
        set_output_max_length(config, int(target_length) + 24)
    elif variant == "omit_long":
        set_output_max_length(config, 200)
    return config


def set_output_max_length(config: mlc.ConfigDict, n: int) -> mlc.ConfigDict:
    """The paper scripts' ``--output_max_length=n``: caps from ``LengthSampler(n − 2, n)``."""
    config.generation.min_new_tokens = n - 2
    config.generation.max_new_tokens = n
    return config
