// Content-hash throughput of shared state (state/hash.h): XXH3-64 over
// 16 MiB pieces, 1 GiB of state, on 1 thread and on every core.
//
//   build/bench/bench_state_hash --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include <cstring>
#include <thread>
#include <vector>

#include "state/hash.h"

namespace {

void bmHash(benchmark::State& st) {
  const size_t bytes = size_t{1} << 30;
  static std::vector<std::byte> buf = [] {
    std::vector<std::byte> v(size_t{1} << 30);
    for (size_t i = 0; i < v.size(); i += 4096) v[i] = static_cast<std::byte>(i >> 12);
    return v;
  }();
  const unsigned threads = static_cast<unsigned>(st.range(0));
  for (auto _ : st) benchmark::DoNotOptimize(eccl::state::contentHash(buf.data(), bytes, threads));
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * bytes));
  st.counters["threads"] = threads == 0 ? std::thread::hardware_concurrency() : threads;
}

BENCHMARK(bmHash)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
