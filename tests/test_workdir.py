"""The workdir contract (``rlhf_jax.workdir.start_stage``): config.json is the record of what a
workdir computes, a rerun with another result-changing config is refused unless allowed, and a
workdir without progress takes a corrected config."""

import json
import logging
import os

import ml_collections
import pytest

from rlhf_jax.workdir import WorkdirError, has_progress, start_stage


def config(lr=1e-3, log_every=10, path="data.jsonl"):
    return ml_collections.ConfigDict({"rm": {"lr": lr, "log_every": log_every},
                                      "data": {"path": path}})


def recorded(workdir):
    with open(os.path.join(workdir, "config.json")) as f:
        return json.load(f)


def test_a_new_workdir_records_the_config_and_an_equal_rerun_resumes(tmp_path):
    wd, done = start_stage(config(), str(tmp_path))
    assert done is None and recorded(tmp_path) == config().to_dict()
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "split": "train"}\n')
    wd, done = start_stage(config(), str(tmp_path))
    assert done is None and wd.accepted_changes == []
    assert not (tmp_path / "config_changes.jsonl").exists()


def test_a_changed_config_is_refused_once_the_workdir_has_progress(tmp_path):
    start_stage(config(), str(tmp_path))
    (tmp_path / "checkpoints" / "4").mkdir(parents=True)
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(WorkdirError, match=r"differing keys: rm\.lr: 0\.001 → 0\.5.*"
                                           r"--resume-with-changes"):
        start_stage(config(lr=0.5), str(tmp_path))
    assert (tmp_path / "config.json").read_text() == before


def test_resume_with_changes_logs_the_change_and_keeps_the_record(tmp_path):
    start_stage(config(), str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "split": "train"}\n')
    before = (tmp_path / "config.json").read_text()
    wd, _ = start_stage(config(lr=0.5), str(tmp_path), resume_with_changes=True)
    assert wd.accepted_changes == [("rm.lr", 0.001, 0.5)]
    (change,) = [json.loads(line) for line in open(tmp_path / "config_changes.jsonl")]
    assert change["changes"] == [{"key": "rm.lr", "recorded": 0.001, "now": 0.5}]
    assert (tmp_path / "config.json").read_text() == before


def test_result_neutral_keys_may_change(tmp_path):
    start_stage(config(), str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "split": "train"}\n')
    wd, _ = start_stage(config(log_every=1), str(tmp_path))
    assert wd.accepted_changes == [("rm.log_every", 10, 1)]


def test_a_finished_workdir_returns_its_result_and_refuses_another_config(tmp_path, caplog):
    start_stage(config(), str(tmp_path))
    (tmp_path / "export").mkdir()
    (tmp_path / "result.json").write_text('{"accuracy": 0.75}')
    with caplog.at_level(logging.WARNING):
        _, done = start_stage(config(), str(tmp_path))
    assert done == {"accuracy": 0.75} and "already finished" in caplog.text
    for allowed in (False, True):
        with pytest.raises(WorkdirError, match=r"is finished.*rm\.lr"):
            start_stage(config(lr=0.5), str(tmp_path), resume_with_changes=allowed)


def test_an_attempt_stopped_by_bad_input_does_not_pin_its_config(tmp_path, caplog):
    # the first attempt named a broken data file and stopped before any metric or checkpoint
    start_stage(config(path="broken.jsonl"), str(tmp_path))
    assert not has_progress(str(tmp_path))
    with caplog.at_level(logging.WARNING):
        wd, done = start_stage(config(path="fixed.jsonl"), str(tmp_path))
    assert done is None and recorded(tmp_path)["data"]["path"] == "fixed.jsonl"
    assert "no metrics or checkpoints yet" in caplog.text and "broken.jsonl" in caplog.text


@pytest.mark.parametrize("made", ["metrics.jsonl", "checkpoints/2", "export"])
def test_progress_is_any_metric_checkpoint_or_export(tmp_path, made):
    assert not has_progress(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / "checkpoints").mkdir()
    assert not has_progress(str(tmp_path))  # an empty metrics file and checkpoint directory
    if made == "metrics.jsonl":
        (tmp_path / made).write_text('{"step": 1}\n')
    else:
        (tmp_path / made).mkdir(parents=True, exist_ok=True)
    assert has_progress(str(tmp_path))


def test_resume_moves_later_rows_and_a_torn_line_aside(tmp_path, caplog):
    from rlhf_jax.workdir import Workdir
    wd = Workdir(str(tmp_path))
    for step in (1, 2, 3, 4):
        wd.log_metrics(step, {"loss": float(step)})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "split": "tr')  # killed mid-write
    with caplog.at_level(logging.WARNING):
        assert [r["step"] for r in wd.read_metrics()] == [1, 2, 3, 4]  # read: skipped, named
    assert "metrics.jsonl line 5: not a JSON metrics row" in caplog.text
    wd.resume_metrics(2)  # the run continues from the checkpoint of step 2
    assert [r["step"] for r in wd.read_metrics()] == [1, 2]
    dropped = [json.loads(line) for line in open(tmp_path / "metrics.dropped.jsonl")]
    assert [d.get("step") for d in dropped] == [3, 4, None]
    assert dropped[2] == {"dropped": "unreadable line 5", "text": '{"step": 5, "split": "tr'}
    wd.log_metrics(3, {"loss": 3.5})  # logged again by the resumed run: once in the file
    assert [(r["step"], r["loss"]) for r in wd.read_metrics()] == [(1, 1.0), (2, 2.0), (3, 3.5)]
    wd.close()


def test_keys_added_later_at_their_old_behaviour_are_no_difference(tmp_path):
    """A workdir recorded before ``rm.loss`` existed trained Bradley–Terry: the key at that
    value is no change; at another value it is one."""
    start_stage(config(), str(tmp_path))
    (tmp_path / "export").mkdir()
    (tmp_path / "result.json").write_text('{"accuracy": 0.75}')
    newer = config()
    newer.rm.loss = "bradley_terry"
    newer.rm.odin = {"length_coef": 1.0, "ortho_coef": 1.0}
    _, done = start_stage(newer, str(tmp_path))
    assert done == {"accuracy": 0.75}
    newer.rm.loss = "odin"
    with pytest.raises(WorkdirError, match=r"rm\.loss: \"<absent>\" → \"odin\""):
        start_stage(newer, str(tmp_path))
