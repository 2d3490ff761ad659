"""Running ``rlhf-jax`` as a user would, and hurting it: kill -9, SIGTERM, corrupted files.

Every run is a real ``python -m rlhf_jax.cli`` process on a synthetic config, sharing one JAX
compilation cache so that a relaunch does not recompile. Progress is read from the workdir
itself (``metrics.jsonl`` with ``log_every=1``, the checkpoint directory), as an operator would.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs", "synthetic")
TIMING_KEYS = ("time/",)


def cli_env(cache_dir: str) -> dict:
    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               JAX_COMPILATION_CACHE_DIR=cache_dir,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


class Run:
    """One ``rlhf-jax`` process; its stdout and stderr go to files beside the workdir."""

    def __init__(self, args: list, workdir: str, env: dict, name: str):
        self.workdir = workdir
        self.args = args
        logs = workdir.rstrip("/") + ".logs"
        os.makedirs(logs, exist_ok=True)
        self.out_path = os.path.join(logs, f"{name}.out")
        self.err_path = os.path.join(logs, f"{name}.err")
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "rlhf_jax.cli", *args],
                                         cwd=REPO, env=env, stdout=out, stderr=err)

    def wait(self, timeout: float = 600) -> int:
        return self.proc.wait(timeout=timeout)

    @property
    def stdout(self) -> str:
        with open(self.out_path) as f:
            return f.read()

    @property
    def stderr(self) -> str:
        with open(self.err_path) as f:
            return f.read()

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)


def stage_args(command: str, config: str, workdir: str, overrides: list) -> list:
    return [command, "--config", config, "--workdir", workdir, *overrides]


def logged_step(workdir: str) -> int:
    """The last step in ``metrics.jsonl`` (0 before any), skipping a line being written."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    step = 0
    with open(path, "rb") as f:
        for line in f:
            try:
                step = max(step, int(json.loads(line)["step"]))
            except (ValueError, KeyError):
                pass
    return step


def stale_metrics(workdir: str, start: int):
    """The inode of ``metrics.jsonl`` when a run resuming from checkpoint ``start`` will replace
    it (it holds rows after ``start``, or an unreadable line), else ``None``.

    Until that run has cut the file back, those rows are the killed run's, not the new one's:
    see :func:`logged_step_since`."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        for line in f:
            try:
                if int(json.loads(line)["step"]) > start:
                    return os.stat(path).st_ino
            except (ValueError, KeyError, TypeError):
                return os.stat(path).st_ino
    return None


def logged_step_since(workdir: str, stale_inode) -> int:
    """:func:`logged_step`, counting only what the newly launched run wrote: 0 while
    ``metrics.jsonl`` is still the file :func:`stale_metrics` found stale."""
    path = os.path.join(workdir, "metrics.jsonl")
    if stale_inode is not None and os.path.exists(path) and os.stat(path).st_ino == stale_inode:
        return 0
    return logged_step(workdir)


def wait_until(run: Run, predicate, timeout: float = 300, poll: float = 0.002) -> bool:
    """Poll ``predicate()`` until true (``True``) or the process ends first (``False``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if run.proc.poll() is not None:
            return False
        time.sleep(poll)
    raise TimeoutError(f"{run.args}: condition not met in {timeout} s")


def temporary_checkpoints(workdir: str) -> set:
    """Orbax's temporary directories in the checkpoint directory (a save in progress, or one a
    kill cut short)."""
    return set(glob.glob(os.path.join(workdir, "checkpoints", "*tmp*")))


def saving_now(workdir: str, earlier: set = frozenset()) -> bool:
    """An orbax save in progress: a temporary directory exists that is not among ``earlier``
    (those left by a killed run)."""
    return bool(temporary_checkpoints(workdir) - set(earlier))


def committed_steps(workdir: str) -> list:
    return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def export_tensors(export: str) -> dict:
    """Every tensor of an export directory's safetensors files, by name."""
    from safetensors.numpy import load_file
    tensors = {}
    for path in sorted(glob.glob(os.path.join(export, "*.safetensors"))):
        tensors.update(load_file(path))
    assert tensors, f"no safetensors in {export}"
    return tensors


def assert_same_export(a: str, b: str) -> None:
    ta, tb = export_tensors(a), export_tensors(b)
    assert sorted(ta) == sorted(tb)
    for name in ta:
        assert ta[name].dtype == tb[name].dtype and ta[name].shape == tb[name].shape, name
        assert np.array_equal(ta[name].view(np.uint8), tb[name].view(np.uint8)), \
            f"tensor {name} differs between {a} and {b}"


def metric_rows(workdir: str) -> list:
    """``metrics.jsonl`` rows without the timing keys (they differ run to run)."""
    rows = []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            rows.append({k: v for k, v in row.items() if not k.startswith(TIMING_KEYS)})
    return rows


def tear_metrics(workdir: str) -> None:
    """Append half a row without its newline: what a kill in the middle of a write leaves."""
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write('{"step": 99999, "split": "tr')


def truncate_latest_checkpoint(workdir: str) -> int:
    """Cut the largest data file of the newest checkpoint in half; returns its step."""
    step = committed_steps(workdir)[-1]
    files = [p for p in glob.glob(os.path.join(workdir, "checkpoints", str(step), "**", "d", "*"),
                                  recursive=True) if os.path.isfile(p)]
    path = max(files, key=os.path.getsize)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    return step


SIGKILL, SIGTERM, SIGINT = signal.SIGKILL, signal.SIGTERM, signal.SIGINT
