// The cases the CUDA codec kernels are checked on, shared by the host test of
// their per-element code (tests/unit/cuda_codec_elementwise_test.cc) and the
// GPU test (tests/gpu/cuda_codec_test.cc): the grid of codecs, source dtypes,
// block sizes, counts and seeds, and data generators of every awkward kind.
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "common/half.h"
#include "eccl/eccl.h"

namespace eccl::test::codec_cases {

using Bytes = std::vector<std::byte>;

inline constexpr ecclDataType_t kSources[] = {ecclFloat32, ecclFloat64, ecclFloat16, ecclBfloat16};
inline constexpr ecclQuantization_t kCodecs[] = {ecclQuantFloat16, ecclQuantBfloat16,
                                                 ecclQuantUint8, ecclQuantUint4};
inline constexpr size_t kCounts[] = {0, 1, 7, 1000, 100003};
inline const std::vector<uint32_t> kBlockList = {8, 256, 32768};
inline constexpr uint64_t kSeeds[] = {0, 12345, 0xdeadbeefcafef00dULL};

// ---- Data ---------------------------------------------------------------------------

inline uint64_t loadBits(ecclDataType_t dt, const Bytes& buf, size_t i) {
  uint64_t v = 0;
  std::memcpy(&v, buf.data() + i * dtypeSize(dt), dtypeSize(dt));  // little-endian
  return v;
}

inline void storeBits(ecclDataType_t dt, Bytes& buf, size_t i, uint64_t bits) {
  std::memcpy(buf.data() + i * dtypeSize(dt), &bits, dtypeSize(dt));
}

// Stored exponent and mantissa bits.
struct Format {
  int expBits;
  int mantBits;
};

inline Format formatOf(ecclDataType_t dt) {
  switch (dt) {
    case ecclFloat16: return {5, 10};
    case ecclBfloat16: return {8, 7};
    case ecclFloat32: return {8, 23};
    default: return {11, 52};
  }
}

inline bool isNan(ecclDataType_t dt, uint64_t bits) {
  const Format f = formatOf(dt);
  const uint64_t expMax = (uint64_t{1} << f.expBits) - 1;
  return ((bits >> f.mantBits) & expMax) == expMax && (bits & ((uint64_t{1} << f.mantBits) - 1));
}

inline uint64_t bitsOfValue(ecclDataType_t dt, double v) {
  switch (dt) {
    case ecclFloat32: return std::bit_cast<uint32_t>(static_cast<float>(v));
    case ecclFloat64: return std::bit_cast<uint64_t>(v);
    case ecclFloat16: return floatToHalf(static_cast<float>(v));
    default: return floatToBf16(static_cast<float>(v));
  }
}

inline uint64_t makeBits(ecclDataType_t dt, uint64_t sign, uint64_t exp, uint64_t mant) {
  const Format f = formatOf(dt);
  return sign << (f.expBits + f.mantBits) | exp << f.mantBits |
         (mant & ((uint64_t{1} << f.mantBits) - 1));
}

// A value of one of the kinds below, as bits of dt.
class Generator {
 public:
  Generator(ecclDataType_t dt, uint64_t seed) : dt_(dt), f_(formatOf(dt)), rng_(seed) {}

  // NaN (quiet and signalling, several payloads), infinities, zeros,
  // subnormals, the largest finite values.
  uint64_t special() {
    const uint64_t expMax = (uint64_t{1} << f_.expBits) - 1;
    const uint64_t mantAll = (uint64_t{1} << f_.mantBits) - 1;
    const uint64_t quiet = uint64_t{1} << (f_.mantBits - 1);
    const uint64_t kinds[][2] = {{expMax, quiet}, {expMax, quiet | 5}, {expMax, 1},
                                 {expMax, mantAll}, {expMax, 0},       {0, 0},
                                 {0, 1},            {0, mantAll},      {expMax - 1, mantAll},
                                 {1, 0}};
    const auto& k = kinds[rng_() % std::size(kinds)];
    return makeBits(dt_, rng_() & 1, k[0], k[1]);
  }

  uint64_t finiteBits() {
    const uint64_t expMax = (uint64_t{1} << f_.expBits) - 1;
    return makeBits(dt_, rng_() & 1, rng_() % expMax, rng_());
  }

  // count elements in stretches of one kind each, some shorter than the
  // smallest block (several kinds in one block), some longer than the largest.
  Bytes buffer(size_t count) {
    Bytes buf(count * dtypeSize(dt_));
    for (size_t i = 0; i < count;) {
      const size_t len = std::min<size_t>(count - i, rng_() % 2 ? 1 + rng_() % 64
                                                                  : 1 + rng_() % 40000);
      fill(buf, i, len, rng_() % 10);
      i += len;
    }
    return buf;
  }

 private:
  void fill(Bytes& buf, size_t begin, size_t len, uint64_t kind) {
    std::normal_distribution<double> normal(0.0, 1.0);
    const double sigma = std::pow(10.0, static_cast<double>(rng_() % 21) - 10);  // 1e-10..1e10
    const double mean = rng_() % 4 == 0 ? sigma * 100 : 0.0;
    const uint64_t constant = rng_() % 3 == 0 ? special() : bitsOfValue(dt_, mean + sigma);
    const uint64_t base = finiteBits();
    for (size_t i = begin; i < begin + len; ++i) {
      uint64_t bits = 0;
      switch (kind) {
        case 0: bits = bitsOfValue(dt_, mean + sigma * normal(rng_)); break;
        case 1: bits = constant; break;  // NaN, inf, ±0 or a number, all alike
        case 2: bits = makeBits(dt_, rng_() & 1, 0, 0); break;  // -0 and +0
        case 3: bits = finiteBits(); break;  // huge and tiny together
        case 4: bits = rng_(); break;        // any pattern, NaN payloads included
        case 5:
          bits = rng_() % 64 == 0 ? special() : bitsOfValue(dt_, mean + sigma * normal(rng_));
          break;
        case 6: {  // the largest finite values of both signs: hi - lo overflows
          const uint64_t expMax = (uint64_t{1} << f_.expBits) - 1;
          bits = makeBits(dt_, rng_() & 1, expMax - 1, ~uint64_t{0} - rng_() % 4);
          break;
        }
        case 7: bits = base + rng_() % 4; break;  // within a few ulps: scale may underflow
        case 8: bits = makeBits(dt_, rng_() & 1, 0, rng_()); break;  // subnormal
        default: bits = makeBits(dt_, 0, 0, rng_() % 3); break;  // the tiniest range
      }
      storeBits(dt_, buf, i, bits);
    }
  }

  ecclDataType_t dt_;
  Format f_;
  std::mt19937_64 rng_;
};

}  // namespace eccl::test::codec_cases
