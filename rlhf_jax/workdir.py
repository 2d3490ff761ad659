"""A stage's working directory: resolved config, metrics (JSONL + TensorBoard), checkpoints, export.

Layout::

    WORKDIR/config.json        the resolved config (after overrides)
    WORKDIR/metrics.jsonl      one JSON object per logged step: {"step", "split", metrics...}
    WORKDIR/tensorboard/       TensorBoard event files (tensorboardX: no TensorFlow needed)
    WORKDIR/checkpoints/       orbax checkpoints (latest + best)
    WORKDIR/export/            the final model in HF format (+ tokenizer)
    WORKDIR/result.json        the stage's final summary, written last (its presence = done)

Only process 0 writes files other than checkpoints (orbax coordinates those).
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional

import jax


class Workdir:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.is_writer = jax.process_index() == 0
        os.makedirs(self.path, exist_ok=True)
        self._tensorboard = None

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
        with open(path) as f:
            return json.load(f)

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
        """The rows of ``metrics.jsonl`` (of one ``split`` when given)."""
        path = self.file("metrics.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return [r for r in rows if split is None or r["split"] == split]

    def _writer(self):
        if self._tensorboard is None:
            from tensorboardX import SummaryWriter
            self._tensorboard = SummaryWriter(self.file("tensorboard"))
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


def start_stage(config, path: str) -> tuple:
    """``(workdir, finished result or None)``; a new or resumed stage records its resolved config."""
    from rlhf_jax.config import save_config
    wd = Workdir(path)
    done = wd.read_json("result.json")
    if done is None and wd.is_writer:
        save_config(config, wd.file("config.json"))
    return wd, done
