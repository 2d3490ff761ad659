#!/usr/bin/env bash
# Run an rlhf-jax command on one or more GPU hosts (one process per host, all local GPUs each).
#   HOSTS="gpu0 gpu1" launch/gpu_hosts.sh generate --model /data/ckpt --prompt "Hi"
# The first host is the coordinator. Each host must have this checkout at the same path with
# `pip install -e '.[cuda]'` done. Under SLURM, prefer `srun` with RLHF_JAX_DISTRIBUTED=auto.
set -euo pipefail
read -r -a hosts <<< "${HOSTS:-localhost}"
PORT=${PORT:-12355}
DIR=${REMOTE_DIR:-$(git rev-parse --show-toplevel)}
ARGS=$(printf '%q ' "$@")
pids=()
for i in "${!hosts[@]}"; do
  ssh "${hosts[$i]}" "cd $DIR && RLHF_JAX_COORDINATOR=${hosts[0]}:$PORT \
    RLHF_JAX_NUM_PROCESSES=${#hosts[@]} RLHF_JAX_PROCESS_ID=$i rlhf-jax $ARGS" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
