"""The whole study in one command (``rlhf-jax run configs/demo.py``): the paper in miniature.

Stages, each resumable in its own sub-directory of the workdir (a stage with a
``result.json`` is skipped on rerun):

1. ``sft/``: the initial policy (:mod:`rlhf_jax.sft`), when the config has an
   ``sft`` section; otherwise ``study.initial_policy`` (a checkpoint, e.g.
   ``smollm2``) is the initial policy and the baseline, still called ``sft``;
2. ``rm/`` and ``rm_bal/``: the standard and the length-balanced reward model
   (:mod:`rlhf_jax.reward.train`);
3. ``ppo_<variant>/``: PPO against the standard reward model for each variant of
   ``config.ppo_variants`` (standard, high KL, LPPO, …); then ``<method>/`` for each name in
   ``config.methods`` (:data:`rlhf_jax.study_methods.STUDY_METHODS`: ODIN, the calibrated
   reward, GRPO, Dr. GRPO, DPO, R-DPO, SimPO), from the same SFT policy and reward model;
4. ``samples/<policy>.jsonl``: ``study.samples_per_prompt`` samples per eval prompt
   of the SFT policy and every PPO policy, scored by the standard reward model
   (``score``) and, on the synthetic task, by the gold judge (``gold``, its true
   quality). Eval prompts: the synthetic task's held-out prompts, or those of
   ``study.eval_prompt_split`` (e.g. ``preference:eval``, the pairs the reward
   model held out), a seeded subset of ``study.eval_prompts``;
5. ``report/``: :func:`rlhf_jax.analysis.report.analyze` (tables, plots, HTML,
   the reward models' length heuristic and cartography) plus win rates against
   SFT judged by ``study.judge``: ``gold`` or ``score`` (the standard reward model).

Returns (and prints) the summary table: mean length, reward-model score, gold
quality (synthetic task), NRG and NRG/ΔR over SFT, win rate vs SFT (with its 95%
interval and the length-controlled rate) for each policy, and the reward models'
length correlations. With ``config.methods`` (``configs/debias.py``) the table is the
debiasing one: the gold gain over SFT, the gold win rate with its interval, the
length-controlled and the reward-model-judged win rates, and NRG/ΔR; the report adds the
reward-model-judged win table and a plot of gold gain against length gain.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from rlhf_jax import evaluate
from rlhf_jax.analysis import plots
from rlhf_jax.analysis.report import analyze
from rlhf_jax.config import ConfigError
from rlhf_jax.data.preferences import synthetic_task
from rlhf_jax.ppo.variants import with_ppo_variant
from rlhf_jax.generate import decoding_view
from rlhf_jax.models import load_pretrained, load_tokenizer
from rlhf_jax.models.build import load_scalar_model, resolve_init_path
from rlhf_jax.ppo.prompts import prompt_set
from rlhf_jax.reward.train import train_reward_model
from rlhf_jax.samples import generate_samples, read_jsonl, score_samples, write_jsonl
from rlhf_jax.sft import train_sft
from rlhf_jax.study_methods import STUDY_METHODS, StudyContext, check_methods, run_ppo
from rlhf_jax.workdir import start_stage

log = logging.getLogger(__name__)


def _stage_config(config, section: str, **overrides):
    stage = config[section].copy_and_resolve_references()
    with stage.unlocked():
        for dotted, value in overrides.items():
            node = stage
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value
    return stage


def is_synthetic(config) -> bool:
    return config.ppo.data.source == "synthetic"


def eval_prompts(config, tokenizer) -> list:
    """``[{"id", "prompt"}]``: ``study.eval_prompts`` held-out prompts (seeded)."""
    s = config.study
    if is_synthetic(config):
        task = synthetic_task(config.ppo.data)
        texts = task.prompts(s.eval_prompts, seed=s.eval_seed)
    else:
        data_config = _stage_config(config, "ppo", **{"data.prompt_split": s.eval_prompt_split})
        texts = [p["text"] for p in prompt_set(data_config, tokenizer, need=s.eval_prompts)]
        keep = np.random.default_rng(s.eval_seed).choice(len(texts), s.eval_prompts, replace=False)
        texts = [texts[i] for i in sorted(keep)]
    return [{"id": f"eval-{i:04d}", "prompt": p} for i, p in enumerate(texts)]


def policy_samples(name: str, export: str, config, prompts, rm, rm_params, rm_tokenizer, path) -> list:
    """Sampled, RM-scored (and, on the synthetic task, gold-scored) rows of one policy, cached in ``path``."""
    if os.path.exists(path):
        return read_jsonl(path)
    s = config.study
    model, params = decoding_view(*load_pretrained(export))
    tokenizer = load_tokenizer(export)
    rows = generate_samples(model, params, tokenizer, prompts, samples_per_prompt=s.samples_per_prompt,
                            max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                            top_p=s.top_p, repetition_penalty=s.repetition_penalty,
                            template=config.ppo.data.prompt_template,
                            batch_size=s.batch_size, seed=s.seed, bucket=s.prompt_bucket,
                            desc=f"generate ({name})")
    rows = score_samples(rows, rm, rm_params, rm_tokenizer, template=s.rm_template,
                         batch_size=s.batch_size, buckets=tuple(s.rm_buckets),
                         append_eos=config.rm.rm.append_eos, source=name)
    if is_synthetic(config):
        task = synthetic_task(config.ppo.data)
        rows = [{**r, "gold": task.quality(r["prompt"], r["text"])} for r in rows]
    write_jsonl(rows, path)
    return rows


def check_judge(config) -> None:
    """``study.judge``: ``score`` (the standard reward model), or ``gold`` on the synthetic task."""
    allowed = ("gold", "score") if is_synthetic(config) else ("score",)
    if config.study.judge not in allowed:
        raise ConfigError(f"study.judge = {config.study.judge!r}: expected one of {allowed} for "
                          f"{config.ppo.data.source} data (an LLM judge: `rlhf-jax evaluate --judge chat`)")


def initial_policy(config, workdir: str, resume_with_changes: bool = False) -> str:
    """The SFT stage's export, or ``study.initial_policy`` when the config has no ``sft`` stage."""
    if "sft" in config:
        train_sft(config.sft, os.path.join(workdir, "sft"), resume_with_changes=resume_with_changes)
        return os.path.join(workdir, "sft", "export")
    return resolve_init_path(config.study.initial_policy)


def run_study(config, workdir: str, *, resume_with_changes: bool = False) -> dict:
    """Run every stage (resuming finished ones) and return the summary.

    The study's workdir is a contract as each stage's is (:func:`rlhf_jax.workdir.start_stage`):
    its ``config.json`` holds the whole study config, and a rerun with another one is refused
    unless ``resume_with_changes``; then the cached samples (made by the old policies or
    settings) are set aside as ``samples.before-changes`` and drawn again.
    """
    check_judge(config)
    methods = check_methods(config)
    wd, _ = start_stage(config, workdir, resume_with_changes=resume_with_changes)
    stage = lambda name: os.path.join(workdir, name)  # noqa: E731
    if wd.accepted_changes and os.path.isdir(stage("samples")) and wd.is_writer:
        aside, n = stage("samples.before-changes"), 1
        while os.path.exists(aside):
            n += 1
            aside = stage(f"samples.before-changes-{n}")
        os.rename(stage("samples"), aside)
        log.warning("the config changed: cached samples set aside as %s", aside)
    again = {"resume_with_changes": resume_with_changes}
    sft_export = initial_policy(config, workdir, resume_with_changes)
    rm_dirs = {"standard": stage("rm")}
    train_reward_model(config.rm, stage("rm"), **again)
    if config.study.with_bal:
        rm_dirs["BAL"] = stage("rm_bal")
        train_reward_model(_stage_config(config, "rm", **{"rm.intervention": "bal"}), stage("rm_bal"),
                           **again)
    rm_export = os.path.join(stage("rm"), "export")
    context = StudyContext(config, workdir, sft_export, stage("rm"), again)
    made = {}
    for variant in config.ppo_variants:
        ppo_config = context.ppo_config()
        with ppo_config.unlocked():
            with_ppo_variant(ppo_config, variant, config.ppo.shaping.target_length)
        made[variant] = run_ppo(context, f"ppo_{variant}", ppo_config)
    for name in methods:
        made[name] = STUDY_METHODS[name](context, name)
    exports = {"sft": sft_export, **{name: m.export for name, m in made.items()}}
    curves = {name: m.curves for name, m in made.items() if m.curves}
    if "odin" in methods:
        rm_dirs["ODIN"] = stage("rm_odin")
    rm, rm_params = load_scalar_model(rm_export)
    rm_tokenizer = load_tokenizer(rm_export)
    os.makedirs(stage("samples"), exist_ok=True)
    prompts = eval_prompts(config, load_tokenizer(sft_export))
    samples = {name: policy_samples(name, path, config, prompts, rm, rm_params, rm_tokenizer,
                                    os.path.join(stage("samples"), f"{name}.jsonl"))
               for name, path in exports.items()}
    judge = config.study.judge
    wins = win_rates(samples, judge, config.study.seed)
    tables = {f"Win rates against SFT, {judge} judge": win_table(wins, judge)}
    rm_wins = None
    if methods and judge != "score":  # the debiasing study: the reward model judges too
        rm_wins = win_rates(samples, "score", config.study.seed)
        tables["Win rates against SFT, reward-model judge"] = win_table(rm_wins, "score")
    figures = {}
    if methods and is_synthetic(config):
        os.makedirs(stage("report"), exist_ok=True)
        figures["Gold quality gain against length gain, one point per method"] = (
            plots.gold_vs_length_gain(gain_points(samples), os.path.join(
                stage("report"), "gold_vs_length_gain.png")))
    report = analyze(samples, stage("report"), baseline="sft", curves=curves,
                     bin_width=config.study.bin_width, max_length=config.study.bin_max_length,
                     nrg_normalizer=config.study.nrg_normalizer,
                     reward_models=rm_dirs, extra_tables=tables, extra_figures=figures)
    summary = summary_table(samples, report, wins, rm_wins)
    result = {"policies": summary, "reward_models": report["reward_models"], "judge": judge,
              "report": os.path.join(stage("report"), "report.html")}
    with open(os.path.join(workdir, "study.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def win_rates(samples: dict, judge: str, seed: int) -> list:
    """Each policy's comparison with SFT, sample for sample, by ``row[judge]``
    (:func:`rlhf_jax.evaluate.compare_policies`: win rate, its paired-bootstrap interval, the
    length-controlled rate)."""
    return [{"policy": name, **evaluate.compare_policies(rows, samples["sft"],
                                                         evaluate.ScoreJudge(judge), seed=seed)}
            for name, rows in samples.items() if name != "sft"]


def win_table(wins: list, judge: str) -> list:
    return [{"policy": w["policy"], f"win rate vs sft ({judge} judge)": w["win_rate"],
             "95% low": w["ci_low"], "95% high": w["ci_high"],
             "length-controlled": w["lc_win_rate"],
             "share not longer than sft": w["lc_share_a_not_longer"]} for w in wins]


def gain_points(samples: dict) -> list:
    """Per policy but SFT: its mean length gain and mean gold-quality gain over SFT."""
    def mean(rows, key):
        return float(np.mean([r[key] for r in rows]))
    base = samples["sft"]
    return [{"policy": name, "length_gain": mean(rows, "length") - mean(base, "length"),
             "gold_gain": mean(rows, "gold") - mean(base, "gold")}
            for name, rows in samples.items() if name != "sft"]


def summary_table(samples: dict, report: dict, wins: list, rm_wins: list = None) -> list:
    """One row per policy. With ``rm_wins`` (the debiasing study) also the gold gain over SFT,
    the gold win rate's 95% interval and the reward-model-judged win rate."""
    gains = {g["policy"]: g for g in report["gains"]}
    win = {w["policy"]: w for w in wins}
    rm_win = {w["policy"]: w for w in rm_wins or []}
    sft_gold = (float(np.mean([r["gold"] for r in samples["sft"]]))
                if "gold" in samples["sft"][0] else None)
    rows = []
    for name, rs in samples.items():
        gold = float(np.mean([r["gold"] for r in rs])) if "gold" in rs[0] else None
        row = {"policy": name, "length": float(np.mean([r["length"] for r in rs])),
               "rm_score": float(np.mean([r["score"] for r in rs])),
               "gold": gold,
               "nrg": gains[name]["nrg"] if name in gains else None,
               "nrg_over_delta_r": gains[name]["ratio"] if name in gains else None,
               "win_rate_vs_sft": win[name]["win_rate"] if name in win else None,
               "lc_win_rate_vs_sft": win[name]["lc_win_rate"] if name in win else None}
        if rm_wins is not None:
            row.update({"gold_gain": None if gold is None else gold - sft_gold,
                        "win_ci_low": win[name]["ci_low"] if name in win else None,
                        "win_ci_high": win[name]["ci_high"] if name in win else None,
                        "rm_win_rate_vs_sft": rm_win[name]["win_rate"] if name in rm_win else None})
        rows.append(row)
    return rows


def format_summary(result: dict) -> str:
    def f(v):
        return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
    judge = result.get("judge", "gold")
    if "rm_win_rate_vs_sft" in result["policies"][0]:  # the debiasing study
        head = ["policy", "length", "Δ gold vs SFT", f"win vs SFT ({judge}) [95% CI]",
                f"LC win ({judge})", "win vs SFT (RM)", "NRG/ΔR"]
        rows = [[r["policy"], f(r["length"]), f(r["gold_gain"]),
                 "—" if r["win_rate_vs_sft"] is None else
                 f"{r['win_rate_vs_sft']:.3f} [{r['win_ci_low']:.3f}, {r['win_ci_high']:.3f}]",
                 f(r["lc_win_rate_vs_sft"]), f(r["rm_win_rate_vs_sft"]), f(r["nrg_over_delta_r"])]
                for r in result["policies"]]
    else:
        head = ["policy", "length", "RM score", "gold quality", "NRG", "NRG/ΔR",
                f"win vs SFT ({judge})", f"LC win vs SFT ({judge})"]
        keys = ["policy", "length", "rm_score", "gold", "nrg", "nrg_over_delta_r",
                "win_rate_vs_sft", "lc_win_rate_vs_sft"]
        rows = [[f(r[k]) for k in keys] for r in result["policies"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    odin = "corr(quality head, length)" in result["reward_models"][0]
    lines += ["", "| reward model | eval accuracy | corr(reward, length) | train length heuristic |"
              + (" corr(quality head, length) |" if odin else ""),
              "|---|---|---|---|" + ("---|" if odin else "")]
    lines += [f"| {r['reward model']} | {f(r['eval accuracy'])} | {f(r['corr(reward, length)'])} | "
              f"{f(r['length heuristic (train)'])} |"
              + (f" {f(r['corr(quality head, length)'])} |" if odin else "")
              for r in result["reward_models"]]
    lines += ["", f"report: {result['report']}"]
    return "\n".join(lines)
