#!/usr/bin/env bash
# Run an rlhf-jax command on every worker of a Cloud TPU VM or pod slice.
#   TPU_NAME=my-v5e-32 ZONE=us-west4-a launch/tpu_vm.sh generate --model /gcs-fuse/ckpt --prompt "Hi"
# Each worker gets the committed tree (git archive of HEAD), installs it with the `tpu` extra and runs the
# same command. RLHF_JAX_DISTRIBUTED=auto makes rlhf_jax.sharding.initialize_distributed() call
# jax.distributed.initialize() with no arguments: on TPU VMs JAX finds the coordinator itself.
# Each worker keeps the command's exit status in ~/$REMOTE_DIR/.last_exit (75: preempted, the step
# saved; launch/tpu_spot.sh reruns on that).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
REMOTE_DIR=${REMOTE_DIR:-rlhf_jax}
ARGS=$(printf '%q ' "$@")

# Ship the committed tree only (no .git, no virtualenvs), replacing the earlier copy's tracked
# top-level entries only: a workdir under ~/$REMOTE_DIR (runs/…) survives a relaunch, so a rerun
# after preemption resumes from its checkpoints (launch/tpu_spot.sh).
ARCHIVE=$(mktemp --suffix=.tar.gz)
git -C "$(git rev-parse --show-toplevel)" archive --format=tar.gz -o "$ARCHIVE" HEAD
gcloud compute tpus tpu-vm scp --worker=all --zone="$ZONE" $PROJECT_FLAG "$ARCHIVE" "$TPU_NAME:~/rlhf_jax.tar.gz"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=all --zone="$ZONE" $PROJECT_FLAG --command="
  set -e; mkdir -p ~/$REMOTE_DIR && cd ~/$REMOTE_DIR
  tar -tzf ~/rlhf_jax.tar.gz | cut -d/ -f1 | sort -u | grep -v '^\\.\\?$' | xargs -r rm -rf --
  tar -xzf ~/rlhf_jax.tar.gz -C ~/$REMOTE_DIR"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=all --zone="$ZONE" $PROJECT_FLAG --command="
  set -e; cd ~/$REMOTE_DIR
  pip install -q -e '.[tpu]'
  rm -f .last_exit; set +e
  RLHF_JAX_DISTRIBUTED=auto rlhf-jax $ARGS
  status=\$?; echo \$status > .last_exit; exit \$status"
