"""The bad inputs a user can hand ``rlhf-jax``, each with the message it must end with.

Shared by ``test_bad_inputs.py`` (every case in-process: a named error, no traceback, no input
file changed) and by the table of ``docs/reliability.md``, which this module prints from real
``rlhf-jax`` processes::

    python -m tests.reliability.bad_inputs > /tmp/bad_inputs.md

Each case is one class of bad input: the command (paths under ``$IN``, the inputs
:func:`make_inputs` writes), the regular expression its message must match, and the stage it
concerns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Callable, List

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs", "synthetic")
SYNTHETIC_VOCAB = 192  # the synthetic configs' vocabulary (configs/synthetic/rm.py)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str                           # the class of bad input, as the table names it
    argv: Callable[[str], List[str]]    # the command's arguments, given the inputs directory
    expect: str                         # a regular expression the message must match


def rm(inputs: str, workdir: str, *overrides: str) -> list:
    return ["train-rm", "--config", os.path.join(CONFIGS, "rm.py"),
            "--workdir", os.path.join(inputs, "workdirs", workdir), *overrides]


def local_data(inputs: str, workdir: str, data: str, *overrides: str) -> list:
    """The synthetic RM config reading a local pairs file (with the tiny model's tokenizer)."""
    return rm(inputs, workdir, "--config.data.source=local", f"--config.data.path={inputs}/{data}",
              f"--config.data.tokenizer={inputs}/lm", f"--config.data.data_dir={inputs}/tfds",
              *overrides)


def ppo(inputs: str, workdir: str, *overrides: str) -> list:
    return ["ppo", "--config", os.path.join(CONFIGS, "ppo.py"),
            "--workdir", os.path.join(inputs, "workdirs", workdir),
            f"--config.model.init={inputs}/lm", *overrides]


CASES = [
    # configs and overrides
    Case("misspelt config key", lambda i: rm(i, "typo", "--config.rm.lrr=1e-4"),
         r"unknown config key 'rm\.lrr'"),
    Case("override of the wrong type", lambda i: rm(i, "type", "--config.rm.lr=fast"),
         r"config key 'rm\.lr'.*float.*'fast'"),
    Case("config file that does not exist",
         lambda i: ["train-rm", "--config", f"{i}/nope.py", "--workdir", f"{i}/workdirs/x"],
         r"nope\.py: no such config file"),
    Case("config file without get_config()",
         lambda i: ["train-rm", "--config", f"{i}/empty_config.py", "--workdir", f"{i}/workdirs/x"],
         r"empty_config\.py: defines no get_config\(\)"),
    Case("unknown data.source", lambda i: rm(i, "source", "--config.data.source=webgtp"),
         r"data\.source = 'webgtp': no such source \(expected 'synthetic' or one of"),
    Case("model.dtype that is not a dtype", lambda i: rm(i, "dtype", "--config.model.dtype=float33"),
         r"model\.dtype = 'float33': not a dtype"),
    Case("model.init path that does not exist",
         lambda i: rm(i, "init", f"--config.model.init={i}/no_such_model"),
         r"model\.init = '.*no_such_model': no such file or directory"),
    Case("model.overrides with a checkpoint", lambda i: rm(i, "overrides", f"--config.model.init={i}/lm"),
         r"model\.overrides apply to presets only; model\.init = '.*lm' is a checkpoint"),
    Case("ppo.batch_size not a multiple of ppo.mini_batch_size",
         lambda i: ppo(i, "minibatch", f"--config.reward.model={i}/rm",
                       "--config.ppo.batch_size=12", "--config.ppo.mini_batch_size=8"),
         r"ppo\.batch_size 12 is not a multiple of ppo\.mini_batch_size 8"),
    Case("unknown dpo.loss",
         lambda i: ["dpo", "--config", os.path.join(CONFIGS, "dpo.py"), "--workdir",
                    f"{i}/workdirs/dpo_loss", f"--config.model.init={i}/lm", "--config.dpo.loss=ipo"],
         r"dpo\.loss = 'ipo': unknown; expected one of \['dpo', 'rdpo', 'simpo'\]"),
    Case("reward.calibration without a fitted calibration",
         lambda i: ppo(i, "calibration", f"--config.reward.model={i}/rm",
                       "--config.reward.calibration=lowess"),
         r"reward\.calibration='lowess': .*rm has no calibration\.json; train the reward model "
         r"with rm\.calibration='lowess'"),
    # data files
    Case("empty data file", lambda i: local_data(i, "empty", "empty.jsonl"),
         r"empty\.jsonl: no preference pairs in it"),
    Case("broken JSON line", lambda i: local_data(i, "broken", "broken.jsonl"),
         r"broken\.jsonl row 1 \(line 2\): broken JSON \(Expecting ',' delimiter at column 30\)"),
    Case("data row without a field", lambda i: local_data(i, "field", "no_rejected.jsonl"),
         r"no_rejected\.jsonl row 0 \(line 1\): key 'rejected' is missing"),
    Case("data row whose field is not text", lambda i: local_data(i, "number", "number.jsonl"),
         r"number\.jsonl row 1 \(line 2\): key 'chosen' is int 3"),
    Case("non-UTF-8 line deep in a data file", lambda i: local_data(i, "utf8", "latin1.jsonl"),
         r"latin1\.jsonl row 59 \(line 60\): not UTF-8 text \(byte 0xe9 at column \d+\)"),
    Case("data file of an unsupported type", lambda i: local_data(i, "txt", "pairs.txt"),
         r"pairs\.txt: unsupported file type"),
    Case("data path that does not exist", lambda i: local_data(i, "missing", "missing.jsonl"),
         r"missing\.jsonl: no such file or directory"),
    # workdirs
    Case("workdir under a file",
         lambda i: ["train-rm", "--config", os.path.join(CONFIGS, "rm.py"),
                    "--workdir", f"{i}/a_file/run"],
         r"workdir .*a_file/run: cannot create it \(Not a directory\)"),
    Case("workdir on a read-only file system",
         lambda i: ["train-rm", "--config", os.path.join(CONFIGS, "rm.py"),
                    "--workdir", "/sys/rlhf-jax-run"],
         r"workdir /sys/rlhf-jax-run: cannot create it \((Operation not permitted|Read-only file "
         r"system|Permission denied)\)"),
    # models
    Case("truncated safetensors file", lambda i: ["score", "--model", f"{i}/rm_truncated",
                                                  "--in", f"{i}/samples.jsonl"],
         r"rm_truncated/model\.safetensors: not a readable safetensors file .*truncated"),
    Case("model directory without config.json",
         lambda i: ["generate", "--model", f"{i}/tokenizer_only", "--prompt", "the cat"],
         r"tokenizer_only.*config\.json"),
    Case("language model given as reward.model", lambda i: ppo(i, "role", f"--config.reward.model={i}/lm"),
         r"reward\.model' = '.*lm': its config\.json says architectures \['LlamaForCausalLM'\] "
         r"\(a language model.*expected a reward-model export"),
    Case("reward.model that does not exist",
         lambda i: ppo(i, "norm", f"--config.reward.model={i}/no_such_rm"),
         r"reward\.model' = '.*no_such_rm': no such directory"),
    # samples files (score, evaluate, analyze)
    Case("non-UTF-8 samples file (score)",
         lambda i: ["score", "--model", f"{i}/rm", "--in", f"{i}/samples_latin1.jsonl"],
         r"samples_latin1\.jsonl row 3 \(line 4\): not UTF-8 text \(byte 0xff at column \d+\)"),
    Case("broken JSON in a samples file (score)",
         lambda i: ["score", "--model", f"{i}/rm", "--in", f"{i}/samples_broken.jsonl"],
         r"samples_broken\.jsonl row 2 \(line 3\): broken JSON"),
    Case("samples without text (score)",
         lambda i: ["score", "--model", f"{i}/rm", "--in", f"{i}/samples_no_text.jsonl"],
         r"samples_no_text\.jsonl row 2 \(line 3\): key 'text' is missing"),
    Case("samples without the judged score (evaluate)",
         lambda i: ["evaluate", "--a", f"{i}/samples.jsonl", "--b", f"{i}/samples.jsonl"],
         r"samples\.jsonl row 0 \(line 1\): key 'score' is missing"),
    Case("a score that is not a number (evaluate)",
         lambda i: ["evaluate", "--a", f"{i}/scored.jsonl", "--b", f"{i}/scored_text.jsonl"],
         r"scored_text\.jsonl row 0 \(line 1\): key 'score' is str 'high' \(expected a number\)"),
    Case("unpaired samples (evaluate)",
         lambda i: ["evaluate", "--a", f"{i}/scored.jsonl", "--b", f"{i}/scored_half.jsonl"],
         r"scored\.jsonl vs .*scored_half\.jsonl: 3 of A's samples have no counterpart in B"),
    Case("samples without scores (analyze)",
         lambda i: ["analyze", "--samples", f"a={i}/scored.jsonl", "--samples",
                    f"b={i}/samples.jsonl", "--out", f"{i}/report"],
         r"policy 'b': 6 samples have no 'score' \(first at line 1\); run `rlhf-jax score` first"),
    Case("chat judge without an endpoint (evaluate)",
         lambda i: ["evaluate", "--a", f"{i}/scored.jsonl", "--b", f"{i}/scored.jsonl",
                    "--judge", "chat"],
         r"the chat judge needs an endpoint and a model: --base-url and --judge-model"),
    Case("prompts file that does not exist (generate)",
         lambda i: ["generate", "--model", f"{i}/lm", "--prompts", f"{i}/no_prompts.jsonl",
                    "--out", f"{i}/out.jsonl"],
         r"no_prompts\.jsonl: no such file \(expected a \.jsonl"),
    Case("fit: a mesh that is not three sizes",
         lambda i: ["fit", "--config", os.path.join(CONFIGS, "rm.py"), "--topology", "v5e-8",
                    "--mesh", "2,4"],
         r"--mesh '2,4': expected three sizes DATA,FSDP,TENSOR"),
]


def sample_rows(n_prompts: int = 3, samples: int = 2, score: bool = False) -> list:
    rows = []
    for p in range(n_prompts):
        for s in range(samples):
            row = {"prompt_id": f"p{p}", "sample_id": s, "prompt": "the cat",
                   "text": "sat on the mat" * (s + 1), "length": 4 * (s + 1)}
            if score:
                row["score"] = float(p + s)
            rows.append(row)
    return rows


def write_lines(path: str, lines: list) -> None:
    with open(path, "wb") as f:
        for line in lines:
            f.write((json.dumps(line) if isinstance(line, dict) else line).encode()
                    if not isinstance(line, bytes) else line)
            f.write(b"\n")


def make_inputs(root: str) -> str:
    """Every input the cases read, under ``root``: a tiny LM and reward-model export (with a
    word tokenizer), damaged copies, data and samples files."""
    import jax

    from rlhf_jax.models import CausalLM, ScalarModel, config_from_hf, init_params, save_pretrained
    from rlhf_jax.models.build import save_scalar_model
    from rlhf_jax.models.presets import preset_config
    from tests.test_cli import word_tokenizer

    os.makedirs(os.path.join(root, "workdirs"), exist_ok=True)
    cfg = config_from_hf({**preset_config("tiny-llama"), "vocab_size": SYNTHETIC_VOCAB})
    lm = CausalLM(cfg)
    save_pretrained(lm, init_params(lm, jax.random.key(0)), f"{root}/lm", tokenizer=word_tokenizer())
    scalar = ScalarModel(cfg)
    save_scalar_model(scalar, init_params(scalar, jax.random.key(1)), f"{root}/rm",
                      tokenizer=word_tokenizer())
    shutil.copytree(f"{root}/rm", f"{root}/rm_truncated")
    with open(f"{root}/rm/model.safetensors", "rb") as f:
        whole = f.read()
    with open(f"{root}/rm_truncated/model.safetensors", "wb") as f:
        f.write(whole[: len(whole) // 2])
    os.makedirs(f"{root}/tokenizer_only")
    for name in os.listdir(f"{root}/lm"):
        if name.startswith("tokenizer"):
            shutil.copy(f"{root}/lm/{name}", f"{root}/tokenizer_only/{name}")
    with open(f"{root}/empty_config.py", "w") as f:
        f.write('"""A config file someone forgot to finish."""\n')
    with open(f"{root}/a_file", "w") as f:
        f.write("not a directory\n")
    pair = {"prompt": "the cat", "chosen": "sat on the mat", "rejected": "ran"}
    write_lines(f"{root}/empty.jsonl", [])
    write_lines(f"{root}/broken.jsonl", [pair, '{"prompt": "a", "chosen": "b"'])
    write_lines(f"{root}/no_rejected.jsonl", [{"prompt": "a", "chosen": "b"}])
    write_lines(f"{root}/number.jsonl", [pair, {**pair, "chosen": 3}])
    long_pair = {**pair, "prompt": "the cat " * 40}  # long lines: the error is past a read buffer
    write_lines(f"{root}/latin1.jsonl", [long_pair] * 59 + [
        json.dumps({**long_pair, "chosen": "caf\u00e9"}).replace("\\u00e9", "\u00e9")
        .encode("latin-1")] + [long_pair] * 10)
    with open(f"{root}/pairs.txt", "w") as f:
        f.write("the cat sat\n")
    rows = sample_rows()
    write_lines(f"{root}/samples.jsonl", rows)
    write_lines(f"{root}/samples_latin1.jsonl", rows[:3] + [
        json.dumps(rows[3]).encode().replace(b"mat", b"m\xffat")] + rows[4:])
    write_lines(f"{root}/samples_broken.jsonl", rows[:2] + ['{"prompt_id": "p1", '] + rows[3:])
    write_lines(f"{root}/samples_no_text.jsonl",
                rows[:2] + [{k: v for k, v in rows[2].items() if k != "text"}] + rows[3:])
    scored = sample_rows(score=True)
    write_lines(f"{root}/scored.jsonl", scored)
    write_lines(f"{root}/scored_text.jsonl", [{**r, "score": "high"} for r in scored])
    write_lines(f"{root}/scored_half.jsonl", scored[:3])
    return root


def snapshot(root: str) -> dict:
    """sha256 of every file under ``root`` except the workdirs and TFDS caches cases create."""
    digests = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in ("workdirs", "tfds", "report")]
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def changed_files(before: dict, after: dict) -> list:
    """Files of ``before`` that are gone or different in ``after`` (new files are allowed)."""
    return sorted(k for k, v in before.items() if after.get(k) != v)


def message_of(stderr: str) -> str:
    """The command's own message: stderr from its ``rlhf-jax`` line on."""
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("rlhf-jax "):
            return "\n".join(lines[i:])
    return ""


def run_cli(argv: list, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["rlhf-jax", *argv], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=600)


def table(root: str) -> str:
    """Run every case as a real ``rlhf-jax`` process; the markdown table of what the user saw."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    env["PYTHONPATH"] = REPO
    rows = ["| bad input | command | exit | message (stderr) | other stderr lines | input files "
            "unchanged |", "|---|---|---|---|---|---|"]
    for case in CASES:
        argv = case.argv(root)
        before = snapshot(root)
        start = time.perf_counter()
        done = run_cli(argv, env)
        elapsed = time.perf_counter() - start
        changed = changed_files(before, snapshot(root))
        message = message_of(done.stderr)
        ok = bool(re.search(case.expect, message)) and "Traceback" not in done.stderr
        noise = [line for line in done.stderr.splitlines()
                 if line.strip() and line not in message.splitlines()
                 and " INFO " not in line and not re.match(r"^\d{4}-\d\d-\d\d ", line)]
        shown = " ".join(["rlhf-jax", *argv]).replace(root, "$IN").replace(REPO + "/", "")
        text = message.replace(root, "$IN").replace("\n", " ").replace("|", "\\|")
        rows.append(f"| {case.name} | `{shown}` | {done.returncode} | {text} "
                    f"| {len(noise)} | {'yes' if not changed else 'NO: ' + ', '.join(changed)} |")
        print(f"{case.name}: exit {done.returncode} in {elapsed:.1f} s, "
              f"{'as expected' if ok else 'UNEXPECTED'}", file=sys.stderr)
        if not ok:
            print(done.stderr[-3000:], file=sys.stderr)
    return "\n".join(rows)


if __name__ == "__main__":
    import tempfile
    root = make_inputs(tempfile.mkdtemp(prefix="rlhf-jax-bad-inputs-"))
    print(table(root))
