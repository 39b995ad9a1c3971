// Throughput of the payload codecs (codec/codec.h) per core: encode, decode
// and decode-add (the reduce-scatter hop: out = local + decode(received)) of
// 1 MiB of float32 (one default segment) from random normal data.
//
// Bytes per second count the float32 input (count * 4), whatever the codec
// writes, so the figures compare with each other and with bench_reduce.
//
// Before the timings it prints the round-trip error of each codec on the same
// data next to the scheme PCCL uses (one min/max for the whole 1 MiB chunk,
// codes truncated), emulated here at 8 and 4 bits for the comparison.
//
//   build/bench/bench_codec --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <random>
#include <algorithm>
#include <string>
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

// RMS of decode(encode(x)) - x over RMS of x.
double relativeRms(const std::vector<float>& x, const std::vector<float>& y) {
  double e = 0, v = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    e += (double(y[i]) - x[i]) * (double(y[i]) - x[i]);
    v += double(x[i]) * x[i];
  }
  return std::sqrt(e / v);
}

// The reference's scheme: one affine range for the whole chunk, truncation.
std::vector<float> chunkTruncate(const std::vector<float>& x, int bits) {
  const auto [mn, mx] = std::minmax_element(x.begin(), x.end());
  const double lo = *mn, levels = (1 << bits) - 1, scale = (*mx - lo) / levels;
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    y[i] = static_cast<float>(lo + std::floor((x[i] - lo) / scale) * scale);
  }
  return y;
}

void printErrors() {
  const std::vector<float> in = normal(3);
  std::printf("# round-trip error on N(0,1) float32, RMS relative to the data's RMS\n");
  std::printf("# %-34s %12s %12s\n", "scheme", "wire B/elem", "rel. RMS");
  for (ecclQuantization_t q :
       {ecclQuantFloat16, ecclQuantBfloat16, ecclQuantUint8, ecclQuantUint4}) {
    const eccl::codec::Codec& c = *eccl::codec::find(q);
    const auto p = params(q, ecclRoundNearest);
    std::vector<std::byte> wire(c.encodedBytes(p, kCount));
    std::vector<float> out(kCount);
    c.encode(p, in.data(), kCount, wire.data(), 0);
    c.decode(p, wire.data(), kCount, out.data());
    const std::string name = std::string("eccl ") + eccl::quantName(q) +
                             (c.blocked() ? " (block 256, nearest)" : " (nearest even)");
    std::printf("# %-34s %12.4f %12.3e\n", name.c_str(), double(wire.size()) / kCount,
                relativeRms(in, out));
  }
  for (int bits : {8, 4}) {
    const std::string name = "per-chunk min/max, truncate, " + std::to_string(bits) + " bit";
    std::printf("# %-34s %12.4f %12.3e\n", name.c_str(), bits / 8.0 + 8.0 / kCount,
                relativeRms(in, chunkTruncate(in, bits)));
  }
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
  printErrors();
  registerAll();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
