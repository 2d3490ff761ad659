"""A stage's working directory: resolved config, metrics (JSONL + TensorBoard), checkpoints, export.

Layout::

    WORKDIR/config.json        the resolved config (after overrides), written once (replaced
                               only while there are no metrics, checkpoints or export)
    WORKDIR/config_changes.jsonl  changes accepted on a rerun (--resume-with-changes), if any
    WORKDIR/metrics.jsonl      one JSON object per logged step: {"step", "split", metrics...}
    WORKDIR/metrics.dropped.jsonl  rows taken out of metrics.jsonl on resume (see below)
    WORKDIR/tensorboard/       TensorBoard event files (tensorboardX: no TensorFlow needed)
    WORKDIR/checkpoints/       orbax checkpoints (the last K + the best; N.unreadable: set aside)
    WORKDIR/export/            the final model in HF format (+ tokenizer)
    WORKDIR/result.json        the stage's final summary, written last (its presence = done)

The workdir is a contract (:func:`start_stage`): a rerun whose resolved config differs from
``config.json`` in a key that changes results is refused with the differing keys, unless the
caller allows it (``--resume-with-changes``), and then the change is appended to
``config_changes.jsonl``; a finished workdir returns its result, and refuses another config.

Metrics are exact over a resumed run (:meth:`Workdir.resume_metrics`): rows logged after the
checkpoint a run resumes from are moved to ``metrics.dropped.jsonl`` (the resumed run logs those
steps again), as is a torn last line (a kill mid-write), so ``metrics.jsonl`` never holds a step
twice and TensorBoard purges the same steps.

Only process 0 writes files other than checkpoints (orbax coordinates those).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Optional

import jax

from rlhf_jax.config import ConfigError

log = logging.getLogger(__name__)

RESULT_NEUTRAL_KEYS = ("log_every", "save_every", "checkpoint.keep_latest")
"""Config keys (dotted suffixes) a rerun may change without changing what the stage computes:
how often it logs and saves, and how many checkpoints it keeps."""


KEYS_ADDED_LATER = {
    "rm.calibration": "none", "rm.calibration_frac": 0.3, "rm.calibration_it": 3,
    "reward.calibration": "none", "ppo.advantage_estimator": "gae", "ppo.group_size": 1,
    "rm.loss": "bradley_terry", "rm.odin.length_coef": 1.0, "rm.odin.ortho_coef": 1.0,
    "reward.head": "sum",
}
"""Config keys (dotted suffixes) added after workdirs already existed, with the value that does
what the code did before they existed: a workdir recorded without such a key computed exactly
that, so the key at that value is no difference (an older finished run stays usable)."""


class WorkdirError(ConfigError):
    """A workdir that cannot be used as asked: another config, a finished run, unwritable."""


class Workdir:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.is_writer = jax.process_index() == 0
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as err:
            raise WorkdirError(f"workdir {self.path}: cannot create it ({err.strerror})") from None
        if self.is_writer and not os.access(self.path, os.W_OK):
            raise WorkdirError(f"workdir {self.path}: not writable (config, metrics, checkpoints "
                               "and the export go there); choose another --workdir")
        self._tensorboard = None
        self._purge_step = None
        self.accepted_changes = []  # (key, recorded, now) a rerun was allowed to change

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @property
    def checkpoints(self) -> str:
        return self.file("checkpoints")

    @property
    def export(self) -> str:
        return self.file("export")

    def write_json(self, name: str, obj) -> None:
        """Atomically write ``obj`` as JSON to ``WORKDIR/name``."""
        if not self.is_writer:
            return
        path = self.file(name)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=_jsonable)
        os.replace(tmp, path)

    def read_json(self, name: str) -> Optional[dict]:
        path = self.file(name)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise WorkdirError(f"{path}: not valid JSON ({err}); it is written atomically, so "
                               "something else changed it") from None

    def log_metrics(self, step: int, metrics: dict, split: str = "train") -> None:
        """Append scalar ``metrics`` to ``metrics.jsonl`` and the TensorBoard events."""
        if not self.is_writer:
            return
        scalars = {k: float(v) for k, v in metrics.items() if _is_scalar(v)}
        with open(self.file("metrics.jsonl"), "a") as f:
            f.write(json.dumps({"step": int(step), "split": split, **scalars},
                               default=_jsonable) + "\n")
        writer = self._writer()
        for key, value in scalars.items():
            if math.isfinite(value):
                writer.add_scalar(f"{split}/{key}", value, int(step))
        writer.flush()

    def read_metrics(self, split: Optional[str] = None) -> list:
        """The rows of ``metrics.jsonl`` (of one ``split`` when given); a line that is not a JSON
        object (a torn last line) is skipped with a warning naming it."""
        rows, bad = self._metrics_lines()
        for number, _ in bad:
            log.warning("%s line %d: not a JSON metrics row; skipped", self.file("metrics.jsonl"),
                        number)
        return [r for r in rows if split is None or r["split"] == split]

    def _metrics_lines(self) -> tuple:
        """``(rows, [(line number, text) of unreadable lines])`` of ``metrics.jsonl``."""
        path = self.file("metrics.jsonl")
        rows, bad = [], []
        if not os.path.exists(path):
            return rows, bad
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw)
                    if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                        raise ValueError("no integer 'step'")
                    rows.append(row)
                except (ValueError, UnicodeDecodeError):
                    bad.append((number, raw.decode("utf-8", "replace")))
        return rows, bad

    def resume_metrics(self, step: int) -> None:
        """Before a run continues from the checkpoint of ``step`` (0: from the start): move rows
        of later steps, and unreadable lines, out of ``metrics.jsonl`` into
        ``metrics.dropped.jsonl``, and have TensorBoard purge steps after ``step``."""
        if not self.is_writer:
            return
        path = self.file("metrics.jsonl")
        rows, bad = self._metrics_lines()
        keep = [r for r in rows if r["step"] <= step]
        later = [r for r in rows if r["step"] > step]
        if later or bad:
            with open(self.file("metrics.dropped.jsonl"), "a") as f:
                for row in later:
                    f.write(json.dumps({**row, "dropped": f"after checkpoint {step}"}) + "\n")
                for number, text in bad:
                    f.write(json.dumps({"dropped": f"unreadable line {number}",
                                        "text": text}) + "\n")
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in keep)
            os.replace(tmp, path)
            for number, _ in bad:
                log.warning("%s line %d: not a JSON metrics row (a write cut short); moved to "
                            "metrics.dropped.jsonl", path, number)
            if later:
                log.info("%s: %d rows after step %d moved to metrics.dropped.jsonl (this run "
                         "logs those steps again)", path, len(later), step)
        if rows or bad:
            self._purge_step = step + 1

    def _writer(self):
        if self._tensorboard is None:
            from tensorboardX import SummaryWriter
            self._tensorboard = SummaryWriter(self.file("tensorboard"), purge_step=self._purge_step)
        return self._tensorboard

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def _is_scalar(value) -> bool:
    try:
        return getattr(value, "ndim", 0) == 0 and not isinstance(value, (str, dict, list, tuple))
    except TypeError:
        return False


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return repr(value)


def resolved_config(config) -> dict:
    """``config`` as ``config.json`` holds it (JSON types: tuples become lists)."""
    return json.loads(json.dumps(config.to_dict(), sort_keys=True, default=repr))


def _flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


ABSENT = "<absent>"


def config_differences(recorded: dict, current: dict) -> list:
    """``[(dotted key, recorded value, current value)]`` where two resolved configs differ."""
    a, b = _flatten(recorded), _flatten(current)
    return [(k, a.get(k, ABSENT), b.get(k, ABSENT)) for k in sorted(set(a) | set(b))
            if a.get(k, ABSENT) != b.get(k, ABSENT)
            and not (k not in a and _added_later_at_its_old_behaviour(k, b[k]))]


def _added_later_at_its_old_behaviour(key: str, value) -> bool:
    return any((key == k or key.endswith("." + k)) and value == old
               for k, old in KEYS_ADDED_LATER.items())


def changes_results(key: str) -> bool:
    return not any(key == k or key.endswith("." + k) for k in RESULT_NEUTRAL_KEYS)


def format_differences(diffs: list) -> str:
    return "; ".join(f"{k}: {json.dumps(old)} → {json.dumps(new)}" for k, old, new in diffs)


def has_progress(path: str) -> bool:
    """Whether a workdir holds anything a run computed: a metrics row, a checkpoint (committed
    or not, readable or set aside) or an export."""
    metrics = os.path.join(path, "metrics.jsonl")
    if os.path.exists(metrics) and os.path.getsize(metrics) > 0:
        return True
    checkpoints = os.path.join(path, "checkpoints")
    if os.path.isdir(checkpoints) and os.listdir(checkpoints):
        return True
    return os.path.exists(os.path.join(path, "export"))


def start_stage(config, path: str, *, resume_with_changes: bool = False) -> tuple:
    """``(workdir, finished result or None)`` under the workdir contract.

    A new workdir records the resolved config in ``config.json`` (once). A rerun compares the
    config with it: a difference in a key that changes results (any key but
    :data:`RESULT_NEUTRAL_KEYS`) raises :class:`WorkdirError` listing the keys, unless
    ``resume_with_changes``; accepted changes (and result-neutral ones) are appended to
    ``config_changes.jsonl`` and logged. A finished workdir (``result.json``) returns its result,
    and refuses a config that differs in a result-changing key even with
    ``resume_with_changes``: its result was computed with the recorded one. A workdir without
    progress (:func:`has_progress`: an attempt that stopped on bad input before its first metric
    or checkpoint) takes the new config, with a log line.
    """
    from rlhf_jax.config import save_config
    wd = Workdir(path)
    done = wd.read_json("result.json")
    recorded = wd.read_json("config.json")
    if recorded is None:
        if wd.is_writer:
            save_config(config, wd.file("config.json"))
        return wd, done
    diffs = config_differences(recorded, resolved_config(config))
    changing = [d for d in diffs if changes_results(d[0])]
    if changing and done is None and not has_progress(wd.path):
        # an earlier attempt stopped before its first metric or checkpoint (bad input, a typo):
        # nothing was computed with the recorded config, so the corrected one replaces it
        if wd.is_writer:
            save_config(config, wd.file("config.json"))
        log.warning("workdir %s: no metrics or checkpoints yet; its config.json is replaced by "
                    "this run's (%s)", wd.path, format_differences(changing))
        return wd, done
    if done is not None:
        if changing:
            raise WorkdirError(
                f"workdir {wd.path} is finished, and its result was computed with another "
                f"config; differing keys: {format_differences(changing)}. Use a new --workdir "
                "for the new config")
        log.warning("workdir %s is already finished: returning its result.json (delete that file "
                    "to rerun the stage)", wd.path)
        return wd, done
    if changing and not resume_with_changes:
        raise WorkdirError(
            f"workdir {wd.path} holds a run with another config; differing keys: "
            f"{format_differences(changing)}. Rerun with the recorded config "
            f"({wd.file('config.json')}), use a new --workdir, or pass --resume-with-changes "
            "to continue with the new values (the change is logged)")
    wd.accepted_changes = diffs
    if diffs and wd.is_writer:
        with open(wd.file("config_changes.jsonl"), "a") as f:
            f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "changes": [{"key": k, "recorded": a, "now": b}
                                            for k, a, b in diffs]}) + "\n")
        log.warning("workdir %s: resuming with a changed config (%s); recorded in "
                    "config_changes.jsonl", wd.path, format_differences(diffs))
    return wd, done
