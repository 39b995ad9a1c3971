// Tests for common/half.h, common/dtype.h and the CPU reduction kernels.
//
// Every expected value comes from a reference written here independently of
// the code under test: 16-bit floats are decoded with ldexp and rounded with
// nearbyint in double precision, integers are combined in uint64_t or
// __int128, so a shared bug cannot hide in both.
#include <gtest/gtest.h>

#include <bit>
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "common/dtype.h"
#include "common/half.h"
#include "eccl/eccl.h"
#include "reduce/reduce.h"

namespace eccl {
namespace {

// ---- Reference conversions ------------------------------------------------

// A binary format with `mantBits` stored mantissa bits and exponent bias
// `bias`: float16 is (10, 15), bfloat16 is (7, 127).
struct Format {
  int mantBits;
  int expBits;
  int bias;
};
constexpr Format kHalf{10, 5, 15};
constexpr Format kBf16{7, 8, 127};

double refDecode(Format fmt, uint16_t bits) {
  const int expMax = (1 << fmt.expBits) - 1;
  const int e = (bits >> fmt.mantBits) & expMax;
  const int m = bits & ((1 << fmt.mantBits) - 1);
  const double sign = (bits & 0x8000) ? -1.0 : 1.0;
  if (e == expMax) return m ? std::nan("") : sign * INFINITY;
  if (e == 0) return sign * std::ldexp(m, 1 - fmt.bias - fmt.mantBits);
  return sign * std::ldexp((1 << fmt.mantBits) + m, e - fmt.bias - fmt.mantBits);
}

// Correctly rounded (nearest, ties to even) encoding of x; NaN gives the
// canonical quiet NaN, which tests compare only as "some quiet NaN".
uint16_t refEncode(Format fmt, double x) {
  const int expMax = (1 << fmt.expBits) - 1;
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  if (std::isnan(x)) return static_cast<uint16_t>(sign | (expMax << fmt.mantBits) |
                                                  (1 << (fmt.mantBits - 1)));
  const double a = std::fabs(x);
  if (std::isinf(a)) return static_cast<uint16_t>(sign | (expMax << fmt.mantBits));
  const int minExp = 1 - fmt.bias;  // exponent of the smallest normal
  if (a < std::ldexp(1.0, minExp)) {
    // Subnormal grid: multiples of 2^(minExp - mantBits). A result of
    // 2^mantBits is the smallest normal, whose encoding is the same number.
    const double q = std::nearbyint(std::ldexp(a, fmt.mantBits - minExp));
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(q));
  }
  int e = 0;
  std::frexp(a, &e);  // a in [2^(e-1), 2^e)
  double q = std::nearbyint(std::ldexp(a, fmt.mantBits + 1 - e));  // in [2^m, 2^(m+1)]
  if (q == std::ldexp(1.0, fmt.mantBits + 1)) {
    q /= 2;
    ++e;
  }
  const int biased = e - 1 + fmt.bias;
  if (biased >= expMax) return static_cast<uint16_t>(sign | (expMax << fmt.mantBits));
  return static_cast<uint16_t>(sign | (biased << fmt.mantBits) |
                               (static_cast<int>(q) - (1 << fmt.mantBits)));
}

bool isNanBits(Format fmt, uint16_t bits) {
  const int expMax = (1 << fmt.expBits) - 1;
  return ((bits >> fmt.mantBits) & expMax) == expMax && (bits & ((1 << fmt.mantBits) - 1));
}
bool isQuietNanBits(Format fmt, uint16_t bits) {
  return isNanBits(fmt, bits) && (bits & (1 << (fmt.mantBits - 1)));
}

TEST(HalfTest, RoundTripsEveryFloat16) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const auto bits = static_cast<uint16_t>(h);
    const float f = halfToFloat(bits);
    const double ref = refDecode(kHalf, bits);
    if (std::isnan(ref)) {
      // Widening is exact: sign, exponent and payload bits all kept.
      const uint32_t expect = (h & 0x8000u) << 16 | 0x7f800000u | (h & 0x3ffu) << 13;
      ASSERT_EQ(std::bit_cast<uint32_t>(f), expect) << std::hex << h;
      const uint16_t back = floatToHalf(f);
      ASSERT_TRUE(isQuietNanBits(kHalf, back)) << std::hex << h;
      ASSERT_EQ(back & 0x8000, h & 0x8000) << std::hex << h;
      ASSERT_EQ(back & 0x1ff, h & 0x1ff) << "payload below the quiet bit " << std::hex << h;
    } else {
      ASSERT_EQ(std::bit_cast<uint64_t>(static_cast<double>(f)), std::bit_cast<uint64_t>(ref))
          << std::hex << h;
      ASSERT_EQ(floatToHalf(f), bits) << std::hex << h;
    }
  }
}

TEST(HalfTest, RoundTripsEveryBfloat16) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const auto bits = static_cast<uint16_t>(h);
    const float f = bf16ToFloat(bits);
    const double ref = refDecode(kBf16, bits);
    if (std::isnan(ref)) {
      ASSERT_EQ(std::bit_cast<uint32_t>(f), h << 16) << std::hex << h;
      const uint16_t back = floatToBf16(f);
      ASSERT_TRUE(isQuietNanBits(kBf16, back)) << std::hex << h;
      ASSERT_EQ(back | 0x40, h | 0x40) << "sign and payload kept " << std::hex << h;
    } else {
      ASSERT_EQ(std::bit_cast<uint64_t>(static_cast<double>(f)), std::bit_cast<uint64_t>(ref))
          << std::hex << h;
      ASSERT_EQ(floatToBf16(f), bits) << std::hex << h;
    }
  }
}

// Floats at and right around every rounding boundary of the 16-bit format:
// the midpoint between each pair of neighbours, and one float ulp either
// side. This is where round-to-nearest-even and the range edges live.
std::vector<float> boundaryFloats(Format fmt) {
  std::vector<float> out;
  for (uint32_t h = 0; h < 0x7fff; ++h) {
    const double lo = refDecode(fmt, static_cast<uint16_t>(h));
    double hi = refDecode(fmt, static_cast<uint16_t>(h + 1));
    if (std::isnan(lo)) continue;
    if (std::isinf(hi)) hi = 2 * lo - refDecode(fmt, static_cast<uint16_t>(h - 1));
    if (std::isnan(hi)) continue;
    const auto mid = static_cast<float>((lo + hi) / 2);  // exact: floats are wider
    for (float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      out.push_back(f);
      out.push_back(-f);
    }
  }
  return out;
}

void expectNarrowingMatchesReference(Format fmt, uint16_t (*narrow)(float)) {
  std::vector<float> inputs = boundaryFloats(fmt);
  std::mt19937 rng(42);
  for (int i = 0; i < 200000; ++i) inputs.push_back(std::bit_cast<float>(static_cast<uint32_t>(rng())));
  for (float f : {0.0f, -0.0f, INFINITY, -INFINITY, std::numeric_limits<float>::max(),
                  std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min()}) {
    inputs.push_back(f);
  }
  for (float f : inputs) {
    const uint16_t got = narrow(f);
    const uint16_t want = refEncode(fmt, f);
    if (std::isnan(f)) {
      ASSERT_TRUE(isQuietNanBits(fmt, got)) << f;
    } else {
      ASSERT_EQ(got, want) << std::hexfloat << f;
    }
  }
}

TEST(HalfTest, FloatToHalfMatchesReferenceAtBoundariesAndRandom) {
  expectNarrowingMatchesReference(kHalf, floatToHalf);
}

TEST(HalfTest, FloatToBf16MatchesReferenceAtBoundariesAndRandom) {
  expectNarrowingMatchesReference(kBf16, floatToBf16);
}

TEST(HalfTest, Float16RoundsTiesToEven) {
  EXPECT_EQ(floatToHalf(1.0f + 0x1p-11f), 0x3c00);      // tie, 1.0 is even
  EXPECT_EQ(floatToHalf(1.0f + 3 * 0x1p-11f), 0x3c02);  // tie, rounds up to even
  EXPECT_EQ(floatToHalf(std::nextafter(1.0f + 0x1p-11f, 2.0f)), 0x3c01);
  EXPECT_EQ(floatToHalf(-(1.0f + 0x1p-11f)), 0xbc00);
  EXPECT_EQ(floatToHalf(2048.0f + 1.0f), 0x6800);  // 2049 ties to 2048
  EXPECT_EQ(floatToHalf(2048.0f + 3.0f), 0x6802);  // 2051 ties to 2052
}

TEST(HalfTest, Float16OverflowsToInfinity) {
  EXPECT_EQ(floatToHalf(65504.0f), 0x7bff);                     // largest finite
  EXPECT_EQ(floatToHalf(std::nextafter(65520.0f, 0.0f)), 0x7bff);  // below the tie
  EXPECT_EQ(floatToHalf(65520.0f), 0x7c00);  // tie with odd max goes to infinity
  EXPECT_EQ(floatToHalf(1e10f), 0x7c00);
  EXPECT_EQ(floatToHalf(-1e10f), 0xfc00);
  EXPECT_EQ(floatToHalf(INFINITY), 0x7c00);
  EXPECT_EQ(floatToHalf(-INFINITY), 0xfc00);
  EXPECT_EQ(floatToHalf(std::numeric_limits<float>::max()), 0x7c00);
}

TEST(HalfTest, Float16Subnormals) {
  EXPECT_EQ(floatToHalf(0x1p-24f), 0x0001);        // smallest subnormal
  EXPECT_EQ(floatToHalf(0x1p-25f), 0x0000);        // tie with 0 goes to 0 (even)
  EXPECT_EQ(floatToHalf(0x1.8p-25f), 0x0001);      // 0.75 ulp rounds up
  EXPECT_EQ(floatToHalf(0x1.8p-24f), 0x0002);      // 1.5 ulp ties to 2
  EXPECT_EQ(floatToHalf(0x3ff.8p-24f), 0x0400);    // largest subnormal + tie -> min normal
  EXPECT_EQ(floatToHalf(-0x1p-24f), 0x8001);
  EXPECT_EQ(floatToHalf(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(floatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(halfToFloat(0x0001), 0x1p-24f);
  EXPECT_EQ(halfToFloat(0x03ff), 0x3ffp-24f);
  EXPECT_EQ(halfToFloat(0x8001), -0x1p-24f);
  EXPECT_TRUE(std::signbit(halfToFloat(0x8000)));
}

TEST(HalfTest, Float16NaNStaysQuietNaN) {
  const float snan = std::bit_cast<float>(0x7f800001u);  // payload only in low bits
  EXPECT_EQ(floatToHalf(snan), 0x7e00);
  EXPECT_EQ(floatToHalf(-std::numeric_limits<float>::quiet_NaN()), 0xfe00);
  EXPECT_TRUE(std::isnan(halfToFloat(0x7c01)));
  EXPECT_TRUE(std::isinf(halfToFloat(0x7c00)));
}

TEST(HalfTest, Bfloat16RoundingOverflowSubnormalsNaN) {
  EXPECT_EQ(floatToBf16(1.0f + 0x1p-8f), 0x3f80);      // tie to even
  EXPECT_EQ(floatToBf16(1.0f + 3 * 0x1p-8f), 0x3f82);  // tie, up to even
  EXPECT_EQ(floatToBf16(std::nextafter(1.0f + 0x1p-8f, 2.0f)), 0x3f81);
  EXPECT_EQ(floatToBf16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(floatToBf16(-std::numeric_limits<float>::max()), 0xff80);
  EXPECT_EQ(floatToBf16(std::bit_cast<float>(0x7f7f7fffu)), 0x7f7f);
  EXPECT_EQ(floatToBf16(std::bit_cast<float>(0x00010000u)), 0x0001);  // float subnormal
  EXPECT_EQ(floatToBf16(std::bit_cast<float>(0x00008000u)), 0x0000);  // tie to 0
  EXPECT_EQ(floatToBf16(std::bit_cast<float>(0x00018000u)), 0x0002);  // tie up to even
  EXPECT_EQ(floatToBf16(std::bit_cast<float>(0x7f800001u)), 0x7fc0);  // sNaN -> qNaN
  EXPECT_EQ(floatToBf16(std::bit_cast<float>(0xffffffffu)), 0xffff);  // no wrap into inf
  EXPECT_EQ(floatToBf16(INFINITY), 0x7f80);
}

// ---- dtype names --------------------------------------------------------

TEST(DtypeTest, SizesAndNames) {
  const size_t sizes[] = {1, 1, 2, 2, 4, 4, 8, 8, 2, 2, 4, 8};
  const char* names[] = {"int8",   "uint8",  "int16",   "uint16",   "int32",   "uint32",
                         "int64",  "uint64", "float16", "bfloat16", "float32", "float64"};
  for (int i = 0; i < ecclNumTypes; ++i) {
    const auto dt = static_cast<ecclDataType_t>(i);
    EXPECT_EQ(dtypeSize(dt), sizes[i]);
    EXPECT_STREQ(dtypeName(dt), names[i]);
    EXPECT_EQ(parseDtype(names[i]), dt);
  }
  EXPECT_EQ(dtypeSize(ecclNumTypes), 0u);
  EXPECT_STREQ(dtypeName(static_cast<ecclDataType_t>(15)), "invalid");
  const char* ops[] = {"sum", "avg", "prod", "max", "min"};
  for (int i = 0; i < ecclNumOps; ++i) {
    EXPECT_STREQ(opName(static_cast<ecclRedOp_t>(i)), ops[i]);
    EXPECT_EQ(parseOp(ops[i]), static_cast<ecclRedOp_t>(i));
  }
  EXPECT_STREQ(opName(ecclNumOps), "invalid");
}

TEST(DtypeTest, Validity) {
  EXPECT_TRUE(isValidDtype(0));
  EXPECT_TRUE(isValidDtype(ecclFloat64));
  EXPECT_FALSE(isValidDtype(ecclNumTypes));
  EXPECT_FALSE(isValidDtype(-1));
  EXPECT_TRUE(isValidOp(ecclMin));
  EXPECT_FALSE(isValidOp(ecclNumOps));
  EXPECT_FALSE(isValidOp(-1));
}

TEST(DtypeTest, ParsesAliasesCaseInsensitively) {
  EXPECT_EQ(parseDtype("f16"), ecclFloat16);
  EXPECT_EQ(parseDtype("half"), ecclFloat16);
  EXPECT_EQ(parseDtype("bf16"), ecclBfloat16);
  EXPECT_EQ(parseDtype("f32"), ecclFloat32);
  EXPECT_EQ(parseDtype("float"), ecclFloat32);
  EXPECT_EQ(parseDtype("FP32"), ecclFloat32);
  EXPECT_EQ(parseDtype("f64"), ecclFloat64);
  EXPECT_EQ(parseDtype("double"), ecclFloat64);
  EXPECT_EQ(parseDtype("i32"), ecclInt32);
  EXPECT_EQ(parseDtype("int"), ecclInt32);
  EXPECT_EQ(parseDtype("u8"), ecclUint8);
  EXPECT_EQ(parseDtype("Int64"), ecclInt64);
  EXPECT_EQ(parseDtype("u64"), ecclUint64);
  EXPECT_EQ(parseDtype(""), std::nullopt);
  EXPECT_EQ(parseDtype("float128"), std::nullopt);
  EXPECT_EQ(parseDtype("f32 "), std::nullopt);
  EXPECT_EQ(parseOp("MAX"), ecclMax);
  EXPECT_EQ(parseOp("mean"), ecclAvg);
  EXPECT_EQ(parseOp("product"), ecclProd);
  EXPECT_EQ(parseOp("median"), std::nullopt);
}

// ---- Reduction reference ----------------------------------------------------

template <typename T>
T refOp(ecclRedOp_t op, T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    const auto ua = static_cast<uint64_t>(a);
    const auto ub = static_cast<uint64_t>(b);
    switch (op) {
      case ecclSum:
      case ecclAvg: return static_cast<T>(static_cast<U>(ua + ub));
      case ecclProd: return static_cast<T>(static_cast<U>(ua * ub));
      case ecclMax: return a < b ? b : a;
      case ecclMin: return b < a ? b : a;
      default: break;
    }
  } else {
    switch (op) {
      case ecclSum:
      case ecclAvg: return a + b;
      case ecclProd: return a * b;
      case ecclMax:
      case ecclMin:
        if (std::isnan(a)) return a;
        if (std::isnan(b)) return b;
        if (a == b) return b;  // documented: +0/-0 ties give b
        return (op == ecclMax) == (a > b) ? a : b;
      default: break;
    }
  }
  ADD_FAILURE() << "bad op";
  return T{};
}

// What the kernels store and how to check them, per dtype.
template <typename T>
struct NativeType {
  using Storage = T;
  static constexpr bool kInteger = std::is_integral_v<T>;
  static T expected(ecclRedOp_t op, T a, T b) { return refOp(op, a, b); }
  static T quotient(T x, uint64_t d) {
    if constexpr (std::is_integral_v<T>) {
      __extension__ using Int128 = __int128;  // holds every T and every divisor
      return static_cast<T>(static_cast<Int128>(x) / static_cast<Int128>(d));
    } else {
      return x / static_cast<T>(d);
    }
  }
  static bool same(T want, T got) {
    if constexpr (std::is_floating_point_v<T>) {
      if (std::isnan(want)) return std::isnan(got);
    }
    return std::memcmp(&want, &got, sizeof(T)) == 0;
  }
  static T random(std::mt19937_64& rng) {
    if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(rng());  // the full range: wrap-around is exercised
    } else {
      // Mostly ordinary values of both signs and many magnitudes, with the
      // special values sprinkled in.
      const uint64_t r = rng();
      switch (r % 32) {
        case 0: return std::numeric_limits<T>::quiet_NaN();
        case 1: return std::numeric_limits<T>::infinity();
        case 2: return -std::numeric_limits<T>::infinity();
        case 3: return T{0};
        case 4: return -T{0};
        case 5: return std::numeric_limits<T>::denorm_min() * static_cast<T>(r >> 40);
        case 6: return std::numeric_limits<T>::max();
        default: {
          const T mant = static_cast<T>((r >> 11) & 0xfffff) / T{1 << 20} + T{1};
          const int exp = static_cast<int>((r >> 32) % 80) - 40;
          return std::ldexp((r >> 63) ? -mant : mant, exp);
        }
      }
    }
  }
};

// 16-bit floats are stored as bits; every bit pattern is a fair input.
template <const Format& kFmt>
struct SmallFloatType {
  using Storage = uint16_t;
  static constexpr bool kInteger = false;
  static uint16_t expected(ecclRedOp_t op, uint16_t a, uint16_t b) {
    // The documented contract: widen, combine in float32, round back.
    const float r = refOp(op, static_cast<float>(refDecode(kFmt, a)),
                          static_cast<float>(refDecode(kFmt, b)));
    return refEncode(kFmt, r);
  }
  static uint16_t quotient(uint16_t x, uint64_t d) {
    return refEncode(kFmt, static_cast<float>(refDecode(kFmt, x)) / static_cast<float>(d));
  }
  static bool same(uint16_t want, uint16_t got) {
    if (isNanBits(kFmt, want)) return isQuietNanBits(kFmt, got);
    return want == got;
  }
  // Any bit pattern, with zeros, infinities, NaNs and range edges made common
  // enough to meet each other.
  static uint16_t random(std::mt19937_64& rng) {
    static constexpr uint16_t kSpecial[] = {0x0000, 0x8000, 0x0001, 0x8001,
                                            0x0080, 0x03ff, 0x0400};
    const uint64_t r = rng();
    if (r % 4 != 0) return static_cast<uint16_t>(r >> 8);
    const uint16_t sign = (r >> 4) & 1 ? uint16_t{0x8000} : uint16_t{0};
    const uint16_t expMax = static_cast<uint16_t>(((1 << kFmt.expBits) - 1) << kFmt.mantBits);
    switch ((r >> 8) % 4) {
      case 0: return static_cast<uint16_t>(sign | expMax);                      // infinity
      case 1: return static_cast<uint16_t>(sign | expMax | ((r >> 16) & 0x7f) | 1);  // NaN
      case 2: return static_cast<uint16_t>(sign | (expMax - 1));  // largest finite
      default: return static_cast<uint16_t>(sign | kSpecial[(r >> 16) % 7]);
    }
  }
};

// Calls fn with a default-constructed traits object for dtype.
template <typename Fn>
void withType(ecclDataType_t dtype, Fn&& fn) {
  switch (dtype) {
    case ecclInt8: return fn(NativeType<int8_t>{});
    case ecclUint8: return fn(NativeType<uint8_t>{});
    case ecclInt16: return fn(NativeType<int16_t>{});
    case ecclUint16: return fn(NativeType<uint16_t>{});
    case ecclInt32: return fn(NativeType<int32_t>{});
    case ecclUint32: return fn(NativeType<uint32_t>{});
    case ecclInt64: return fn(NativeType<int64_t>{});
    case ecclUint64: return fn(NativeType<uint64_t>{});
    case ecclFloat16: return fn(SmallFloatType<kHalf>{});
    case ecclBfloat16: return fn(SmallFloatType<kBf16>{});
    case ecclFloat32: return fn(NativeType<float>{});
    case ecclFloat64: return fn(NativeType<double>{});
    default: FAIL() << "bad dtype";
  }
}

enum class Alias { kNone, kDstIsA, kDstIsB, kAll };
const char* aliasName(Alias alias) {
  switch (alias) {
    case Alias::kNone: return "distinct";
    case Alias::kDstIsA: return "dst==a";
    case Alias::kDstIsB: return "dst==b";
    case Alias::kAll: return "dst==a==b";
  }
  return "?";
}

// Counts around the vector widths and the kernels' block size, from empty up.
std::vector<size_t> testCounts() {
  std::vector<size_t> counts;
  for (size_t n = 0; n <= 67; ++n) counts.push_back(n);
  for (size_t n : {127u, 128u, 129u, 255u, 256u, 257u, 1000u, 4099u}) counts.push_back(n);
  return counts;
}

// Runs check once per float16 implementation this CPU offers (the portable
// one always, F16C where present), or once for other dtypes.
template <typename Fn>
void forEachPath(ecclDataType_t dt, Fn&& check) {
  if (dt != ecclFloat16) return check();
  if (reduce::useFloat16Hardware(true)) {
    SCOPED_TRACE("float16 via F16C");
    check();
  }
  reduce::useFloat16Hardware(false);
  {
    SCOPED_TRACE("float16 portable");
    check();
  }
  reduce::useFloat16Hardware(true);
}

class ReduceTest : public ::testing::TestWithParam<ecclDataType_t> {};

void checkReduceMatchesReference(ecclDataType_t dt) {
  withType(dt, [dt](auto traits) {
    using Traits = decltype(traits);
    using S = typename Traits::Storage;
    std::mt19937_64 rng(static_cast<uint64_t>(dt) * 1000 + 7);
    constexpr size_t kGuard = 8;
    for (int opIndex = 0; opIndex < ecclNumOps; ++opIndex) {
      const auto op = static_cast<ecclRedOp_t>(opIndex);
      for (size_t n : testCounts()) {
        for (Alias alias : {Alias::kNone, Alias::kDstIsA, Alias::kDstIsB, Alias::kAll}) {
          SCOPED_TRACE(::testing::Message() << opName(op) << " n=" << n << " "
                                            << aliasName(alias));
          // Start one element in, so vector loads are not all aligned, and
          // keep guard elements after the end to catch overruns.
          std::vector<S> a(n + kGuard + 1), b(n + kGuard + 1), out(n + kGuard + 1);
          for (auto* v : {&a, &b, &out}) {
            for (auto& x : *v) x = Traits::random(rng);
          }
          if (alias == Alias::kAll) b = a;
          std::vector<S> want(n);
          for (size_t i = 0; i < n; ++i) want[i] = Traits::expected(op, a[i + 1], b[i + 1]);

          S* dst = out.data() + 1;
          const S* pa = a.data() + 1;
          const S* pb = b.data() + 1;
          std::vector<S> guard;
          switch (alias) {
            case Alias::kNone: guard = out; break;
            case Alias::kDstIsA: dst = a.data() + 1; guard = a; break;
            case Alias::kDstIsB: dst = b.data() + 1; guard = b; break;
            case Alias::kAll: dst = a.data() + 1; pb = pa; guard = a; break;
          }
          if (alias == Alias::kDstIsA || alias == Alias::kAll) pa = dst;
          if (alias == Alias::kDstIsB) pb = dst;

          ASSERT_TRUE(reduce::reduce(dt, op, dst, pa, pb, n));
          for (size_t i = 0; i < n; ++i) {
            ASSERT_TRUE(Traits::same(want[i], dst[i]))
                << "element " << i << " want " << +want[i] << " got " << +dst[i];
          }
          const S* base = dst - 1;
          ASSERT_EQ(std::memcmp(base, guard.data(), sizeof(S)), 0) << "wrote before dst";
          ASSERT_EQ(std::memcmp(dst + n, guard.data() + n + 1, kGuard * sizeof(S)), 0)
              << "wrote past the end";
        }
      }
    }
  });
}

TEST_P(ReduceTest, MatchesReferenceForEveryOpCountAndAliasing) {
  const ecclDataType_t dt = GetParam();
  forEachPath(dt, [dt] { checkReduceMatchesReference(dt); });
}

void checkDivideMatchesReference(ecclDataType_t dt) {
  withType(dt, [dt](auto traits) {
    using Traits = decltype(traits);
    using S = typename Traits::Storage;
    std::mt19937_64 rng(static_cast<uint64_t>(dt));
    for (uint64_t d : {uint64_t{1}, uint64_t{2}, uint64_t{3}, uint64_t{7}, uint64_t{127},
                       uint64_t{128}, uint64_t{129}, uint64_t{1000}, uint64_t{1} << 32,
                       uint64_t{1} << 63, std::numeric_limits<uint64_t>::max()}) {
      for (size_t n : {size_t{0}, size_t{1}, size_t{67}, size_t{1000}}) {
        SCOPED_TRACE(::testing::Message() << "divisor " << d << " n=" << n);
        std::vector<S> data(n + 1);
        for (auto& x : data) x = Traits::random(rng);
        // The extremes, where truncation and the divisor range matter.
        if constexpr (Traits::kInteger) {
          if (n >= 3) {
            data[0] = std::numeric_limits<S>::min();
            data[1] = std::numeric_limits<S>::max();
            data[2] = static_cast<S>(-1);
          }
        }
        const std::vector<S> before = data;
        ASSERT_TRUE(reduce::divide(dt, data.data(), n, d));
        for (size_t i = 0; i < n; ++i) {
          const S want = Traits::quotient(before[i], d);
          ASSERT_TRUE(Traits::same(want, data[i]))
              << "element " << i << " of " << +before[i] << " want " << +want << " got "
              << +data[i];
        }
        ASSERT_EQ(std::memcmp(&data[n], &before[n], sizeof(S)), 0) << "wrote past the end";
      }
    }
  });
}

TEST_P(ReduceTest, DivideMatchesReference) {
  const ecclDataType_t dt = GetParam();
  forEachPath(dt, [dt] { checkDivideMatchesReference(dt); });
}

std::string dtypeParamName(const ::testing::TestParamInfo<ecclDataType_t>& info) {
  return dtypeName(info.param);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, ReduceTest,
                         ::testing::Values(ecclInt8, ecclUint8, ecclInt16, ecclUint16, ecclInt32,
                                           ecclUint32, ecclInt64, ecclUint64, ecclFloat16,
                                           ecclBfloat16, ecclFloat32, ecclFloat64),
                         dtypeParamName);

// ---- Specific behaviours ----------------------------------------------------

template <typename T>
std::vector<T> reduced(ecclDataType_t dt, ecclRedOp_t op, std::vector<T> a,
                       const std::vector<T>& b) {
  EXPECT_TRUE(reduce::reduce(dt, op, a.data(), a.data(), b.data(), a.size()));
  return a;
}

TEST(ReduceSpecificTest, IntegersWrapAround) {
  using I32 = std::numeric_limits<int32_t>;
  EXPECT_EQ(reduced<int32_t>(ecclInt32, ecclSum, {I32::max(), I32::min()}, {1, -1}),
            (std::vector<int32_t>{I32::min(), I32::max()}));
  EXPECT_EQ(reduced<int32_t>(ecclInt32, ecclProd, {I32::max(), 65536}, {2, 65536}),
            (std::vector<int32_t>{-2, 0}));
  EXPECT_EQ(reduced<uint8_t>(ecclUint8, ecclSum, {255}, {1}), (std::vector<uint8_t>{0}));
  EXPECT_EQ(reduced<int8_t>(ecclInt8, ecclProd, {16, -128}, {16, -1}),
            (std::vector<int8_t>{0, -128}));
  EXPECT_EQ(reduced<uint16_t>(ecclUint16, ecclProd, {65535}, {65535}),
            (std::vector<uint16_t>{1}));  // would overflow int if promoted
  EXPECT_EQ(reduced<int16_t>(ecclInt16, ecclProd, {-32768}, {-1}),
            (std::vector<int16_t>{-32768}));
  using I64 = std::numeric_limits<int64_t>;
  EXPECT_EQ(reduced<int64_t>(ecclInt64, ecclSum, {I64::max()}, {1}),
            (std::vector<int64_t>{I64::min()}));
  EXPECT_EQ(reduced<uint64_t>(ecclUint64, ecclProd, {uint64_t{1} << 63}, {2}),
            (std::vector<uint64_t>{0}));
}

TEST(ReduceSpecificTest, AvgReducesLikeSum) {
  EXPECT_EQ(reduced<int32_t>(ecclInt32, ecclAvg, {1, -5}, {2, 2}), (std::vector<int32_t>{3, -3}));
  EXPECT_EQ(reduced<float>(ecclFloat32, ecclAvg, {1.5f}, {2.0f}), (std::vector<float>{3.5f}));
}

TEST(ReduceSpecificTest, FloatMaxMinPropagateNaNFromEitherSide) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (ecclRedOp_t op : {ecclMax, ecclMin}) {
    const auto r = reduced<float>(ecclFloat32, op, {nan, 1.0f, nan}, {1.0f, nan, nan});
    for (float x : r) EXPECT_TRUE(std::isnan(x)) << opName(op);
  }
  EXPECT_EQ(reduced<float>(ecclFloat32, ecclMax, {1.0f, -INFINITY}, {2.0f, -1.0f}),
            (std::vector<float>{2.0f, -1.0f}));
  EXPECT_EQ(reduced<float>(ecclFloat32, ecclMin, {1.0f, INFINITY}, {2.0f, 5.0f}),
            (std::vector<float>{1.0f, 5.0f}));
  // Equal operands give b, so the sign of a zero comes from b.
  EXPECT_TRUE(std::signbit(reduced<float>(ecclFloat32, ecclMax, {0.0f}, {-0.0f})[0]));
  EXPECT_FALSE(std::signbit(reduced<float>(ecclFloat32, ecclMax, {-0.0f}, {0.0f})[0]));
  // A float16 NaN in a comes out as a quiet NaN.
  const auto h = reduced<uint16_t>(ecclFloat16, ecclMax, {0x7d00}, {0x3c00});
  EXPECT_TRUE(isQuietNanBits(kHalf, h[0])) << std::hex << h[0];
}

// The header promises that float32 as the intermediate gives the correctly
// rounded 16-bit result; check against rounding the exact value (exact in
// double for these operations) directly.
void checkCorrectlyRounded(const Format* fmt) {
  std::mt19937 rng(3);
  const auto dt = fmt == &kHalf ? ecclFloat16 : ecclBfloat16;
  std::vector<uint16_t> a(100000), b(a.size()), sum(a.size()), prod(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<uint16_t>(rng());
    b[i] = static_cast<uint16_t>(rng());
  }
  ASSERT_TRUE(reduce::reduce(dt, ecclSum, sum.data(), a.data(), b.data(), a.size()));
  ASSERT_TRUE(reduce::reduce(dt, ecclProd, prod.data(), a.data(), b.data(), a.size()));
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = refDecode(*fmt, a[i]);
    const double y = refDecode(*fmt, b[i]);
    if (std::isnan(x + y) || std::isnan(x * y)) continue;
    // Sums of bfloat16 can need more than 53 bits; skip those few.
    if (fmt == &kHalf || x == 0 || y == 0 ||
        std::llabs(int64_t{std::ilogb(x)} - int64_t{std::ilogb(y)}) < 40) {
      ASSERT_EQ(sum[i], refEncode(*fmt, x + y)) << std::hex << a[i] << " + " << b[i];
    }
    ASSERT_EQ(prod[i], refEncode(*fmt, x * y)) << std::hex << a[i] << " * " << b[i];
  }
  for (uint64_t d : {3u, 7u, 10u}) {
    std::vector<uint16_t> all(65536);
    for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
    ASSERT_TRUE(reduce::divide(dt, all.data(), all.size(), d));
    for (size_t i = 0; i < all.size(); ++i) {
      const double x = refDecode(*fmt, static_cast<uint16_t>(i));
      if (std::isnan(x)) continue;
      ASSERT_EQ(all[i], refEncode(*fmt, x / static_cast<double>(d))) << std::hex << i;
    }
  }
}

TEST(ReduceSpecificTest, SixteenBitFloatResultsAreCorrectlyRounded) {
  forEachPath(ecclFloat16, [] { checkCorrectlyRounded(&kHalf); });
  checkCorrectlyRounded(&kBf16);
}

TEST(ReduceSpecificTest, Float16HardwareAndPortablePathsAgree) {
  if (!reduce::useFloat16Hardware(true)) GTEST_SKIP() << "this CPU has no F16C";
  // Every float16 as a, against itself, its negation (so +0 meets -0) and
  // random values as b, for every op.
  std::mt19937 rng(11);
  std::vector<uint16_t> a(65536 * 4), b(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<uint16_t>(i);
    switch (i >> 16) {
      case 0: b[i] = a[i]; break;
      case 1: b[i] = a[i] ^ 0x8000; break;
      default: b[i] = static_cast<uint16_t>(rng()); break;
    }
  }
  for (int opIndex = 0; opIndex < ecclNumOps; ++opIndex) {
    const auto op = static_cast<ecclRedOp_t>(opIndex);
    std::vector<uint16_t> hw(a.size()), sw(a.size());
    ASSERT_TRUE(reduce::useFloat16Hardware(true));
    ASSERT_TRUE(reduce::reduce(ecclFloat16, op, hw.data(), a.data(), b.data(), a.size()));
    reduce::useFloat16Hardware(false);
    ASSERT_TRUE(reduce::reduce(ecclFloat16, op, sw.data(), a.data(), b.data(), a.size()));
    reduce::useFloat16Hardware(true);
    for (size_t i = 0; i < a.size(); ++i) {
      if (isNanBits(kHalf, a[i]) && isNanBits(kHalf, b[i])) {
        ASSERT_TRUE(isQuietNanBits(kHalf, hw[i]) && isQuietNanBits(kHalf, sw[i]));
      } else {
        ASSERT_EQ(hw[i], sw[i]) << opName(op) << " " << std::hex << a[i] << ", " << b[i];
      }
    }
  }
}


TEST(ReduceSpecificTest, DivideTruncatesTowardZero) {
  std::vector<int32_t> v{-7, 7, -1, 1, std::numeric_limits<int32_t>::min()};
  ASSERT_TRUE(reduce::divide(ecclInt32, v.data(), v.size(), 2));
  EXPECT_EQ(v, (std::vector<int32_t>{-3, 3, 0, 0, std::numeric_limits<int32_t>::min() / 2}));
  std::vector<int8_t> w{-128, -128, 127};
  ASSERT_TRUE(reduce::divide(ecclInt8, w.data(), 1, 128));  // divisor above int8's max
  ASSERT_TRUE(reduce::divide(ecclInt8, w.data() + 1, 2, 129));
  EXPECT_EQ(w, (std::vector<int8_t>{-1, 0, 0}));
  std::vector<float> f{1.0f, -3.0f};
  ASSERT_TRUE(reduce::divide(ecclFloat32, f.data(), f.size(), 4));
  EXPECT_EQ(f, (std::vector<float>{0.25f, -0.75f}));
}

TEST(ReduceSpecificTest, RejectsInvalidArgumentsWithoutTouchingData) {
  std::vector<int32_t> a{1, 2}, b{3, 4}, out{9, 9};
  const auto badType = static_cast<ecclDataType_t>(ecclNumTypes);
  // The largest values the enums can hold in C++; negative ones would be
  // undefined behaviour to even form here (a C caller can pass them, which is
  // why isValidDtype/isValidOp take int).
  const auto lastType = static_cast<ecclDataType_t>(15);
  const auto badOp = static_cast<ecclRedOp_t>(ecclNumOps);
  const auto lastOp = static_cast<ecclRedOp_t>(7);
  EXPECT_FALSE(reduce::reduce(badType, ecclSum, out.data(), a.data(), b.data(), 2));
  EXPECT_FALSE(reduce::reduce(lastType, ecclSum, out.data(), a.data(), b.data(), 2));
  EXPECT_FALSE(reduce::reduce(ecclInt32, badOp, out.data(), a.data(), b.data(), 2));
  EXPECT_FALSE(reduce::reduce(ecclInt32, lastOp, out.data(), a.data(), b.data(), 2));
  EXPECT_FALSE(reduce::reduce(ecclInt32, badOp, out.data(), a.data(), b.data(), 0));
  EXPECT_EQ(out, (std::vector<int32_t>{9, 9}));
  EXPECT_FALSE(reduce::divide(ecclInt32, out.data(), 2, 0));
  EXPECT_FALSE(reduce::divide(badType, out.data(), 2, 2));
  EXPECT_FALSE(reduce::divide(lastType, out.data(), 2, 2));
  EXPECT_EQ(out, (std::vector<int32_t>{9, 9}));
}

TEST(ReduceSpecificTest, CountZeroTouchesNothing) {
  // Null pointers with count 0 are fine: nothing is read or written.
  for (int dt = 0; dt < ecclNumTypes; ++dt) {
    EXPECT_TRUE(reduce::reduce(static_cast<ecclDataType_t>(dt), ecclSum, nullptr, nullptr,
                               nullptr, 0));
    EXPECT_TRUE(reduce::divide(static_cast<ecclDataType_t>(dt), nullptr, 0, 3));
  }
}

}  // namespace
}  // namespace eccl
