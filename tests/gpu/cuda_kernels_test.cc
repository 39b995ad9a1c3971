// The CUDA reduction kernels (cuda/kernels.h) against the CPU kernels they
// must match bit for bit: every dtype and op, NaN payloads, infinities,
// subnormals and integer extremes, in place and out of place, with guard
// elements after each buffer that must come back untouched.
//
// Skips, saying why, on a machine without a CUDA device. The argument checks
// run everywhere: they must return before touching the CUDA runtime.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/kernels.h"
#include "gpu/gpu_support.h"
#include "eccl/eccl.h"
#include "reduce/reduce.h"

namespace eccl::cuda {
namespace {

constexpr size_t kGuard = 64;  // elements after each buffer
constexpr uint8_t kGuardByte = 0xa5;

size_t sizeOf(ecclDataType_t dtype) {
  static constexpr size_t kSizes[] = {1, 1, 2, 2, 4, 4, 8, 8, 2, 2, 4, 8};
  return kSizes[dtype];
}

bool isFloat(ecclDataType_t dtype) { return dtype >= ecclFloat16; }

// Stored exponent and mantissa bits of a float dtype.
struct Format {
  int expBits;
  int mantBits;
};

Format formatOf(ecclDataType_t dtype) {
  switch (dtype) {
    case ecclFloat16: return {5, 10};
    case ecclBfloat16: return {8, 7};
    case ecclFloat32: return {8, 23};
    default: return {11, 52};
  }
}

uint64_t load(const uint8_t* p, size_t size) {
  uint64_t bits = 0;
  std::memcpy(&bits, p, size);  // little-endian
  return bits;
}

bool isNan(ecclDataType_t dtype, uint64_t bits) {
  if (!isFloat(dtype)) return false;
  const Format f = formatOf(dtype);
  const uint64_t expMax = (uint64_t{1} << f.expBits) - 1;
  return ((bits >> f.mantBits) & expMax) == expMax && (bits & ((uint64_t{1} << f.mantBits) - 1));
}

// count random elements followed by kGuard guard bytes' worth: any bit
// pattern, integer extremes, and for floats special values (NaN with several
// payloads, infinities, zeros, subnormals) and numbers near 1, whose sums and
// products round.
std::vector<uint8_t> randomData(ecclDataType_t dtype, size_t count, std::mt19937_64& rng) {
  const size_t size = sizeOf(dtype);
  std::vector<uint8_t> out((count + kGuard) * size, kGuardByte);
  const Format f = isFloat(dtype) ? formatOf(dtype) : Format{0, 0};
  const uint64_t expMax = (uint64_t{1} << f.expBits) - 1;
  const uint64_t mantMask = (uint64_t{1} << f.mantBits) - 1;
  const int signShift = static_cast<int>(size * 8 - 1);
  for (size_t i = 0; i < count; ++i) {
    const uint64_t r = rng();
    const uint64_t sign = (r >> 60) & 1;
    uint64_t bits = rng();
    if (!isFloat(dtype)) {
      // 0, 1, all ones, signed min, signed max.
      const uint64_t top = uint64_t{1} << signShift;
      const uint64_t extremes[] = {0, 1, ~uint64_t{0}, top, top - 1};
      if (r % 8 == 0) bits = extremes[(r >> 8) % 5];
    } else if (r % 8 == 0) {
      const uint64_t quiet = uint64_t{1} << (f.mantBits - 1);
      const uint64_t special[][2] = {{0, 0},          {expMax, 0},     {expMax, quiet},
                                     {expMax, 1},     {expMax, mantMask}, {expMax, quiet | 3},
                                     {0, 1},          {0, mantMask},   {expMax - 1, mantMask}};
      const auto& s = special[(r >> 8) % 9];
      bits = sign << signShift | s[0] << f.mantBits | s[1];
    } else if (r % 2 == 0) {
      const uint64_t exp = expMax / 2 + (r >> 8) % 9 - 4;
      bits = sign << signShift | exp << f.mantBits | (bits & mantMask);
    }
    std::memcpy(&out[i * size], &bits, size);
  }
  return out;
}

// Device memory, freed on scope exit.

using CudaKernelsTest = test::GpuTest;
using test::DeviceBuffer;

const size_t kSizes[] = {0, 1, 1000, (size_t{1} << 20) + 3};

// Where dst points: its own buffer (also one element into each buffer, so
// that only element alignment holds), a, b, or a with b == a.
enum class Mode { kDistinct, kOffset, kDstIsA, kDstIsB, kAllSame };
const Mode kModes[] = {Mode::kDistinct, Mode::kOffset, Mode::kDstIsA, Mode::kDstIsB,
                       Mode::kAllSame};

// got vs. the CPU's want, for element i of inputs a and b; the NaN payload of
// a sum or product of two NaNs is the one thing reduce.h leaves open, so
// there the CPU's result with a and b swapped passes too.
void expectSameBits(ecclDataType_t dtype, ecclRedOp_t op, const std::vector<uint8_t>& got,
                    const std::vector<uint8_t>& want, const std::vector<uint8_t>& swapped,
                    const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, size_t count,
                    const std::string& what) {
  const size_t size = sizeOf(dtype);
  size_t bad = 0;
  for (size_t i = 0; i < count && bad < 5; ++i) {
    const uint64_t g = load(&got[i * size], size);
    const uint64_t w = load(&want[i * size], size);
    if (g == w) continue;
    const uint64_t x = load(&a[i * size], size);
    const uint64_t y = load(&b[i * size], size);
    const bool open = op != ecclMax && op != ecclMin && isNan(dtype, x) && isNan(dtype, y);
    if (open && g == load(&swapped[i * size], size)) continue;
    ++bad;
    ADD_FAILURE() << what << " element " << i << std::hex << ": a 0x" << x << " b 0x" << y
                  << " gpu 0x" << g << " cpu 0x" << w;
  }
  for (size_t i = count * size; i < got.size(); ++i) {
    if (got[i] != kGuardByte) {
      ADD_FAILURE() << what << ": wrote past the end, byte " << i - count * size;
      break;
    }
  }
}

TEST_F(CudaKernelsTest, ReduceMatchesCpu) {
  std::mt19937_64 rng(2024);
  for (int d = 0; d < ecclNumTypes; ++d) {
    const auto dtype = static_cast<ecclDataType_t>(d);
    const size_t size = sizeOf(dtype);
    for (size_t count : kSizes) {
      const std::vector<uint8_t> a = randomData(dtype, count, rng);
      const std::vector<uint8_t> b = randomData(dtype, count, rng);
      const size_t bytes = a.size() + size;  // room for kOffset
      DeviceBuffer da(bytes), db(bytes), dd(bytes);
      for (int o = 0; o < ecclNumOps; ++o) {
        const auto op = static_cast<ecclRedOp_t>(o);
        std::vector<uint8_t> want = a, swapped = a, wantSame = a;
        ASSERT_TRUE(reduce::reduce(dtype, op, want.data(), a.data(), b.data(), count));
        ASSERT_TRUE(reduce::reduce(dtype, op, swapped.data(), b.data(), a.data(), count));
        ASSERT_TRUE(reduce::reduce(dtype, op, wantSame.data(), a.data(), a.data(), count));
        for (Mode mode : kModes) {
          const std::string what = "dtype " + std::to_string(d) + " op " + std::to_string(o) +
                                   " count " + std::to_string(count) + " mode " +
                                   std::to_string(static_cast<int>(mode));
          const size_t off = mode == Mode::kOffset ? size : 0;
          ASSERT_EQ(cudaMemcpy(da.get() + off, a.data(), a.size(), cudaMemcpyHostToDevice),
                    cudaSuccess);
          ASSERT_EQ(cudaMemcpy(db.get() + off, b.data(), b.size(), cudaMemcpyHostToDevice),
                    cudaSuccess);
          ASSERT_EQ(cudaMemset(dd.get(), kGuardByte, bytes), cudaSuccess);
          std::byte* x = da.get() + off;
          std::byte* y = mode == Mode::kAllSame ? x : db.get() + off;
          std::byte* dst = mode == Mode::kDstIsA || mode == Mode::kAllSame ? x
                         : mode == Mode::kDstIsB                         ? y
                                                                         : dd.get() + off;
          ASSERT_EQ(launchReduce(dtype, op, dst, x, y, count, stream_), cudaSuccess) << what;
          ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess) << what;
          std::vector<uint8_t> got(a.size());
          ASSERT_EQ(cudaMemcpy(got.data(), dst, got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
          if (mode == Mode::kAllSame) {
            expectSameBits(dtype, op, got, wantSame, wantSame, a, a, count, what);
          } else {
            expectSameBits(dtype, op, got, want, swapped, a, b, count, what);
          }
          if (::testing::Test::HasFailure()) return;
        }
      }
    }
  }
}

TEST_F(CudaKernelsTest, DivideMatchesCpu) {
  std::mt19937_64 rng(99);
  const uint64_t divisors[] = {1,          3,          7,          128,        129,
                               256,        32768,      65536,      0x80000000, 1ull << 32,
                               1ull << 63, ~0ull,      rng() >> 20};
  for (int d = 0; d < ecclNumTypes; ++d) {
    const auto dtype = static_cast<ecclDataType_t>(d);
    for (size_t count : kSizes) {
      const std::vector<uint8_t> data = randomData(dtype, count, rng);
      DeviceBuffer dev(data.size());
      for (uint64_t divisor : divisors) {
        const std::string what = "dtype " + std::to_string(d) + " count " +
                                 std::to_string(count) + " divisor " + std::to_string(divisor);
        std::vector<uint8_t> want = data;
        ASSERT_TRUE(reduce::divide(dtype, want.data(), count, divisor));
        ASSERT_EQ(cudaMemcpy(dev.get(), data.data(), data.size(), cudaMemcpyHostToDevice),
                  cudaSuccess);
        ASSERT_EQ(launchDivide(dtype, dev.get(), count, divisor, stream_), cudaSuccess) << what;
        ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess) << what;
        std::vector<uint8_t> got(data.size());
        ASSERT_EQ(cudaMemcpy(got.data(), dev.get(), got.size(), cudaMemcpyDeviceToHost),
                  cudaSuccess);
        // One operand only: no open case, so want doubles as `swapped`.
        expectSameBits(dtype, ecclMax, got, want, want, data, data, count, what);
        if (::testing::Test::HasFailure()) return;
      }
    }
  }
}

// No device needed: bad arguments are refused before any CUDA call, and
// count 0 does nothing (the null pointers are never touched).
TEST(CudaKernelsArgsTest, RefusesBadArgumentsWithoutLaunching) {
  const auto badType = static_cast<ecclDataType_t>(ecclNumTypes);
  const auto badOp = static_cast<ecclRedOp_t>(ecclNumOps);
  EXPECT_EQ(launchReduce(badType, ecclSum, nullptr, nullptr, nullptr, 10, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(launchReduce(static_cast<ecclDataType_t>(15), ecclSum, nullptr, nullptr, nullptr, 10,
                         nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(launchReduce(ecclFloat32, badOp, nullptr, nullptr, nullptr, 10, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(launchReduce(ecclFloat32, badOp, nullptr, nullptr, nullptr, 0, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(launchDivide(ecclInt32, nullptr, 10, 0, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(launchDivide(badType, nullptr, 10, 2, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(launchReduce(ecclFloat32, ecclSum, nullptr, nullptr, nullptr, 0, nullptr),
            cudaSuccess);
  EXPECT_EQ(launchDivide(ecclFloat32, nullptr, 0, 3, nullptr), cudaSuccess);
}

}  // namespace
}  // namespace eccl::cuda
