"""``launch/tpu_spot.sh`` over ``launch/tpu_vm.sh``, with ``gcloud`` played by a local stand-in.

The stand-in runs each ``tpu-vm ssh --command`` in a bash under a temporary ``$HOME`` (one
"worker") and copies ``tpu-vm scp`` files there, so the scripts' own shell runs as written:
shipping the tree, the install line, the stage command, its exit status and the loop around it.
``rlhf-jax`` is a stand-in too, which preempts (exit 75) or fails as each test asks.
"""

import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GCLOUD = r"""#!/usr/bin/env bash
# gcloud compute tpus tpu-vm VERB ...
verb=$4; shift 4
echo "$verb" >> "$FAKE_LOG"
case $verb in
  describe) echo READY ;;
  scp) args=(); for a in "$@"; do case $a in --*) ;; *) args+=("$a") ;; esac; done
       dst=${args[1]#*:}; cp "${args[0]}" "${dst/#\~/$HOME}" ;;
  ssh) for a in "$@"; do case $a in --command=*) cmd=${a#--command=} ;; esac; done
       cd "$HOME" && exec bash -c "$cmd" ;;
esac
"""

STAGE = r"""#!/usr/bin/env bash
# rlhf-jax ppo --config C --workdir W: preempted on its first run, if FAKE_PLAN says so
while [ $# -gt 0 ]; do [ "$1" = --workdir ] && wd=$2; shift; done
n=$(( $(cat "$FAKE_COUNT" 2>/dev/null || echo 0) + 1 )); echo $n > "$FAKE_COUNT"
mkdir -p "$wd/checkpoints"
case $FAKE_PLAN in
  preempt) if [ $n -eq 1 ]; then touch "$wd/checkpoints/3"; exit 75; fi
           [ -e "$wd/checkpoints/3" ] || exit 3  # the first run's checkpoint survived the relaunch
           echo '{"last_step": 6}' > "$wd/result.json" ;;
  bad) echo "rlhf-jax ppo: config key 'ppo.lr' differs" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def fake_cloud(tmp_path):
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir()
    home.mkdir()
    for name, text in (("gcloud", GCLOUD), ("rlhf-jax", STAGE), ("pip", "#!/bin/sh\nexit 0\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home),
           "TPU_NAME": "spot-v5e-8", "ZONE": "us-west4-a", "WAIT_S": "0", "MAX_TRIES": "4",
           "FAKE_LOG": str(tmp_path / "gcloud.log"), "FAKE_COUNT": str(tmp_path / "runs")}
    return env, home


def spot(env, plan):
    return subprocess.run(["bash", os.path.join(REPO, "launch", "tpu_spot.sh"), "ppo", "--config",
                           "configs/ppo/webgpt.py", "--workdir", "runs/ppo"],
                          env={**env, "FAKE_PLAN": plan}, cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_a_preempted_run_is_relaunched_until_its_result_exists(fake_cloud):
    env, home = fake_cloud
    run = spot(env, "preempt")
    assert run.returncode == 0, run.stderr
    assert "preempted (checkpoint saved); relaunching" in run.stderr
    assert open(env["FAKE_COUNT"]).read().strip() == "2"  # the stage ran twice
    assert (home / "rlhf_jax" / "runs" / "ppo" / "result.json").exists()
    assert (home / "rlhf_jax" / "setup.py").exists()  # the shipped tree
    # a third launch finds result.json and runs nothing
    again = spot(env, "preempt")
    assert again.returncode == 0 and "exists: finished" in again.stderr
    assert open(env["FAKE_COUNT"]).read().strip() == "2"


def test_a_failing_command_is_not_retried(fake_cloud):
    env, _ = fake_cloud
    run = spot(env, "bad")
    assert run.returncode == 1
    assert "failed with status 1; not retrying" in run.stderr
    assert open(env["FAKE_COUNT"]).read().strip() == "1"
