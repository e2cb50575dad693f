#!/usr/bin/env bash
# The step-throughput suite on one CUDA machine, in a few minutes; writes JSON, PNG, Markdown and the log:
# the MLP and the DCGAN (both backends, every variant, float32 and bf16; the DCGAN's JAX rows with XLA's
# convolutions, auto on a GPU, and the custom CPU ones), the default recipe's MLP step, data-parallel scaling over all visible GPUs for both,
# and time to quality of the best preset and the default in both backends.
# Installs nothing: run it from any directory, inside an environment that already has jax[cuda], a CUDA
# build of torch and this repository's dependencies.
#
#   benchmarks/gpu.sh [--tf32] [--out DIR] [more benchmarks.step_throughput flags, e.g. --repeats 7]
#
# --tf32   let both backends use TF32 matmuls (torch allow_tf32 on, jax precision tensorfloat32).
#          Default: TF32 off in both (torch allow_tf32=False, jax_default_matmul_precision=highest),
#          so both compute true float32, as the parity tests compare them.
# --out    output folder (default benchmarks/results/gpu_<date>; $OUT when set, as on the device runner).
set -euo pipefail
cd "$(dirname "$0")/.."

precision=float32
out="${OUT:-benchmarks/results/gpu_$(date +%Y%m%d_%H%M%S)}"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tf32) precision=tf32 ;;
    --out) out="$2"; shift ;;
    *) extra+=("$1") ;;
  esac
  shift
done
mkdir -p "$out"

python - <<'PY'
import sys
import jax, torch
problems = []
if not torch.cuda.is_available():
    problems.append(f"torch {torch.__version__} sees no CUDA device (a CPU build?)")
if jax.default_backend() != "gpu":
    problems.append(f"jax {jax.__version__} runs on {jax.default_backend()} (install jax[cuda12] or jax[cuda13])")
if problems:
    sys.exit("benchmarks/gpu.sh needs CUDA in both backends: " + "; ".join(problems))
print("GPU:", torch.cuda.get_device_name(0), "| jax:", jax.devices()[0].device_kind)
PY
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true

# JAX and torch share one GPU: let JAX allocate on demand instead of taking 75% up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# torch.compile variants compile cold at two sizes only (launch-bound and compute-bound), to keep the run short.
python -m benchmarks.step_throughput \
  --batch-sizes 1,64,256,1024,4096,16384,65536 \
  --compile-batch-sizes 64,65536 \
  --repeats 5 --min-time 0.1 \
  --matmul-precision "$precision" --precisions float32,bf16 \
  --json "$out/step_throughput.json" --plot "$out/step_throughput.png" --markdown "$out/step_throughput.md" \
  ${extra[@]+"${extra[@]}"} 2>&1 | tee "$out/log.txt"
# The DCGAN (the dcgan preset: --arch dcgan --beta1 0.5): conv impl auto (XLA's convolutions, cuDNN) and custom.
python -m benchmarks.step_throughput --arch dcgan --conv-impls auto,custom \
  --compile-batch-sizes 256,16384 \
  --repeats 5 --min-time 0.1 \
  --matmul-precision "$precision" --precisions float32,bf16 \
  --json "$out/step_throughput_dcgan.json" --plot "$out/step_throughput_dcgan.png" \
  --markdown "$out/step_throughput_dcgan.md" \
  ${extra[@]+"${extra[@]}"} 2>&1 | tee -a "$out/log.txt"
# The default recipe's step (the MLP with lazy R1 and the EMA of G; --preset mlp and best): eager and tuned torch.
python -m benchmarks.step_throughput --recipe default --batch-sizes 64,256,4096,65536 \
  --repeats 5 --min-time 0.1 --matmul-precision "$precision" \
  --json "$out/step_throughput_recipe.json" --plot "$out/step_throughput_recipe.png" \
  --markdown "$out/step_throughput_recipe.md" \
  ${extra[@]+"${extra[@]}"} 2>&1 | tee -a "$out/log.txt"
# Data-parallel scaling over this machine's GPUs (1, 2, 4, ... all); one GPU gives the 1-device rows.
python -m benchmarks.scaling --batch-sizes 1024,16384 \
  --json "$out/scaling.json" --markdown "$out/scaling.md" 2>&1 | tee -a "$out/log.txt"
python -m benchmarks.scaling --arch dcgan --k 10 --batch-sizes 1024,16384 \
  --json "$out/scaling_dcgan.json" --markdown "$out/scaling_dcgan.md" 2>&1 | tee -a "$out/log.txt"
# Time to quality: the best preset (and the default, the same recipe shorter) trained by both backends, FID logged
# along the way; the report tables when each first reached FID 6 and plots FID against wall clock.
python -m benchmarks.recipe --rows best,best_torch,default,default_torch --seeds 0 --c2st \
  --out "$out/recipe" 2>&1 | tee -a "$out/log.txt"
python -m benchmarks.recipe --report --target 6 --out "$out/recipe" --json "$out/time_to_quality.json" \
  --plot "$out/time_to_quality.png" --plot-rows best,best_torch,default,default_torch 2>&1 | tee -a "$out/log.txt"
echo "results in $out"
