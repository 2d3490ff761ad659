"""Orbax checkpoints: the last K and the best kept; unreadable ones set aside on restore."""

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.checkpoint import Checkpoints, fingerprint
from rlhf_jax.models.errors import CheckpointError


@pytest.mark.parametrize("mode,values,best", [("max", (0.9, 0.5, 0.4, 0.3), 1),
                                              ("min", (0.9, 0.3, 0.4, 0.5), 2)])
@pytest.mark.parametrize("keep", [1, 2])
def test_best_and_last_k_are_kept(tmp_path, mode, values, best, keep):
    ckpt = Checkpoints(str(tmp_path), keep_latest=keep, best_metric="m", best_mode=mode)
    for step, value in enumerate(values, 1):
        ckpt.save(step, {"x": jnp.full((3,), float(step))}, {"m": value})
    assert ckpt.best_step() == best and ckpt.latest_step() == 4
    want = {best} | set(range(5 - keep, 5))
    assert sorted(int(d) for d in os.listdir(tmp_path) if d.isdigit()) == sorted(want)
    restored = ckpt.restore(best, {"x": jnp.zeros((3,))})
    np.testing.assert_array_equal(np.asarray(restored["x"]), float(best))
    ckpt.close()
    again = Checkpoints(str(tmp_path), keep_latest=keep, best_metric="m", best_mode=mode)
    assert again.best_step() == best and again.latest_step() == 4


def _state(step):
    return {"w": jnp.arange(4096.0) * step, "n": jnp.int32(step),
            "key": jax.random.key_data(jax.random.key(step))}


def _saved(tmp_path, steps=(1, 2, 3)):
    ckpt = Checkpoints(str(tmp_path), keep_latest=len(steps))
    for step in steps:
        ckpt.save(step, _state(step))
    ckpt.close()
    return Checkpoints(str(tmp_path), keep_latest=len(steps))


def _largest_data_file(step_dir):
    files = [f for f in glob.glob(os.path.join(step_dir, "**", "d", "*"), recursive=True)
             if os.path.isfile(f)]
    return max(files, key=os.path.getsize)


def _truncate(step_dir):
    path = _largest_data_file(step_dir)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _bad_metadata(step_dir):
    with open(os.path.join(step_dir, "default", "_METADATA"), "w") as f:
        f.write("{")


def _remove_data(step_dir):
    os.remove(_largest_data_file(step_dir))


@pytest.mark.parametrize("corrupt", [_truncate, _bad_metadata, _remove_data],
                         ids=["truncated data", "bad _METADATA", "missing data file"])
def test_unreadable_latest_is_set_aside_and_the_previous_restored(tmp_path, corrupt, caplog):
    ckpt = _saved(tmp_path)
    corrupt(os.path.join(tmp_path, "3"))
    step, state = ckpt.restore_latest(_state(0))
    assert step == 2
    np.testing.assert_array_equal(np.asarray(state["w"]), np.asarray(_state(2)["w"]))
    assert os.path.isdir(tmp_path / "3.unreadable") and not os.path.exists(tmp_path / "3")
    assert [s for s, _ in ckpt.set_aside] == [3]
    assert "3.unreadable" in caplog.text and "unreadable" in ckpt.set_aside[0][1]
    ckpt.save(3, _state(3))  # the step is free again: the resumed run saves it anew
    assert ckpt.latest_step() == 3


def test_a_flipped_bit_is_caught_by_the_fingerprint(tmp_path):
    """A value changed on disk (no read error) fails the fingerprint check."""
    ckpt = _saved(tmp_path)
    state = _state(3)
    changed = {**state, "w": state["w"].at[17].set(jnp.nextafter(state["w"][17], 1e9))}
    assert fingerprint(changed) != fingerprint(state)
    # write the changed values where step 3's are, keeping step 3's recorded fingerprint
    other = Checkpoints(str(tmp_path / "other"), keep_latest=1)
    other.save(3, changed)
    other.close()
    for name in ("default",):
        target = os.path.join(tmp_path, "3", name)
        os.rename(target, target + ".old")
        os.rename(os.path.join(tmp_path, "other", "3", name), target)
    with pytest.raises(CheckpointError, match="fingerprint"):
        ckpt.restore(3, _state(0))
    step, _ = ckpt.restore_latest(_state(0))
    assert step == 2


def test_fingerprint_sees_any_single_bit():
    x = np.arange(64, dtype=np.float32)
    base = fingerprint({"a": jnp.asarray(x), "b": jnp.zeros(3, jnp.bfloat16)})
    bits = x.view(np.uint32)
    for leaf in ("a", "b"):
        for bit in (0, 7, 22, 31):
            if leaf == "a":
                y = bits.copy()
                y[5] ^= np.uint32(1 << bit)
                tree = {"a": jnp.asarray(y.view(np.float32)), "b": jnp.zeros(3, jnp.bfloat16)}
            else:
                b = np.zeros(3, np.uint16)
                b[1] ^= np.uint16(1 << (bit % 16))
                tree = {"a": jnp.asarray(x), "b": jax.lax.bitcast_convert_type(jnp.asarray(b),
                                                                                jnp.bfloat16)}
            assert fingerprint(tree) != base, (leaf, bit)


def test_none_readable_names_the_directory(tmp_path):
    ckpt = _saved(tmp_path, steps=(1, 2))
    for step in (1, 2):
        _bad_metadata(os.path.join(tmp_path, str(step)))
    with pytest.raises(CheckpointError, match=f"{tmp_path}: no readable checkpoint left"):
        ckpt.restore_latest(_state(0))
    assert sorted(os.listdir(tmp_path)) == ["1.unreadable", "2.unreadable"]


def test_checkpoints_saved_before_fingerprints_still_restore(tmp_path):
    """A checkpoint without a recorded fingerprint (older workdirs) restores unverified."""
    ckpt = _saved(tmp_path, steps=(1,))
    meta = os.path.join(tmp_path, "1", "_CHECKPOINT_METADATA")
    with open(meta) as f:
        record = json.load(f)
    record["custom_metadata"] = {}
    with open(meta, "w") as f:
        json.dump(record, f)
    ckpt.manager.reload()
    step, state = ckpt.restore_latest(_state(0))
    assert step == 1 and int(state["n"]) == 1
