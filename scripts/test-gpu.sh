#!/usr/bin/env bash
# The GPU checks in one run, for a short window on a machine with an NVIDIA GPU:
#   bash scripts/test-gpu.sh [build-dir]          (default build-gpu; ~10 min on 16 cores)
# Builds the CUDA parts (ECCL_WITH_CUDA=ON: fails when CUDA is missing), then
#   1. ctest -L gpu: the CUDA kernels against the host kernels, ecclMemCuda collectives
#      through the real plugin next to host members (identical bits, up to 256 MiB);
#   2. cuda_bw: H2D/D2H/D2D copy bandwidth and the reduction kernels in GB/s;
#   3. eccl-bench over loopback TCP (ECCL_SHM=0), host vs CUDA buffers, side by side;
#   4. failover --memory cuda: SIGKILL of a peer mid all-reduce on CUDA buffers.
# Every step has a timeout; the script goes on after a failed step and exits 1 at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-gpu}
jobs=$(nproc)
failed=()
step() { printf '\n===== %s =====\n' "$*"; }
run() {  # name, timeout seconds, command...
  local name=$1 limit=$2
  shift 2
  if ! timeout "$limit" "$@"; then failed+=("$name"); fi
}

step "configure and build ($dir)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DECCL_WITH_CUDA=ON \
  -DECCL_BUILD_TESTS=ON -DECCL_BUILD_BENCH=ON -DECCL_BUILD_EXAMPLES=OFF | grep -E "ECCL_WITH" || exit 1
cmake --build "$dir" -j "$jobs" --target eccl_gpu_tests eccl_cuda eccl-bench cuda_bw failover \
  eccl-fault-peer eccl || exit 1

step "1. ctest -L gpu"
run ctest 900 ctest --test-dir "$dir" -L gpu --output-on-failure --timeout 600

step "2. cuda_bw: copies and kernels"
run cuda_bw 120 "$dir/bench/cuda_bw" --mib 256

step "3. eccl-bench, 4 peers over loopback TCP: host buffers, then CUDA buffers"
for memory in host cuda cuda host; do  # alternated: the machine's noise hits both
  ECCL_SHM=0 ECCL_CUDA_PLUGIN="$dir/src/libeccl_cuda.so.0" run "eccl-bench $memory" 300 \
    "$dir/tools/eccl-bench" allreduce --peers 4 -b 64M -e 256M -f 4 --iters 5 --warmup 2 \
    --memory "$memory"
done

step "4. failover on CUDA buffers (SIGKILL mid all-reduce)"
run failover 300 "$dir/bench/failover" --peers 4 --mib 64 --rounds 3 --memory cuda

if ((${#failed[@]})); then
  printf '\nFAILED: %s\n' "${failed[@]}"
  exit 1
fi
printf '\nall GPU checks passed\n'
