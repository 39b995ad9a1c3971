#!/usr/bin/env bash
# The main job: build ECCL and run the elastic demo (embedded master, 4 peer
# processes on loopback all-reducing; a 5th joins midway).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DECCL_BUILD_TESTS=OFF \
  -DECCL_BUILD_BENCH=OFF -DECCL_BUILD_EXAMPLES=ON > /dev/null
cmake --build build --target eccl-demo -j "$(nproc)"
exec build/examples/eccl-demo "$@"
