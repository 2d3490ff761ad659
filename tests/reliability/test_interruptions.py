"""Every stage survives kill -9, SIGTERM, a corrupt checkpoint and a torn metrics file, and the
interrupted run's export is bit-identical to an uninterrupted run's.

For each stage (SFT, reward model, PPO) on the synthetic configs, as the CLI runs them:

1. an uninterrupted reference run;
2. one chain of runs in another workdir, each relaunched with the same command after:
   kill -9 at a random step (×2), kill -9 while a checkpoint is being written, kill -9 at a random
   step followed by truncating the newest checkpoint's data and tearing the last line of
   ``metrics.jsonl``, kill -9 at a random step (×1), SIGTERM at a random step (the run must save
   the step it was in, print "preempted at step N" and exit 75), a rerun with a changed
   learning rate (refused, naming the key), and a last run to the end;
3. the chain's export must equal the reference's bit for bit, and its ``metrics.jsonl`` must
   hold each step once with the reference's values.
"""

import json
import os

import numpy as np
import pytest

from tests.reliability import harness as h

pytestmark = pytest.mark.slow

EXIT_PREEMPTED = 75

STAGES = {
    # name: (command, config, overrides, the lr key a changed-config rerun alters)
    "sft": ("sft", "sft.py", ["--config.sft.epochs=2", "--config.sft.eval_every=10",
                              "--config.sft.log_every=1"], "sft.lr"),
    "rm": ("train-rm", "rm.py", ["--config.rm.epochs=1", "--config.rm.eval_every=8",
                                 "--config.rm.log_every=1", "--config.data.synthetic.num_eval=128"],
           "rm.lr"),
    "ppo": ("ppo", "ppo.py", ["--config.ppo.steps=14", "--config.ppo.save_every=3",
                              "--config.ppo.batch_size=16", "--config.ppo.mini_batch_size=8",
                             ], "ppo.lr"),
}


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    return {"root": root, "env": h.cli_env(str(root / "jax_cache")), "refs": {}}


def stage_overrides(name, space):
    command, config, overrides, _ = STAGES[name]
    if name == "ppo":  # the policy and reward model of the reference SFT and RM runs
        overrides = overrides + [f"--config.model.init={reference(space, 'sft')}/export",
                                 f"--config.reward.model={reference(space, 'rm')}/export"]
    return command, os.path.join(h.CONFIGS, config), overrides


def reference(space, name):
    """The workdir of the uninterrupted run of ``name`` (made once per module)."""
    if name not in space["refs"]:
        command, config, overrides = stage_overrides(name, space)
        workdir = str(space["root"] / f"{name}_reference")
        run = h.Run(h.stage_args(command, config, workdir, overrides), workdir, space["env"], "run")
        assert run.wait() == 0, run.stderr[-3000:]
        space["refs"][name] = workdir
    return space["refs"][name]


def total_steps(workdir):
    return max(r["step"] for r in h.metric_rows(workdir))


def resumed_from(workdir):
    steps = h.committed_steps(workdir) if os.path.isdir(os.path.join(workdir, "checkpoints")) else []
    return steps[-1] if steps else 0


@pytest.mark.parametrize("name", list(STAGES))
def test_interrupted_runs_resume_to_the_same_export(space, name):
    ref = reference(space, name)
    total = total_steps(ref)
    command, config, overrides = stage_overrides(name, space)
    workdir = str(space["root"] / f"{name}_chain")
    args = h.stage_args(command, config, workdir, overrides)
    rng = np.random.default_rng(sorted(STAGES).index(name))
    launches = iter(range(100))

    def launch():
        return h.Run(args, workdir, space["env"], f"run{next(launches)}")

    def kill_at_random_step(sig=h.SIGKILL):
        """Launch, wait for a random step past the resume point, signal; the logged step then."""
        start = resumed_from(workdir)
        low = start + 1
        target = int(rng.integers(low, max(low + 1, min(low + max(total // 8, 2), total - 1))))
        stale = h.stale_metrics(workdir, start)  # the killed run's rows, until this run cuts them
        run = launch()
        assert h.wait_until(run, lambda: h.logged_step_since(workdir, stale) >= target), \
            f"run ended before step {target}: {run.stderr[-2000:]}"
        at = h.logged_step(workdir)
        run.signal(sig)
        return run, at, run.wait()

    kills = []
    for _ in range(2):
        _, at, rc = kill_at_random_step()
        assert rc == -9
        kills.append(at)
    # kill -9 while orbax writes a checkpoint (its temporary directory exists)
    start = resumed_from(workdir)
    stale, earlier = h.stale_metrics(workdir, start), h.temporary_checkpoints(workdir)
    run = launch()
    assert h.wait_until(run, lambda: h.logged_step_since(workdir, stale) > start
                        and h.saving_now(workdir, earlier)), run.stderr[-2000:]
    run.signal(h.SIGKILL)
    assert run.wait() == -9
    kills.append("during a save")
    # kill -9, then damage the newest checkpoint and tear metrics.jsonl's last line
    _, at, rc = kill_at_random_step()
    assert rc == -9
    kills.append(at)
    if len(h.committed_steps(workdir)) < 2:  # make sure there is an earlier one to fall back to
        run = launch()
        first = h.committed_steps(workdir)[-1] if h.committed_steps(workdir) else 0
        assert h.wait_until(run, lambda: len(h.committed_steps(workdir)) >= 2
                            and h.committed_steps(workdir)[-1] > first)
        run.signal(h.SIGKILL)
        run.wait()
    corrupted = h.truncate_latest_checkpoint(workdir)
    h.tear_metrics(workdir)
    run = None
    _, at, rc = kill_at_random_step()
    assert rc == -9
    kills.append(at)
    assert os.path.isdir(os.path.join(workdir, "checkpoints", f"{corrupted}.unreadable"))
    assert len(kills) >= 5
    # SIGTERM: the step in flight is finished, saved and committed; exit 75
    run, at, rc = kill_at_random_step(h.SIGTERM)
    assert rc == EXIT_PREEMPTED, run.stderr[-2000:]
    saved = h.committed_steps(workdir)[-1]
    assert at <= saved <= at + 2, (at, saved)
    assert f"preempted at step {saved}; rerun the same command to resume" in run.stderr
    assert "Traceback" not in run.stderr
    # a changed result-changing key is refused, naming it; nothing in the workdir changes
    with open(os.path.join(workdir, "config.json")) as f:
        recorded = f.read()
    lr_key = STAGES[name][3]
    changed = h.Run(args + [f"--config.{lr_key}=0.5"], workdir, space["env"], "changed")
    assert changed.wait() == 1
    assert lr_key in changed.stderr and "--resume-with-changes" in changed.stderr
    assert "Traceback" not in changed.stderr
    with open(os.path.join(workdir, "config.json")) as f:
        assert f.read() == recorded
    # the last run goes to the end
    final = launch()
    assert final.wait() == 0, final.stderr[-3000:]
    assert "moved to metrics.dropped.jsonl" in "".join(
        open(os.path.join(workdir + ".logs", n)).read() for n in os.listdir(workdir + ".logs"))
    h.assert_same_export(os.path.join(ref, "export"), os.path.join(workdir, "export"))
    rows, want = h.metric_rows(workdir), h.metric_rows(ref)
    keys = [(r["step"], r["split"]) for r in rows]
    assert len(keys) == len(set(keys)), "a step logged twice"
    assert rows == want
    result = json.loads(final.stdout)
    with open(os.path.join(ref, "result.json")) as f:
        reference_result = json.load(f)
    assert [s["step"] for s in result["checkpoints_set_aside"]] == [corrupted]
    for key in ("eval", "summary", "best_step", "last_step"):
        if key in reference_result:
            assert result[key] == reference_result[key], key
