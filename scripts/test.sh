#!/usr/bin/env bash
# Builds ECCL and runs every test, installing what it needs first:
#   1. Release build; ctest: unit, integration (in-process peers, so over shared memory), tcp
#      (the collective suites again over loopback TCP), fault (multi-process, serial; a 60 s
#      churn), c_api, examples, install, lab (network namespaces; skipped without root);
#      pytest: the Python package and torch backend (bindings/python/tests), with the Python
#      examples, against Debian's python3 and torch (run beside stage 4's fuzzers); gpu (the
#      CUDA plugin and kernels are built where nvcc is; without a GPU those tests skip and
#      say why: scripts/test-gpu.sh runs them on one)
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build; the same ctest without install
#      and lab, and of the timed multi-process fault tests only a 35 s churn (kills, joins,
#      reconnects); the Python extension's API, collective and fault tests
#   3. ThreadSanitizer build; the integration and security tests (but the 64 MiB all-reduce)
#   4. libFuzzer targets for every network decoder and the master's membership state
#      machine, ECCL_FUZZ_SECONDS each (default 15), starting from the committed seeds
# Exits non-zero when any test fails. ECCL_TEST_STAGES picks stages (default "1 2 3 4").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

jobs=$(nproc)
# Debian's interpreter: python3-torch, python3-numpy and python3-pytest are installed for it.
python=/usr/bin/python3
stages=${ECCL_TEST_STAGES:-1 2 3 4}
log=$(mktemp)
trap 'rm -f "$log" "$log.py" "$log.pyout"' EXIT
stage() { printf '\n===== %s =====\n' "$*"; }
has() { [[ " $stages " == *" $1 "* ]]; }

configure() {  # dir, extra cmake args...
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja -DECCL_BUILD_TESTS=ON -DECCL_BUILD_EXAMPLES=ON "$@" > /dev/null
}

run_ctest() {  # dir, extra ctest args...
  local dir=$1
  shift
  ctest --test-dir "$dir" --output-on-failure -j "$jobs" --timeout 600 "$@" 2>&1 | tee -a "$log"
  return "${PIPESTATUS[0]}"
}

# pytest on the package built into build/python (stage 1's build). Exit code 5 (no tests
# collected) fails like any other.
python_suite() {
  stage "1/4 Python package: pytest (bindings/python/tests)"
  local rc=0
  PYTHONPATH="$PWD/build/python" timeout 900 "$python" -m pytest -p no:cacheprovider -q \
    bindings/python/tests > "$log.py" 2>&1 || rc=$?
  tee -a "$log" < "$log.py"
  rm -f "$log.py"
  return "$rc"
}

if has 1; then
  stage "1/4 release build and tests"
  configure build -DCMAKE_BUILD_TYPE=Release -DECCL_BUILD_BENCH=ON -DECCL_CHURN_SECONDS=60 \
    -DECCL_BUILD_PYTHON=ON -DPython3_EXECUTABLE="$python"
  cmake --build build -j "$jobs"
  run_ctest build
  # The Python suite runs next to the fuzzers when stage 4 runs (each fuzzer uses one core).
  has 4 || python_suite
fi

if has 2; then
  stage "2/4 AddressSanitizer + UndefinedBehaviorSanitizer"
  # -O1 -g1: sanitizer builds compile about twice as fast as RelWithDebInfo.
  configure build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
    -DCMAKE_C_FLAGS_DEBUG="-O1 -g1" -DECCL_SANITIZE="address;undefined" -DECCL_BUILD_BENCH=OFF \
    -DECCL_CHURN_SECONDS=35 -DECCL_BUILD_PYTHON=ON -DPython3_EXECUTABLE="$python" \
    -DECCL_WITH_CUDA=OFF
  cmake --build build-asan -j "$jobs"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run_ctest build-asan -LE "install|fault|lab"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run_ctest build-asan -R '^Fault[.]Churn$'
  # The extension under the sanitizers: the interpreter is not instrumented, so the runtimes
  # are preloaded, and leak checking is off (CPython keeps its allocations to the end).
  cxx=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' build-asan/CMakeCache.txt)  # its runtimes
  LD_PRELOAD="$("$cxx" -print-file-name=libasan.so) $("$cxx" -print-file-name=libubsan.so)" \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    PYTHONPATH="$PWD/build-asan/python" timeout 600 "$python" -m pytest -p no:cacheprovider -q \
    bindings/python/tests/test_api.py bindings/python/tests/test_collectives.py \
    bindings/python/tests/test_faults.py 2>&1 | tee -a "$log"
fi

if has 3; then
  stage "3/4 ThreadSanitizer: integration and security tests"
  configure build-tsan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
    -DCMAKE_C_FLAGS_DEBUG="-O1 -g1" -DECCL_SANITIZE=thread -DECCL_BUILD_BENCH=OFF \
    -DECCL_WITH_CUDA=OFF
  cmake --build build-tsan -j "$jobs" --target eccl_integration_tests eccl_security_tests eccl-demo \
    eccl-diloco
  # The 64 MiB all-reduce (a minute under TSan) runs in stages 1 and 2; here the same ring
  # code runs in every other all-reduce test, at sizes of many segments too.
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" run_ctest build-tsan -L "integration|security" \
    -E '^AllReduce[.]Large64MiBFloat32$'
fi

if has 4; then
  stage "4/4 libFuzzer: network decoders and the membership state machine"
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DECCL_BUILD_TESTS=OFF -DECCL_BUILD_BENCH=OFF -DECCL_BUILD_EXAMPLES=OFF \
    -DECCL_BUILD_FUZZERS=ON -DECCL_WITH_CUDA=OFF -DECCL_WITH_NCCL=OFF > /dev/null
  cmake --build build-fuzz -j "$jobs" --target fuzz_control fuzz_data fuzz_membership fuzz_codec
  python_pid=""
  if has 1; then
    # Its own process group, so a failing fuzzer's exit takes its processes down too.
    setsid bash -c "$(declare -f stage python_suite); python=$python log=$log python_suite" \
      > "$log.pyout" 2>&1 &
    python_pid=$!
    trap 'kill -- -$python_pid 2>/dev/null || true; rm -f "$log" "$log.py" "$log.pyout"' EXIT
  fi
  fuzz_passed=0
  for f in fuzz_control fuzz_data fuzz_membership fuzz_codec; do
    corpus=$(mktemp -d)
    cp tests/fuzz/corpus/$f/* "$corpus"/ 2>/dev/null || true
    if ! build-fuzz/tests/fuzz/$f -max_total_time="${ECCL_FUZZ_SECONDS:-15}" -max_len=4096 \
        "$corpus" > "$corpus.log" 2>&1; then
      tail -n 40 "$corpus.log"
      echo "fuzzer $f found a crash"
      exit 1
    fi
    echo "$f: $(grep -E '^Done' "$corpus.log")"
    rm -rf "$corpus" "$corpus.log"
    fuzz_passed=$((fuzz_passed + 1))
  done
  echo "fuzz: $fuzz_passed targets ran clean" | tee -a "$log"
  if [ -n "$python_pid" ]; then
    python_rc=0
    wait "$python_pid" || python_rc=$?
    cat "$log.pyout"
    rm -f "$log.pyout"
    [ "$python_rc" -eq 0 ] || { echo "the Python suite failed"; exit 1; }
  fi
fi

# One closing line over every stage.
passed=$(awk '/tests passed, [0-9]+ tests failed out of/ {p += $NF - $(NF-5)} END {print p+0}' "$log")
failed=$(awk '/tests passed, [0-9]+ tests failed out of/ {f += $(NF-5)} END {print f+0}' "$log")
# pytest's summary line: "N passed, M skipped in 40.1s" (or "K failed, N passed ...").
passed=$((passed + $(grep -Eo '(^|[ ,])[0-9]+ passed' "$log" | awk '{s += $NF == "passed" ? $(NF-1) : 0} END {print s+0}')))
passed=$((passed + ${fuzz_passed:-0}))
# CTest counts a test that skipped (the gpu label without a GPU) as passed: say so apart.
skipped=$(grep -cE '^[[:space:]]*[0-9]+ - .* \(Skipped\)$' "$log" || true)
passed=$((passed - skipped))
echo
echo "$passed passed, $skipped skipped, $failed failed"
[ "$failed" -eq 0 ]
