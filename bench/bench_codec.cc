// Throughput of the payload codecs (codec/codec.h) per core: encode, decode
// and decode-add (the reduce-scatter hop: out = local + decode(received)) of
// 1 MiB of float32 (one default segment) from random normal data.
//
// Bytes per second count the float32 input (count * 4), whatever the codec
// writes, so the figures compare with each other and with bench_reduce.
//
//   build/bench/bench_codec --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <cstddef>
#include <random>
#include <vector>

#include "codec/codec.h"
#include "common/dtype.h"
#include "eccl/eccl.h"

namespace {

constexpr size_t kCount = size_t{1} << 18;  // 1 MiB of float32

std::vector<float> normal(uint32_t seed) {
  std::vector<float> v(kCount);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (float& x : v) x = d(rng);
  return v;
}

eccl::codec::Params params(ecclQuantization_t q, ecclRounding_t rounding) {
  uint32_t block = 0;
  (void)eccl::codec::checkParams(q, rounding, ecclFloat32, &block);
  return {ecclFloat32, rounding, block};
}

void bmEncode(benchmark::State& state, ecclQuantization_t q, ecclRounding_t rounding) {
  const eccl::codec::Codec& c = *eccl::codec::find(q);
  const auto p = params(q, rounding);
  const std::vector<float> in = normal(1);
  std::vector<std::byte> wire(c.encodedBytes(p, kCount));
  uint64_t seed = 0;
  for (auto _ : state) {
    c.encode(p, in.data(), kCount, wire.data(), ++seed);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kCount * sizeof(float)));
  state.counters["wire_bytes_per_elem"] = static_cast<double>(wire.size()) / kCount;
}

void bmDecode(benchmark::State& state, ecclQuantization_t q) {
  const eccl::codec::Codec& c = *eccl::codec::find(q);
  const auto p = params(q, ecclRoundNearest);
  const std::vector<float> in = normal(1);
  std::vector<std::byte> wire(c.encodedBytes(p, kCount));
  c.encode(p, in.data(), kCount, wire.data(), 0);
  std::vector<float> out(kCount);
  for (auto _ : state) {
    c.decode(p, wire.data(), kCount, out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kCount * sizeof(float)));
}

void bmDecodeAdd(benchmark::State& state, ecclQuantization_t q) {
  const eccl::codec::Codec& c = *eccl::codec::find(q);
  const auto p = params(q, ecclRoundNearest);
  const std::vector<float> in = normal(1);
  const std::vector<float> local = normal(2);
  std::vector<std::byte> wire(c.encodedBytes(p, kCount));
  c.encode(p, in.data(), kCount, wire.data(), 0);
  std::vector<float> out(kCount);
  for (auto _ : state) {
    c.decodeAdd(p, wire.data(), kCount, local.data(), out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kCount * sizeof(float)));
}

void registerAll() {
  for (ecclQuantization_t q :
       {ecclQuantFloat16, ecclQuantBfloat16, ecclQuantUint8, ecclQuantUint4}) {
    const std::string name = eccl::quantName(q);
    benchmark::RegisterBenchmark(("encode/" + name).c_str(), bmEncode, q, ecclRoundNearest);
    benchmark::RegisterBenchmark(("encode_stochastic/" + name).c_str(), bmEncode, q,
                                 ecclRoundStochastic);
    benchmark::RegisterBenchmark(("decode/" + name).c_str(), bmDecode, q);
    benchmark::RegisterBenchmark(("decode_add/" + name).c_str(), bmDecodeAdd, q);
  }
}

}  // namespace

int main(int argc, char** argv) {
  registerAll();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
