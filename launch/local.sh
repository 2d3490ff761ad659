#!/usr/bin/env bash
# Run an rlhf-jax command on this machine.
#   launch/local.sh generate --model smollm2 --prompt "Hello"
# SIMULATED_DEVICES=8 splits the CPU into 8 XLA devices, to try a sharded mesh without hardware.
set -euo pipefail
if [[ -n "${SIMULATED_DEVICES:-}" ]]; then
  export XLA_FLAGS="--xla_force_host_platform_device_count=${SIMULATED_DEVICES} ${XLA_FLAGS:-}"
  export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
fi
exec rlhf-jax "$@"
