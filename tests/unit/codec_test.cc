// Tests for the payload codecs (codec/codec.h): error bounds, block edges,
// odd counts, constant blocks, NaN and infinities, every float source dtype,
// stochastic rounding (deterministic and unbiased), and the parameter checks.
//
// Reference values are computed here in double precision from the input and
// the documented format (docs/codecs.md), not by calling the codec again.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "codec/codec.h"
#include "common/dtype.h"
#include "common/half.h"
#include "eccl/eccl.h"
#include "reduce/reduce.h"
#include "wire/control.h"
#include "wire/data.h"

namespace eccl::codec {
namespace {

constexpr ecclDataType_t kFloatTypes[] = {ecclFloat32, ecclFloat64, ecclFloat16, ecclBfloat16};
constexpr ecclQuantization_t kCodecs[] = {ecclQuantFloat16, ecclQuantBfloat16, ecclQuantUint8,
                                          ecclQuantUint4};

double load(ecclDataType_t dt, const std::vector<std::byte>& buf, size_t i) {
  const std::byte* p = buf.data() + i * dtypeSize(dt);
  switch (dt) {
    case ecclFloat32: { float v; std::memcpy(&v, p, 4); return v; }
    case ecclFloat64: { double v; std::memcpy(&v, p, 8); return v; }
    case ecclFloat16: { uint16_t v; std::memcpy(&v, p, 2); return halfToFloat(v); }
    case ecclBfloat16: { uint16_t v; std::memcpy(&v, p, 2); return bf16ToFloat(v); }
    default: return std::nan("");
  }
}

void store(ecclDataType_t dt, std::vector<std::byte>& buf, size_t i, double v) {
  std::byte* p = buf.data() + i * dtypeSize(dt);
  switch (dt) {
    case ecclFloat32: { float x = static_cast<float>(v); std::memcpy(p, &x, 4); break; }
    case ecclFloat64: std::memcpy(p, &v, 8); break;
    case ecclFloat16: { uint16_t x = floatToHalf(static_cast<float>(v)); std::memcpy(p, &x, 2); break; }
    case ecclBfloat16: { uint16_t x = floatToBf16(static_cast<float>(v)); std::memcpy(p, &x, 2); break; }
    default: break;
  }
}

// Relative precision of the source dtype: its own rounding of a decoded value.
double epsilonOf(ecclDataType_t dt) {
  switch (dt) {
    case ecclFloat32: return 0x1p-24;
    case ecclFloat64: return 0x1p-53;
    case ecclFloat16: return 0x1p-11;
    case ecclBfloat16: return 0x1p-8;
    default: return 1;
  }
}

std::vector<std::byte> normalInput(ecclDataType_t dt, size_t n, uint32_t seed, double sigma = 1) {
  std::vector<std::byte> buf(n * dtypeSize(dt));
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, sigma);
  for (size_t i = 0; i < n; ++i) store(dt, buf, i, normal(rng));
  return buf;
}

struct Coded {
  std::vector<std::byte> wire;
  std::vector<std::byte> decoded;
};

Coded roundTrip(const Codec& c, const Params& p, const std::vector<std::byte>& in, size_t n,
                uint64_t seed = 1) {
  Coded out;
  out.wire.resize(c.encodedBytes(p, n) + 1);  // one byte past: it must stay untouched
  out.wire.back() = std::byte{0x5a};
  c.encode(p, in.data(), n, out.wire.data(), seed);
  EXPECT_EQ(out.wire.back(), std::byte{0x5a}) << "encode wrote past encodedBytes";
  out.wire.pop_back();
  out.decoded.resize(n * dtypeSize(p.dtype));
  c.decode(p, out.wire.data(), n, out.decoded.data());
  return out;
}

Params paramsFor(ecclQuantization_t q, ecclDataType_t dt, uint32_t block = 0,
                 ecclRounding_t rounding = ecclRoundNearest) {
  uint32_t b = block;
  EXPECT_TRUE(checkParams(q, rounding, dt, &b).isOk());
  return {dt, rounding, b};
}

// The largest distance from x to the nearest of the 16-bit neighbours of a
// value: half the gap between the two 16-bit values around x.
double halfGap(ecclQuantization_t q, double x) {
  auto widen = [&](uint16_t h) {
    return q == ecclQuantFloat16 ? static_cast<double>(halfToFloat(h))
                                 : static_cast<double>(bf16ToFloat(h));
  };
  uint16_t lo = 0;
  // Largest non-negative 16-bit value <= |x| (a linear scan of a monotone code is fine here).
  const double ax = std::fabs(x);
  uint16_t a = 0, b = q == ecclQuantFloat16 ? 0x7c00 : 0x7f80;
  while (b - a > 1) {
    const uint16_t m = static_cast<uint16_t>((a + b) / 2);
    (widen(m) <= ax ? a : b) = m;
  }
  lo = a;
  return (widen(static_cast<uint16_t>(lo + 1)) - widen(lo)) / 2;
}

TEST(Codec, RegistryAndNames) {
  EXPECT_EQ(find(ecclQuantNone), nullptr);
  EXPECT_EQ(find(static_cast<ecclQuantization_t>(99)), nullptr);
  for (ecclQuantization_t q : kCodecs) {
    ASSERT_NE(find(q), nullptr);
    EXPECT_EQ(find(q)->id(), q);
    EXPECT_EQ(parseQuant(find(q)->name()), q);
  }
  EXPECT_EQ(parseQuant("BF16"), ecclQuantBfloat16);
  EXPECT_EQ(parseQuant("int4"), ecclQuantUint4);
  EXPECT_FALSE(parseQuant("uint3").has_value());
}

TEST(Codec, CheckParamsRejectsWhatCannotWork) {
  uint32_t b = 0;
  Status st = checkParams(ecclQuantUint8, ecclRoundNearest, ecclInt32, &b);
  EXPECT_EQ(st.code(), ecclInvalidArgument);
  EXPECT_NE(st.message().find("int32"), std::string::npos) << st.message();
  b = 12;
  EXPECT_EQ(checkParams(ecclQuantUint8, ecclRoundNearest, ecclFloat32, &b).code(),
            ecclInvalidArgument);
  b = 65536;
  EXPECT_EQ(checkParams(ecclQuantUint4, ecclRoundNearest, ecclFloat32, &b).code(),
            ecclInvalidArgument);
  b = 0;
  EXPECT_EQ(checkParams(ecclQuantNone, ecclRoundStochastic, ecclFloat32, &b).code(),
            ecclInvalidArgument);
  EXPECT_EQ(checkParams(7, ecclRoundNearest, ecclFloat32, &b).code(), ecclInvalidArgument);
  EXPECT_EQ(checkParams(ecclQuantUint8, 5, ecclFloat32, &b).code(), ecclInvalidArgument);
  b = 0;
  ASSERT_TRUE(checkParams(ecclQuantUint8, ecclRoundNearest, ecclFloat32, &b).isOk());
  EXPECT_EQ(b, kDefaultBlockElems);
  b = 512;
  ASSERT_TRUE(checkParams(ecclQuantBfloat16, ecclRoundNearest, ecclFloat32, &b).isOk());
  EXPECT_EQ(b, 0u) << "cast codecs have no blocks";
  // An integer buffer without a codec is fine.
  ASSERT_TRUE(checkParams(ecclQuantNone, ecclRoundNearest, ecclInt8, &b).isOk());
}

TEST(Codec, EncodedSizeCountsTheMetadata) {
  const Codec& u8 = *find(ecclQuantUint8);
  const Codec& u4 = *find(ecclQuantUint4);
  EXPECT_EQ(u8.encodedBytes({ecclFloat32, ecclRoundNearest, 256}, 1000), 4 * 8 + 1000u);
  EXPECT_EQ(u4.encodedBytes({ecclFloat32, ecclRoundNearest, 256}, 1001), 4 * 8 + 501u);
  EXPECT_EQ(u8.encodedBytes({ecclFloat64, ecclRoundNearest, 256}, 256), 16 + 256u);
  EXPECT_EQ(find(ecclQuantFloat16)->encodedBytes({ecclFloat32, ecclRoundNearest, 0}, 7), 14u);
  for (ecclQuantization_t q : kCodecs) {
    EXPECT_EQ(find(q)->encodedBytes(paramsFor(q, ecclFloat32), 0), 0u);
    EXPECT_TRUE(checkEncoded(*find(q), paramsFor(q, ecclFloat32), 0, 0).isOk());
  }
  EXPECT_EQ(checkEncoded(u8, {ecclFloat32, ecclRoundNearest, 256}, 1000, 1031).code(),
            ecclInvalidUsage);
}

// uint8/uint4: |x - decode(encode(x))| <= scale / 2 per element (plus the
// rounding of the decode arithmetic and of the source dtype), where scale is
// the block's (max - min) / levels; block edges and odd counts included.
TEST(Codec, AffineErrorWithinHalfAScale) {
  for (ecclQuantization_t q : {ecclQuantUint8, ecclQuantUint4}) {
    const int levels = q == ecclQuantUint8 ? 255 : 15;
    for (ecclDataType_t dt : kFloatTypes) {
      for (uint32_t block : {8u, 256u, 1000u}) {
        for (size_t n : {size_t{1}, size_t{7}, size_t{255}, size_t{256}, size_t{257},
                         size_t{1001}, size_t{4099}}) {
          SCOPED_TRACE(std::string(quantName(q)) + " " + dtypeName(dt) + " block " +
                       std::to_string(block) + " n " + std::to_string(n));
          const Params p = paramsFor(q, dt, block);
          const auto in = normalInput(dt, n, static_cast<uint32_t>(n * 31 + block));
          const Coded c = roundTrip(*find(q), p, in, n);
          for (size_t b0 = 0; b0 < n; b0 += block) {
            const size_t len = std::min<size_t>(block, n - b0);
            double lo = INFINITY, hi = -INFINITY;
            for (size_t i = b0; i < b0 + len; ++i) {
              lo = std::min(lo, load(dt, in, i));
              hi = std::max(hi, load(dt, in, i));
            }
            const double scale = (hi - lo) / levels;
            const double slack = scale * 1e-5 + 2 * epsilonOf(dt) * std::max(-lo, hi);
            for (size_t i = b0; i < b0 + len; ++i) {
              const double x = load(dt, in, i), y = load(dt, c.decoded, i);
              ASSERT_LE(std::fabs(x - y), scale / 2 + slack) << "element " << i;
              ASSERT_GE(y, lo - slack);
              ASSERT_LE(y, hi + slack);
            }
            // The block's ends decode exactly (up to the source rounding, none for these).
            for (size_t i = b0; i < b0 + len; ++i) {
              if (load(dt, in, i) == hi) {
                ASSERT_EQ(load(dt, c.decoded, i), hi);
              }
            }
          }
        }
      }
    }
  }
}

// float16/bfloat16: round to nearest, within half a gap of the 16-bit grid;
// from float32 the bits are exactly those of the scalar conversion (ties to even).
TEST(Codec, CastErrorWithinHalfAnUlp) {
  for (ecclQuantization_t q : {ecclQuantFloat16, ecclQuantBfloat16}) {
    for (ecclDataType_t dt : kFloatTypes) {
      SCOPED_TRACE(std::string(quantName(q)) + " " + dtypeName(dt));
      const size_t n = 5003;
      const Params p = paramsFor(q, dt);
      const auto in = normalInput(dt, n, 7, 100.0);
      const Coded c = roundTrip(*find(q), p, in, n);
      ASSERT_EQ(c.wire.size(), 2 * n);
      for (size_t i = 0; i < n; ++i) {
        const double x = load(dt, in, i);
        uint16_t w;
        std::memcpy(&w, c.wire.data() + 2 * i, 2);
        const double y = q == ecclQuantFloat16 ? halfToFloat(w) : bf16ToFloat(w);
        ASSERT_LE(std::fabs(x - y), halfGap(q, x)) << "element " << i << " x " << x;
        if (dt == ecclFloat32) {
          ASSERT_EQ(w, q == ecclQuantFloat16 ? floatToHalf(static_cast<float>(x))
                                             : floatToBf16(static_cast<float>(x)));
        }
        ASSERT_EQ(load(dt, c.decoded, i), y);  // y is exact in every source dtype wider than it
      }
    }
  }
}

// float64 -> 16 bits rounds once: a double just above a tie rounds up, where
// rounding through float first would make it a tie and round to even (down).
TEST(Codec, Float64RoundsOnce) {
  const double tie = 1.0 + 0x1p-11;  // halfway between two float16 values
  const double x = tie + 0x1p-40;      // float rounds it back onto the tie
  ASSERT_EQ(static_cast<double>(static_cast<float>(x)), tie);
  std::vector<std::byte> in(8);
  std::memcpy(in.data(), &x, 8);
  const Coded c = roundTrip(*find(ecclQuantFloat16), paramsFor(ecclQuantFloat16, ecclFloat64), in, 1);
  EXPECT_EQ(load(ecclFloat64, c.decoded, 0), 1.0 + 0x1p-10);
}

TEST(Codec, CountsZeroAndOne) {
  for (ecclQuantization_t q : kCodecs) {
    for (ecclDataType_t dt : kFloatTypes) {
      const Params p = paramsFor(q, dt);
      std::vector<std::byte> in(dtypeSize(dt));
      store(dt, in, 0, -3.25);
      const Coded one = roundTrip(*find(q), p, in, 1);
      EXPECT_EQ(load(dt, one.decoded, 0), -3.25) << quantName(q) << " " << dtypeName(dt);
      const Coded none = roundTrip(*find(q), p, in, 0);
      EXPECT_TRUE(none.wire.empty());
    }
  }
}

// A constant block decodes exactly (scale 0: no division by zero, no NaN);
// the next block is independent of it.
TEST(Codec, ConstantBlocksAreExact) {
  for (ecclQuantization_t q : {ecclQuantUint8, ecclQuantUint4}) {
    for (ecclDataType_t dt : kFloatTypes) {
      const size_t n = 24;
      std::vector<std::byte> in(n * dtypeSize(dt));
      for (size_t i = 0; i < n; ++i) store(dt, in, i, i < 8 ? 0.0 : i < 16 ? -1.5 : 1e-30 * (i - 16));
      const Coded c = roundTrip(*find(q), paramsFor(q, dt, 8), in, n);
      for (size_t i = 0; i < 16; ++i) {
        EXPECT_EQ(load(dt, c.decoded, i), load(dt, in, i)) << quantName(q) << dtypeName(dt) << i;
      }
      for (size_t i = 16; i < n; ++i) EXPECT_TRUE(std::isfinite(load(dt, c.decoded, i)));
    }
  }
}

// Documented behaviour (docs/codecs.md): a block of uint8/uint4 holding a NaN
// or an infinity decodes as NaN, all of it and only it; float16/bfloat16 keep
// NaN as NaN and infinities as infinities.
TEST(Codec, NonFiniteValues) {
  const double special[] = {std::nan(""), INFINITY, -INFINITY};
  for (ecclDataType_t dt : kFloatTypes) {
    for (double bad : special) {
      const size_t n = 32;
      auto in = normalInput(dt, n, 3);
      store(dt, in, 9, bad);  // second block of 8
      for (ecclQuantization_t q : {ecclQuantUint8, ecclQuantUint4}) {
        const Coded c = roundTrip(*find(q), paramsFor(q, dt, 8), in, n);
        for (size_t i = 0; i < n; ++i) {
          const double y = load(dt, c.decoded, i);
          if (i >= 8 && i < 16) {
            EXPECT_TRUE(std::isnan(y)) << quantName(q) << " " << i;
          } else {
            EXPECT_TRUE(std::isfinite(y)) << quantName(q) << " " << i;
          }
        }
      }
      for (ecclQuantization_t q : {ecclQuantFloat16, ecclQuantBfloat16}) {
        const Coded c = roundTrip(*find(q), paramsFor(q, dt), in, n);
        const double y = load(dt, c.decoded, 9);
        if (std::isnan(bad)) {
          EXPECT_TRUE(std::isnan(y));
        } else {
          EXPECT_EQ(y, bad);
        }
      }
    }
  }
}

// Finite input never decodes to NaN or infinity through uint8/uint4, even
// when max - min overflows the compute type.
TEST(Codec, ExtremeFiniteRangesStayFinite) {
  for (ecclQuantization_t q : {ecclQuantUint8, ecclQuantUint4}) {
    for (ecclDataType_t dt : kFloatTypes) {
      const double big = dt == ecclFloat64   ? 1.7e308
                         : dt == ecclFloat16 ? 65504.0
                                             : 3.3e38;
      const size_t n = 16;
      std::vector<std::byte> in(n * dtypeSize(dt));
      for (size_t i = 0; i < n; ++i) store(dt, in, i, (i % 2 == 0 ? -big : big) * (i % 4 < 2 ? 1.0 : 0.5));
      const Coded c = roundTrip(*find(q), paramsFor(q, dt, 8), in, n);
      for (size_t i = 0; i < n; ++i) {
        EXPECT_TRUE(std::isfinite(load(dt, c.decoded, i))) << quantName(q) << dtypeName(dt) << i;
      }
      EXPECT_EQ(load(dt, c.decoded, 0), load(dt, in, 0)) << "the minimum decodes exactly";
      EXPECT_EQ(load(dt, c.decoded, 1), load(dt, in, 1)) << "the maximum decodes exactly";
    }
  }
}

// decodeAdd is addend + decode, added as the reduction kernels add (16-bit
// sources: in float32, rounded once), in place or not.
TEST(Codec, DecodeAddMatchesDecodeThenAdd) {
  for (ecclQuantization_t q : kCodecs) {
    for (ecclDataType_t dt : kFloatTypes) {
      SCOPED_TRACE(std::string(quantName(q)) + " " + dtypeName(dt));
      const size_t n = 777;
      const Params p = paramsFor(q, dt);
      const auto in = normalInput(dt, n, 11);
      const auto addend = normalInput(dt, n, 12);
      const Coded c = roundTrip(*find(q), p, in, n);
      std::vector<std::byte> out(addend.size());
      find(q)->decodeAdd(p, c.wire.data(), n, addend.data(), out.data());
      std::vector<std::byte> inPlace = addend;
      find(q)->decodeAdd(p, c.wire.data(), n, inPlace.data(), inPlace.data());
      EXPECT_EQ(out, inPlace);
      if (dt == ecclFloat32 || dt == ecclFloat64) {
        std::vector<std::byte> ref(addend.size());
        ASSERT_TRUE(reduce::reduce(dt, ecclSum, ref.data(), addend.data(), c.decoded.data(), n));
        EXPECT_EQ(out, ref);
      } else {
        for (size_t i = 0; i < n; ++i) {
          // decodeAdd adds the unrounded decoded value; decode rounds it to the
          // source dtype first: they differ by at most those two roundings.
          const double d = load(dt, c.decoded, i);
          const double want = load(dt, addend, i) + d;
          ASSERT_NEAR(load(dt, out, i), want,
                      2 * epsilonOf(dt) * (std::fabs(d) + std::fabs(want)));
        }
      }
    }
  }
}

// Stochastic rounding: the same seed gives the same bits, another seed other
// bits; every result is one of the two neighbours; and the mean over many
// seeds is the input (unbiased). Fixed seeds: the test cannot flake.
TEST(Codec, StochasticIsDeterministicAndUnbiased) {
  for (ecclQuantization_t q : kCodecs) {
    // (Decoding into a 16-bit source rounds again, to nearest: only the wide
    // sources show the codec's own bias.)
    for (ecclDataType_t dt : {ecclFloat32, ecclFloat64}) {
      SCOPED_TRACE(std::string(quantName(q)) + " " + dtypeName(dt));
      const Params p = paramsFor(q, dt, 16, ecclRoundStochastic);
      const size_t n = 16;
      std::vector<std::byte> in(n * dtypeSize(dt));
      // Off the uint8/uint4 grid (lo = x[0], hi = x[15]) and off the 16-bit grids.
      for (size_t i = 0; i < n; ++i) {
        store(dt, in, i, 1.0 + 0.0371 * static_cast<double>(i) + 0.0123 * static_cast<double>(i % 3));
      }
      const Coded a = roundTrip(*find(q), p, in, n, 42);
      const Coded b = roundTrip(*find(q), p, in, n, 42);
      EXPECT_EQ(a.wire, b.wire);
      const int trials = 20000;
      std::vector<double> sum(n, 0.0);
      bool differs = false;
      for (int t = 0; t < trials; ++t) {
        const Coded c = roundTrip(*find(q), p, in, n, 1000 + static_cast<uint64_t>(t));
        differs = differs || c.wire != a.wire;
        for (size_t i = 0; i < n; ++i) sum[i] += load(dt, c.decoded, i);
      }
      EXPECT_TRUE(differs);
      // Per element the spread is at most one grid step g; the mean of 20000
      // draws is within 6 g / sqrt(20000) = 0.042 g of the input but for
      // 1e-9 of seeds, and the seeds are fixed.
      const double g = q == ecclQuantUint8 ? (0.0371 * 15) / 255
                       : q == ecclQuantUint4 ? (0.0371 * 15) / 15
                       : q == ecclQuantFloat16 ? 0x1p-9
                                               : 0x1p-6;
      for (size_t i = 1; i + 1 < n; ++i) {
        const double x = load(dt, in, i);
        EXPECT_NEAR(sum[i] / trials, x, 0.05 * g) << "element " << i;
      }
    }
  }
}

// Nearest rounding is biased for a value that sits between two grid points
// (it always lands on the nearer): the control for the test above.
TEST(Codec, NearestIsBiasedWhereStochasticIsNot) {
  const Params p = paramsFor(ecclQuantUint4, ecclFloat32, 8);
  std::vector<std::byte> in(8 * 4);
  for (size_t i = 0; i < 8; ++i) store(ecclFloat32, in, i, i == 3 ? 0.3 : (i < 4 ? 0.0 : 1.5));
  const Coded c = roundTrip(*find(ecclQuantUint4), p, in, 8);
  EXPECT_NEAR(load(ecclFloat32, c.decoded, 3), 0.3, 0.05);
  EXPECT_NE(load(ecclFloat32, c.decoded, 3), 0.3);
}

// The seed of a segment depends on each of its inputs.
TEST(Codec, SegmentSeedsDiffer) {
  const uint64_t base = segmentSeed(1, 2, 3, 4, 5);
  EXPECT_EQ(base, segmentSeed(1, 2, 3, 4, 5));
  EXPECT_NE(base, segmentSeed(2, 2, 3, 4, 5));
  EXPECT_NE(base, segmentSeed(1, 3, 3, 4, 5));
  EXPECT_NE(base, segmentSeed(1, 2, 4, 4, 5));
  EXPECT_NE(base, segmentSeed(1, 2, 3, 5, 5));
  EXPECT_NE(base, segmentSeed(1, 2, 3, 4, 6));
}

// Any bytes of the right size decode to something, the same every time.
TEST(Codec, HostileBytesDecodeDeterministically) {
  std::mt19937 rng(5);
  for (ecclQuantization_t q : kCodecs) {
    for (ecclDataType_t dt : kFloatTypes) {
      const Params p = paramsFor(q, dt, 8);
      const size_t n = 101;
      std::vector<std::byte> wire(find(q)->encodedBytes(p, n));
      for (auto& b : wire) b = static_cast<std::byte>(rng());
      std::vector<std::byte> a(n * dtypeSize(dt)), b(n * dtypeSize(dt));
      find(q)->decode(p, wire.data(), n, a.data());
      find(q)->decode(p, wire.data(), n, b.data());
      EXPECT_EQ(a, b);
    }
  }
}

TEST(Codec, WireCarriesTheCodec) {
  EXPECT_TRUE(wire::isValidCodec(0, 0));
  EXPECT_FALSE(wire::isValidCodec(wire::kCodecStochastic, 0));
  EXPECT_TRUE(wire::isValidCodec(wire::packCodec(ecclQuantBfloat16, true), 0));
  EXPECT_FALSE(wire::isValidCodec(ecclQuantBfloat16, 256));
  EXPECT_TRUE(wire::isValidCodec(ecclQuantUint8, 256));
  EXPECT_FALSE(wire::isValidCodec(ecclQuantUint8, 0));
  EXPECT_FALSE(wire::isValidCodec(ecclQuantUint4, 12));
  EXPECT_FALSE(wire::isValidCodec(ecclNumQuantizations, 0));
  EXPECT_FALSE(wire::isValidCodec(0x10 | ecclQuantUint8, 256));

  wire::DataHeader h;
  h.kind = 1;
  h.dtype = ecclFloat32;
  h.codec = wire::packCodec(ecclQuantUint4, true);
  h.blockElems = 512;
  std::byte buf[wire::kDataHeaderBytes];
  wire::encodeDataHeader(h, buf);
  auto back = wire::decodeDataHeader(buf);
  ASSERT_TRUE(back.hasValue());
  EXPECT_EQ(back->descriptor(), h.descriptor());
  h.blockElems = 7;
  wire::encodeDataHeader(h, buf);
  EXPECT_FALSE(wire::decodeDataHeader(buf).hasValue());
}

}  // namespace
}  // namespace eccl::codec
