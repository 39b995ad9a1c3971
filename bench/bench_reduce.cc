// Throughput of the CPU reduction kernels on 4 MiB buffers.
//
// Bytes per second count one input buffer (count * element size) per call,
// the unit the all-reduce cost model uses; the kernel itself moves three
// buffers' worth (two reads, one write).
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/dtype.h"
#include "eccl/eccl.h"
#include "reduce/reduce.h"

namespace {

constexpr size_t kBufferBytes = size_t{4} << 20;

// Inputs are small positive values of the dtype (all bytes 0x01 or a float
// near 1), so sums and products stay finite and no slow path is timed.
std::vector<unsigned char> makeBuffer(ecclDataType_t dtype) {
  std::vector<unsigned char> buf(kBufferBytes, 0x01);
  const size_t n = kBufferBytes / eccl::dtypeSize(dtype);
  for (size_t i = 0; i < n; ++i) {
    switch (dtype) {
      case ecclFloat16: reinterpret_cast<uint16_t*>(buf.data())[i] = 0x3c00; break;  // 1.0
      case ecclBfloat16: reinterpret_cast<uint16_t*>(buf.data())[i] = 0x3f80; break;
      case ecclFloat32: reinterpret_cast<float*>(buf.data())[i] = 1.0f; break;
      case ecclFloat64: reinterpret_cast<double*>(buf.data())[i] = 1.0; break;
      default: return buf;
    }
  }
  return buf;
}

// dst == a, the in-place accumulate step of a ring all-reduce.
void bmReduceInPlace(benchmark::State& state, ecclDataType_t dtype, ecclRedOp_t op) {
  std::vector<unsigned char> acc = makeBuffer(dtype);
  const std::vector<unsigned char> in = makeBuffer(dtype);
  const size_t count = kBufferBytes / eccl::dtypeSize(dtype);
  for (auto _ : state) {
    if (!eccl::reduce::reduce(dtype, op, acc.data(), acc.data(), in.data(), count)) {
      state.SkipWithError("reduce rejected its arguments");
      break;
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(kBufferBytes));
}

// Three distinct buffers, as when reducing a received chunk into a copy.
void bmReduceOutOfPlace(benchmark::State& state, ecclDataType_t dtype, ecclRedOp_t op) {
  const std::vector<unsigned char> a = makeBuffer(dtype);
  const std::vector<unsigned char> b = makeBuffer(dtype);
  std::vector<unsigned char> out(kBufferBytes);
  const size_t count = kBufferBytes / eccl::dtypeSize(dtype);
  for (auto _ : state) {
    if (!eccl::reduce::reduce(dtype, op, out.data(), a.data(), b.data(), count)) {
      state.SkipWithError("reduce rejected its arguments");
      break;
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(kBufferBytes));
}

// float16 without F16C, as on CPUs that lack it (the default uses it).
void bmReduceInPlacePortableF16(benchmark::State& state, ecclRedOp_t op) {
  eccl::reduce::useFloat16Hardware(false);
  bmReduceInPlace(state, ecclFloat16, op);
  eccl::reduce::useFloat16Hardware(true);
}

void bmDivide(benchmark::State& state, ecclDataType_t dtype) {
  std::vector<unsigned char> data = makeBuffer(dtype);
  const size_t count = kBufferBytes / eccl::dtypeSize(dtype);
  for (auto _ : state) {
    // Dividing by 1 keeps the values (and so the timing) steady.
    if (!eccl::reduce::divide(dtype, data.data(), count, 1)) {
      state.SkipWithError("divide rejected its arguments");
      break;
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(kBufferBytes));
}

BENCHMARK_CAPTURE(bmReduceInPlace, f32_sum, ecclFloat32, ecclSum);
BENCHMARK_CAPTURE(bmReduceInPlace, f32_max, ecclFloat32, ecclMax);
BENCHMARK_CAPTURE(bmReduceInPlace, f32_prod, ecclFloat32, ecclProd);
BENCHMARK_CAPTURE(bmReduceInPlace, f64_sum, ecclFloat64, ecclSum);
BENCHMARK_CAPTURE(bmReduceInPlace, f64_max, ecclFloat64, ecclMax);
BENCHMARK_CAPTURE(bmReduceInPlace, f16_sum, ecclFloat16, ecclSum);
BENCHMARK_CAPTURE(bmReduceInPlace, f16_max, ecclFloat16, ecclMax);
BENCHMARK_CAPTURE(bmReduceInPlacePortableF16, f16_sum_portable, ecclSum);
BENCHMARK_CAPTURE(bmReduceInPlacePortableF16, f16_max_portable, ecclMax);
BENCHMARK_CAPTURE(bmReduceInPlace, bf16_sum, ecclBfloat16, ecclSum);
BENCHMARK_CAPTURE(bmReduceInPlace, bf16_max, ecclBfloat16, ecclMax);
BENCHMARK_CAPTURE(bmReduceInPlace, i32_sum, ecclInt32, ecclSum);
BENCHMARK_CAPTURE(bmReduceInPlace, i32_max, ecclInt32, ecclMax);
BENCHMARK_CAPTURE(bmReduceOutOfPlace, f32_sum, ecclFloat32, ecclSum);
BENCHMARK_CAPTURE(bmReduceOutOfPlace, f16_sum, ecclFloat16, ecclSum);
BENCHMARK_CAPTURE(bmDivide, f32, ecclFloat32);
BENCHMARK_CAPTURE(bmDivide, f16, ecclFloat16);
BENCHMARK_CAPTURE(bmDivide, i32, ecclInt32);

}  // namespace

BENCHMARK_MAIN();
