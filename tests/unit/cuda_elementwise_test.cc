// The CUDA kernels' per-element code (cuda/elementwise.h), compiled for the
// host, against the CPU kernels it must match bit for bit: reduce::reduce,
// reduce::divide and common/half.h. Needs no GPU and no CUDA headers; the
// device build of the same code is checked by tests/gpu/cuda_kernels_test.cc.
//
// One thing the host build cannot show by itself: on a GPU, float arithmetic
// returns a canonical NaN instead of the CPU's, and propagateNan() must put
// the CPU's back. CanonicalNanIsRepaired feeds it the GPU's NaN.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "common/half.h"
#include "cuda/elementwise.h"
#include "eccl/eccl.h"
#include "reduce/reduce.h"

namespace eccl::cuda {
namespace {

// ---- Element types as bit patterns -------------------------------------------

// A float format: stored exponent and mantissa bits.
struct Format {
  int expBits;
  int mantBits;
};

template <typename C>
constexpr bool kIsFloat = !std::is_integral_v<typename C::Compute>;

template <typename C>
constexpr Format formatOf() {
  if constexpr (std::is_same_v<C, Half>) return {5, 10};
  if constexpr (std::is_same_v<C, Bfloat16>) return {8, 7};
  if constexpr (std::is_same_v<typename C::Storage, float>) return {8, 23};
  if constexpr (std::is_same_v<typename C::Storage, double>) return {11, 52};
  return {0, 0};
}

template <typename S>
uint64_t toBits(S x) {
  if constexpr (sizeof(S) == 1) return static_cast<uint8_t>(x);
  if constexpr (sizeof(S) == 2) return std::bit_cast<uint16_t>(x);
  if constexpr (sizeof(S) == 4) return std::bit_cast<uint32_t>(x);
  if constexpr (sizeof(S) == 8) return std::bit_cast<uint64_t>(x);
}

template <typename S>
S fromBits(uint64_t bits) {
  if constexpr (sizeof(S) == 1) return std::bit_cast<S>(static_cast<uint8_t>(bits));
  if constexpr (sizeof(S) == 2) return std::bit_cast<S>(static_cast<uint16_t>(bits));
  if constexpr (sizeof(S) == 4) return std::bit_cast<S>(static_cast<uint32_t>(bits));
  if constexpr (sizeof(S) == 8) return std::bit_cast<S>(bits);
}

template <typename C>
bool isNan(typename C::Storage x) {
  if constexpr (!kIsFloat<C>) {
    return false;
  } else {
    constexpr Format f = formatOf<C>();
    const uint64_t bits = toBits(x);
    const uint64_t mant = bits & ((uint64_t{1} << f.mantBits) - 1);
    const uint64_t exp = (bits >> f.mantBits) & ((uint64_t{1} << f.expBits) - 1);
    return exp == (uint64_t{1} << f.expBits) - 1 && mant != 0;
  }
}

template <typename C>
typename C::Storage floatBits(uint64_t sign, uint64_t exp, uint64_t mant) {
  constexpr Format f = formatOf<C>();
  return fromBits<typename C::Storage>(sign << (f.expBits + f.mantBits) | exp << f.mantBits |
                                       (mant & ((uint64_t{1} << f.mantBits) - 1)));
}

// Values every pair of which is tried: zeros, infinities, NaNs of both signs
// with several payloads (quiet and signalling), subnormals, range edges, and
// a few ordinary numbers; for integers the extremes and their neighbours.
template <typename C>
std::vector<typename C::Storage> specials() {
  using S = typename C::Storage;
  std::vector<S> out;
  if constexpr (!kIsFloat<C>) {
    const S lo = minOf<S>();
    const S hi = maxOf<S>();
    for (S x : {S(0), S(1), S(2), S(3), S(-1), S(-2), lo, S(lo + 1), hi, S(hi - 1), S(hi / 2),
                S(hi / 2 + 1), S(lo / 2)}) {
      out.push_back(x);
    }
  } else {
    constexpr Format f = formatOf<C>();
    const uint64_t expMax = (uint64_t{1} << f.expBits) - 1;
    const uint64_t mantAll = (uint64_t{1} << f.mantBits) - 1;
    const uint64_t quietBit = uint64_t{1} << (f.mantBits - 1);
    const uint64_t bias = expMax / 2;
    for (uint64_t sign : {0, 1}) {
      for (auto [exp, mant] : std::initializer_list<std::pair<uint64_t, uint64_t>>{
               {0, 0},                           // zero
               {expMax, 0},                      // infinity
               {expMax, quietBit},               // the plain quiet NaN
               {expMax, quietBit | 1},           // quiet, low payload
               {expMax, mantAll},                // quiet, all payload bits
               {expMax, 1},                      // signalling, low payload
               {expMax, quietBit >> 1},          // signalling, top payload bit
               {expMax, (quietBit - 1) ^ 0x5},   // signalling, mixed payload
               {0, 1},                           // smallest subnormal
               {0, mantAll},                     // largest subnormal
               {0, quietBit},                    // half the smallest normal
               {1, 0},                           // smallest normal
               {expMax - 1, mantAll},            // largest finite
               {expMax - 1, 0},
               {bias, 0},                        // 1
               {bias, 1},                        // 1 + ulp
               {bias, quietBit},                 // 1.5
               {bias - f.mantBits - 1, 0},       // half an ulp of 1: a tie
               {bias + 1, mantAll}}) {           // just under 4
        out.push_back(floatBits<C>(sign, exp, mant));
      }
    }
  }
  return out;
}

// A random element: a special value, any bit pattern, or (for floats) a
// number of moderate exponent near `center`, so that two of them round
// nontrivially when combined.
template <typename C>
typename C::Storage randomValue(std::mt19937_64& rng, const std::vector<typename C::Storage>& sp,
                                uint64_t center) {
  const uint64_t r = rng();
  if (r % 8 == 0) return sp[(r >> 8) % sp.size()];
  if (!kIsFloat<C> || r % 8 < 4) return fromBits<typename C::Storage>(rng());
  constexpr Format f = formatOf<C>();
  const uint64_t expMax = (uint64_t{1} << f.expBits) - 1;
  const int64_t exp = static_cast<int64_t>(center) + static_cast<int64_t>((r >> 8) % 9) - 4;
  const uint64_t clamped = exp < 0 ? 0 : (exp >= int64_t(expMax) ? expMax - 1 : uint64_t(exp));
  return floatBits<C>((r >> 20) & 1, clamped, rng());
}

template <typename S>
std::string hexOf(S x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(toBits(x)));
  return buf;
}

// ---- 16-bit conversions against half.h -------------------------------------------

TEST(CudaElementwiseTest, WideningMatchesHalfHOnEveryPattern) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const auto bits = static_cast<uint16_t>(h);
    ASSERT_EQ(bitsOf(halfToFloat(bits)), std::bit_cast<uint32_t>(eccl::halfToFloat(bits)))
        << std::hex << h;
    ASSERT_EQ(bitsOf(bf16ToFloat(bits)), std::bit_cast<uint32_t>(eccl::bf16ToFloat(bits)))
        << std::hex << h;
  }
}

TEST(CudaElementwiseTest, NarrowingMatchesHalfH) {
  std::vector<uint32_t> inputs;
  // Around every 16-bit value widened: the ties of float16 (13 dropped bits)
  // and bfloat16 (16), one float ulp either side, and the neighbours.
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    for (uint32_t w : {std::bit_cast<uint32_t>(eccl::halfToFloat(static_cast<uint16_t>(h))),
                       std::bit_cast<uint32_t>(eccl::bf16ToFloat(static_cast<uint16_t>(h)))}) {
      for (uint32_t delta : {0u, 1u, 0xfffu, 0x1000u, 0x1001u, 0x7fffu, 0x8000u, 0x8001u,
                             0u - 1u, 0u - 0x1000u, 0u - 0x8000u}) {
        inputs.push_back(w + delta);
      }
    }
  }
  // Random patterns: uniformly, and from the float range where float16's
  // subnormals and overflow are decided.
  std::mt19937_64 rng(7);
  for (int i = 0; i < 3'000'000; ++i) inputs.push_back(static_cast<uint32_t>(rng()));
  for (int i = 0; i < 1'000'000; ++i) {
    const uint64_t r = rng();
    const uint32_t exp = 100 + static_cast<uint32_t>((r >> 32) % 48);  // 2^-27 .. 2^20
    inputs.push_back(static_cast<uint32_t>((r >> 63) << 31 | exp << 23 | (r & 0x7fffff)));
  }
  for (uint32_t bits : inputs) {
    const float f = std::bit_cast<float>(bits);
    ASSERT_EQ(floatToHalf(f), eccl::floatToHalf(f)) << std::hex << bits;
    ASSERT_EQ(floatToBf16(f), eccl::floatToBf16(f)) << std::hex << bits;
  }
}

// ---- Reductions against reduce::reduce ---------------------------------------------

// Whether reduce.h leaves the result's bits open: a NaN payload from a sum or
// product of two NaNs depends on the operand order the compiler chose.
template <typename C>
bool eitherNanPayload(ecclRedOp_t op, typename C::Storage a, typename C::Storage b) {
  return (op == ecclSum || op == ecclAvg || op == ecclProd) && isNan<C>(a) && isNan<C>(b);
}

template <typename C, typename Op>
void checkReduce(ecclDataType_t dtype, ecclRedOp_t op) {
  using S = typename C::Storage;
  const std::vector<S> sp = specials<C>();
  std::vector<S> a, b;
  for (S x : sp) {
    for (S y : sp) {
      a.push_back(x);
      b.push_back(y);
    }
  }
  std::mt19937_64 rng(1000 * dtype + op);
  constexpr Format f = formatOf<C>();
  const uint64_t expRange = (uint64_t{1} << f.expBits) - 1;
  for (int i = 0; i < (1 << 18); ++i) {
    const uint64_t center = expRange ? rng() % expRange : 0;
    a.push_back(randomValue<C>(rng, sp, center));
    b.push_back(randomValue<C>(rng, sp, center));
  }
  // float16 has two CPU paths (F16C and portable); both must match.
  const bool hasF16c = reduce::useFloat16Hardware(true);
  for (bool hardware : {true, false}) {
    if (hardware && !(hasF16c && dtype == ecclFloat16)) continue;
    reduce::useFloat16Hardware(hardware);
    std::vector<S> got(a.size());
    ASSERT_TRUE(reduce::reduce(dtype, op, got.data(), a.data(), b.data(), a.size()));
    size_t openCases = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const S want = combine<C, Op>(a[i], b[i]);
      if (eitherNanPayload<C>(op, a[i], b[i])) {
        ++openCases;
        const S swapped = combine<C, Op>(b[i], a[i]);
        ASSERT_TRUE(toBits(got[i]) == toBits(want) || toBits(got[i]) == toBits(swapped))
            << "dtype " << dtype << " op " << op << " hw " << hardware << " a " << hexOf(a[i])
            << " b " << hexOf(b[i]) << " cpu " << hexOf(got[i]) << " ew " << hexOf(want);
        continue;
      }
      ASSERT_EQ(toBits(got[i]), toBits(want))
          << "dtype " << dtype << " op " << op << " hw " << hardware << " a " << hexOf(a[i])
          << " b " << hexOf(b[i]) << " cpu " << hexOf(got[i]) << " ew " << hexOf(want);
    }
    // Most pairs are held to exact bits, not the open case.
    EXPECT_LT(openCases, a.size() / 4);
  }
  reduce::useFloat16Hardware(hasF16c);
}

TEST(CudaElementwiseTest, ReduceMatchesCpuForEveryDtypeAndOp) {
  for (int d = 0; d < ecclNumTypes; ++d) {
    for (int o = 0; o < ecclNumOps; ++o) {
      const auto dtype = static_cast<ecclDataType_t>(d);
      const auto op = static_cast<ecclRedOp_t>(o);
      SCOPED_TRACE("dtype " + std::to_string(d) + " op " + std::to_string(o));
      const bool known = withCodec(dtype, [&](auto codec) {
        EXPECT_TRUE(withOp(op, [&](auto operation) {
          checkReduce<decltype(codec), decltype(operation)>(dtype, op);
        }));
      });
      ASSERT_TRUE(known);
    }
  }
}

// (15 and 7: out of range, yet values the enums can hold in C++.)
TEST(CudaElementwiseTest, DispatchRejectsOutOfRange) {
  EXPECT_FALSE(withCodec(ecclNumTypes, [](auto) { ADD_FAILURE(); }));
  EXPECT_FALSE(withCodec(static_cast<ecclDataType_t>(15), [](auto) { ADD_FAILURE(); }));
  EXPECT_FALSE(withOp(ecclNumOps, [](auto) { ADD_FAILURE(); }));
  EXPECT_FALSE(withOp(static_cast<ecclRedOp_t>(7), [](auto) { ADD_FAILURE(); }));
}

// The documented choices, by value.
TEST(CudaElementwiseTest, NanAndSignedZeroRules) {
  const float qa = floatFrom(0x7fc00001u), sb = floatFrom(0xff800002u);
  EXPECT_EQ(bitsOf(Sum::apply(qa, sb)), 0x7fc00001u);  // both NaN: a's
  EXPECT_EQ(bitsOf(Sum::apply(1.0f, sb)), 0xffc00002u);  // the NaN operand, quieted
  EXPECT_EQ(bitsOf(Max::apply(sb, 1.0f)), 0xff800002u);  // max/min select: not quieted
  EXPECT_EQ(bitsOf(Min::apply(1.0f, sb)), 0xff800002u);
  EXPECT_EQ(bitsOf(Max::apply(0.0f, -0.0f)), 0x80000000u);  // equal: b
  EXPECT_EQ(bitsOf(Min::apply(-0.0f, 0.0f)), 0u);
  EXPECT_EQ(bitsOf(Sum::apply(INFINITY, -INFINITY)), kDefaultNan32);
  EXPECT_EQ(bitsOf(Prod::apply(0.0, double{INFINITY})), kDefaultNan64);
  EXPECT_EQ(Sum::apply<int8_t>(127, 1), -128);
  EXPECT_EQ(Prod::apply<uint16_t>(0xffff, 0xffff), 1);  // no int overflow on promotion
  EXPECT_EQ(Prod::apply<int64_t>(minOf<int64_t>(), -1), minOf<int64_t>());
}

// The device's float32 arithmetic returns the canonical NaN 0x7fffffff for
// every NaN result (float64 need not keep payloads either). Given that in
// place of the CPU's NaN, propagateNan() must still produce the CPU's bits.
template <typename F>
void checkCanonicalNanRepair() {
  using C = Native<F>;
  const F canonical = fromBits<F>(sizeof(F) == 4 ? 0x7fffffffu : 0x7fffffffffffffffu);
  const std::vector<F> sp = specials<C>();
  int nanResults = 0;
  for (F a : sp) {
    for (F b : sp) {
      for (int k = 0; k < 3; ++k) {
        const F cpu = k == 0 ? a + b : k == 1 ? a * b : a / b;
        if (cpu == cpu) continue;  // NOLINT(misc-redundant-expression)
        ++nanResults;
        const F repaired = propagateNan(canonical, a, b);
        if (a != a && b != b) {  // NOLINT(misc-redundant-expression)
          ASSERT_TRUE(toBits(repaired) == toBits(quiet(a))) << hexOf(a) << " " << hexOf(b);
          continue;
        }
        ASSERT_EQ(toBits(repaired), toBits(cpu)) << k << " " << hexOf(a) << " " << hexOf(b);
      }
    }
  }
  EXPECT_GT(nanResults, 100);
}

TEST(CudaElementwiseTest, CanonicalNanIsRepaired) {
  checkCanonicalNanRepair<float>();
  checkCanonicalNanRepair<double>();
}

// ---- Division against reduce::divide ------------------------------------------------

template <typename C>
void checkDivide(ecclDataType_t dtype) {
  using S = typename C::Storage;
  const std::vector<S> sp = specials<C>();
  std::mt19937_64 rng(77 + dtype);
  std::vector<uint64_t> divisors = {1,          2,          3,          7,          10,
                                    127,        128,        129,        255,        256,
                                    257,        32767,      32768,      32769,      65535,
                                    65536,      0x7fffffff, 0x80000000, 0x80000001, 0xffffffff,
                                    1ull << 32, 1ull << 53, (1ull << 53) + 1,
                                    (1ull << 63) - 1,       1ull << 63, (1ull << 63) + 1,
                                    ~0ull,      ~0ull - 1};
  for (int i = 0; i < 8; ++i) divisors.push_back(rng() >> (rng() % 64));
  for (int i = 0; i < 8; ++i) divisors.push_back(1 + rng() % 1000);
  constexpr Format f = formatOf<C>();
  const uint64_t expRange = (uint64_t{1} << f.expBits) - 1;
  const bool hasF16c = reduce::useFloat16Hardware(true);
  for (uint64_t divisor : divisors) {
    if (divisor == 0) continue;
    std::vector<S> data = sp;
    for (int i = 0; i < 4096; ++i) {
      data.push_back(randomValue<C>(rng, sp, expRange ? rng() % expRange : 0));
    }
    const Divider<C> divider(divisor);
    for (bool hardware : {true, false}) {
      if (hardware && !(hasF16c && dtype == ecclFloat16)) continue;
      reduce::useFloat16Hardware(hardware);
      std::vector<S> got = data;
      ASSERT_TRUE(reduce::divide(dtype, got.data(), got.size(), divisor));
      for (size_t i = 0; i < data.size(); ++i) {
        ASSERT_EQ(toBits(got[i]), toBits(divider.apply(data[i])))
            << "dtype " << dtype << " divisor " << divisor << " hw " << hardware << " x "
            << hexOf(data[i]) << " cpu " << hexOf(got[i]);
      }
    }
  }
  reduce::useFloat16Hardware(hasF16c);
}

TEST(CudaElementwiseTest, DivideMatchesCpuForEveryDtype) {
  for (int d = 0; d < ecclNumTypes; ++d) {
    const auto dtype = static_cast<ecclDataType_t>(d);
    SCOPED_TRACE("dtype " + std::to_string(d));
    ASSERT_TRUE(withCodec(dtype, [&](auto codec) { checkDivide<decltype(codec)>(dtype); }));
  }
}

TEST(CudaElementwiseTest, IntegerDivisorBeyondTheType) {
  EXPECT_EQ(Divider<Native<int8_t>>(128).apply(-128), -1);
  EXPECT_EQ(Divider<Native<int8_t>>(128).apply(127), 0);
  EXPECT_EQ(Divider<Native<int8_t>>(129).apply(-128), 0);
  EXPECT_EQ(Divider<Native<int8_t>>(3).apply(-7), -2);  // truncates toward zero
  EXPECT_EQ(Divider<Native<uint8_t>>(256).apply(255), 0);
  EXPECT_EQ(Divider<Native<int64_t>>(1ull << 63).apply(minOf<int64_t>()), -1);
  EXPECT_EQ(Divider<Native<uint64_t>>(~0ull).apply(~0ull), 1u);
}

}  // namespace
}  // namespace eccl::cuda
