#!/usr/bin/env bash
# Run a training stage on a spot / preemptible (or queued-resource) TPU VM until it finishes.
#   TPU_NAME=my-v5e-8 ZONE=us-west4-a launch/tpu_spot.sh ppo --config configs/ppo/webgpt.py \
#       --workdir runs/ppo_webgpt --config.model.init=/path/to/llama-7b-sft
#
# A preempted VM gets SIGTERM: the stage saves the step it is in and exits 75 ("preempted at
# step N"). A VM that vanishes mid-run drops the ssh session (gcloud exits 255), and the stage
# resumes from its last committed checkpoint. Either way the same command continues the run, so
# this loop waits for the TPU to be READY again (a queued resource recreates it), relaunches
# launch/tpu_vm.sh with the same arguments, and stops once the workdir's result.json exists on
# worker 0. Any other exit status (bad input, a refused config change) stops the loop at once:
# those are not retried. MAX_TRIES (default 50) and WAIT_S (seconds between READY checks,
# default 60) bound it. The workdir must survive a relaunch: keep it under the shipped tree
# (runs/…, which tpu_vm.sh leaves in place) or on a mounted bucket.
set -uo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
REMOTE_DIR=${REMOTE_DIR:-rlhf_jax}
MAX_TRIES=${MAX_TRIES:-50}
WAIT_S=${WAIT_S:-60}
HERE=$(cd "$(dirname "$0")" && pwd)

WORKDIR=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --workdir) WORKDIR=${args[i + 1]:-} ;;
    --workdir=*) WORKDIR=${args[i]#--workdir=} ;;
  esac
done
: "${WORKDIR:?pass --workdir: the loop stops when WORKDIR/result.json exists}"
case "$WORKDIR" in /*) RESULT="$WORKDIR/result.json" ;; *) RESULT="~/$REMOTE_DIR/$WORKDIR/result.json" ;; esac

tpu_state() {
  gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG \
    --format='value(state)' 2>/dev/null || echo UNKNOWN
}

finished() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=0 --zone="$ZONE" $PROJECT_FLAG \
    --command="test -f $RESULT" >/dev/null 2>&1
}

for ((try = 1; try <= MAX_TRIES; try++)); do
  until [ "$(tpu_state)" = READY ]; do
    echo "tpu_spot: $TPU_NAME is $(tpu_state); waiting ${WAIT_S}s" >&2
    sleep "$WAIT_S"
  done
  if finished; then
    echo "tpu_spot: $RESULT exists: finished" >&2
    exit 0
  fi
  echo "tpu_spot: try $try of $MAX_TRIES" >&2
  "$HERE/tpu_vm.sh" "$@"
  # the stage's own exit status on worker 0 (gcloud's own, 255, where the VM went away)
  status=$(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=0 --zone="$ZONE" $PROJECT_FLAG \
             --command="cat ~/$REMOTE_DIR/.last_exit" 2>/dev/null) || status=255
  case $status in
    0) if finished; then echo "tpu_spot: finished" >&2; exit 0; fi ;;
    75) echo "tpu_spot: preempted (checkpoint saved); relaunching" >&2 ;;
    255) echo "tpu_spot: lost the VM (ssh ended); relaunching" >&2 ;;
    *) echo "tpu_spot: the command failed with status $status; not retrying" >&2; exit "$status" ;;
  esac
done
echo "tpu_spot: gave up after $MAX_TRIES tries; $RESULT does not exist" >&2
exit 1
