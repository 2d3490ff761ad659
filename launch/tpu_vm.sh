#!/usr/bin/env bash
# Run an rlhf-jax command on every worker of a Cloud TPU VM or pod slice.
#   TPU_NAME=my-v5e-32 ZONE=us-west4-a launch/tpu_vm.sh generate --model /gcs-fuse/ckpt --prompt "Hi"
# Each worker installs this checkout (copied with `gcloud ... scp`) with the `tpu` extra and runs the
# same command. RLHF_JAX_DISTRIBUTED=auto makes rlhf_jax.sharding.initialize_distributed() call
# jax.distributed.initialize() with no arguments: on TPU VMs JAX finds the coordinator itself.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
REMOTE_DIR=${REMOTE_DIR:-rlhf_jax}
ARGS=$(printf '%q ' "$@")

gcloud compute tpus tpu-vm scp --recurse --worker=all --zone="$ZONE" $PROJECT_FLAG \
  "$(git rev-parse --show-toplevel)" "$TPU_NAME:~/$REMOTE_DIR"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=all --zone="$ZONE" $PROJECT_FLAG --command="
  set -e; cd ~/$REMOTE_DIR
  pip install -q -e '.[tpu]'
  RLHF_JAX_DISTRIBUTED=auto rlhf-jax $ARGS"
