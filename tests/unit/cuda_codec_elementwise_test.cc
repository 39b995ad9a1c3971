// The CUDA codec kernels' arithmetic (cuda/codec_elementwise.h), compiled for
// the host and run with the kernels' own loops (lanes per block, their merge
// in the order of the warp's butterfly), against the host codec it must match
// byte for byte: codec::find(q)->encode, decode and decodeAdd, for every
// codec, source dtype and rounding, block sizes from 8 to 32768, counts that
// end mid-block, and data with NaN, infinities, signed zeros, subnormals,
// huge ranges and constant blocks. Needs no GPU; tests/gpu/cuda_codec_test.cc
// checks the device build of the same code.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "codec/codec.h"
#include "common/dtype.h"
#include "common/half.h"
#include "cuda/codec_elementwise.h"
#include "eccl/eccl.h"
#include "support/codec_cases.h"

namespace eccl::cuda {
namespace {

using namespace test::codec_cases;  // NOLINT: the shared grid and data

template <typename Fn>
void withSource(ecclDataType_t dtype, Fn&& fn) {
  ASSERT_TRUE(withFloatCodec(dtype, fn)) << "not a float dtype: " << dtype;
}

int bitsOfCodec(ecclQuantization_t q) {
  return q == ecclQuantUint8 ? 8 : q == ecclQuantUint4 ? 4 : 16;
}

// ---- The kernels' loops on the host ----------------------------------------------

template <typename E>
void hostEncode(ecclQuantization_t q, const codec::Params& p, const void* src, size_t n,
                std::byte* out, uint64_t seed) {
  using S = typename E::Storage;
  using C = typename E::Compute;
  const auto* x = static_cast<const S*>(src);
  const int bits = bitsOfCodec(q);
  const bool stochastic = p.rounding == ecclRoundStochastic;
  if (bits == 16) {
    for (size_t i = 0; i < n; ++i) {
      const uint16_t w = castEncodeOne<E>(x[i], q == ecclQuantBfloat16, stochastic, seed, i);
      std::memcpy(out + 2 * i, &w, 2);
    }
    return;
  }
  const size_t b = p.blockElems;
  const unsigned lanes = lanesPerBlock(b);
  auto* codes = reinterpret_cast<uint8_t*>(out + affineMetaBytes<C>(n, b));
  for (size_t k = 0; k < affineBlocks(n, b); ++k) {
    const size_t begin = k * b;
    const size_t len = std::min(b, n - begin);
    std::vector<Scan<C>> scan(lanes);
    for (unsigned l = 0; l < lanes; ++l) scan[l] = scanLane<E>(x + begin, len, l, lanes);
    for (unsigned offset = 1; offset < lanes; offset <<= 1) {  // __shfl_xor_sync
      const std::vector<Scan<C>> before = scan;
      for (unsigned l = 0; l < lanes; ++l) scan[l].merge(before[l ^ offset]);
    }
    for (unsigned l = 0; l < lanes; ++l) {
      const AffineBlock<C> blk = affineBlock(scan[l], (1 << bits) - 1);
      // Every lane quantizes with its own merge: they must agree, -0 and +0 too.
      const C lo0 = scan[0].lo(), hi0 = scan[0].hi(), lo = scan[l].lo(), hi = scan[l].hi();
      if (std::memcmp(&lo, &lo0, sizeof(C)) != 0 || std::memcmp(&hi, &hi0, sizeof(C)) != 0) {
        ADD_FAILURE() << "lane " << l << " of block " << k << " merged other bounds than lane 0";
      }
      if (l == 0) writeBounds(out, k, blk.lo, blk.hi);
      encodeLane<E>(x + begin, len, blk, bits, stochastic, blockStream(seed, k),
                    codes + codeOffset(bits, begin), l, lanes);
    }
  }
}

// addend null: decode.
template <typename E>
void hostDecode(ecclQuantization_t q, const codec::Params& p, const std::byte* in, size_t n,
                const void* addend, void* dst) {
  using S = typename E::Storage;
  using C = typename E::Compute;
  const auto* a = static_cast<const S*>(addend);
  auto* out = static_cast<S*>(dst);
  const int bits = bitsOfCodec(q);
  if (bits == 16) {
    const bool bf16 = q == ecclQuantBfloat16;
    for (size_t i = 0; i < n; ++i) {
      uint16_t w;
      std::memcpy(&w, in + 2 * i, 2);
      out[i] = a != nullptr ? castDecodeAddOne<E>(w, a[i], bf16) : castDecodeOne<E>(w, bf16);
    }
    return;
  }
  const size_t b = p.blockElems;
  const unsigned lanes = lanesPerBlock(b);
  const auto* codes = reinterpret_cast<const uint8_t*>(in + affineMetaBytes<C>(n, b));
  for (size_t k = 0; k < affineBlocks(n, b); ++k) {
    const size_t begin = k * b;
    C lo, hi;
    readBounds(in, k, &lo, &hi);
    for (unsigned l = 0; l < lanes; ++l) {
      decodeLane<E>(codes + codeOffset(bits, begin), std::min(b, n - begin), lo, hi, bits,
                    a != nullptr ? a + begin : nullptr, out + begin, l, lanes);
    }
  }
}

// ---- Comparison --------------------------------------------------------------------

std::string caseName(ecclQuantization_t q, const codec::Params& p, size_t n, uint64_t seed) {
  return std::string(codec::find(q)->name()) + " from " + dtypeName(p.dtype) +
         (p.rounding == ecclRoundStochastic ? " stochastic" : " nearest") + " block " +
         std::to_string(p.blockElems) + " count " + std::to_string(n) + " seed " +
         std::to_string(seed);
}

void expectSameBytes(const Bytes& got, const Bytes& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i], want[i]) << what << ": encoded byte " << i << " of " << got.size();
  }
}

// Elements of got and want must have the same bits, except that where
// open(i) says NaN + NaN decided the payload, both need only be NaN.
template <typename Open>
void expectSameElements(ecclDataType_t dt, const Bytes& got, const Bytes& want, size_t n,
                        const std::string& what, Open open) {
  size_t bad = 0;
  for (size_t i = 0; i < n && bad < 5; ++i) {
    const uint64_t g = loadBits(dt, got, i), w = loadBits(dt, want, i);
    if (g == w || (isNan(dt, g) && isNan(dt, w) && open(i))) continue;
    ++bad;
    ADD_FAILURE() << what << ": element " << i << std::hex << " host codec 0x" << w
                  << " codec_elementwise 0x" << g;
  }
}

// Encodes with both and compares; then decodes and decode-adds the host
// codec's bytes with both and compares.
void checkCase(ecclQuantization_t q, const codec::Params& p, const Bytes& src,
               const Bytes& addend, size_t n, uint64_t seed) {
  const codec::Codec& c = *codec::find(q);
  const std::string what = caseName(q, p, n, seed);
  Bytes want(c.encodedBytes(p, n)), got(want.size());
  c.encode(p, src.data(), n, want.data(), seed);
  withSource(p.dtype, [&](auto e) {
    hostEncode<decltype(e)>(q, p, src.data(), n, got.data(), seed);
  });
  expectSameBytes(got, want, what + " encode");

  Bytes wantOut(src.size()), gotOut(src.size());
  c.decode(p, want.data(), n, wantOut.data());
  withSource(p.dtype, [&](auto e) {
    hostDecode<decltype(e)>(q, p, want.data(), n, nullptr, gotOut.data());
  });
  expectSameElements(p.dtype, gotOut, wantOut, n, what + " decode", [](size_t) { return false; });

  // In place, as the ring adds: out == addend.
  Bytes wantSum = addend, gotSum = addend;
  c.decodeAdd(p, want.data(), n, wantSum.data(), wantSum.data());
  withSource(p.dtype, [&](auto e) {
    hostDecode<decltype(e)>(q, p, want.data(), n, gotSum.data(), gotSum.data());
  });
  expectSameElements(p.dtype, gotSum, wantSum, n, what + " decodeAdd", [&](size_t i) {
    return isNan(p.dtype, loadBits(p.dtype, addend, i)) &&
           isNan(p.dtype, loadBits(p.dtype, wantOut, i));
  });
}

// ---- Tests ---------------------------------------------------------------------------

TEST(CudaCodecElementwiseTest, MatchesHostCodec) {
  uint64_t dataSeed = 1;
  for (ecclQuantization_t q : kCodecs) {
    const bool blocked = codec::find(q)->blocked();
    for (ecclDataType_t dt : kSources) {
      for (int rounding = 0; rounding < ecclNumRoundings; ++rounding) {
        for (uint32_t block : blocked ? kBlockList : std::vector<uint32_t>{0}) {
          const codec::Params p{dt, static_cast<ecclRounding_t>(rounding), block};
          for (size_t n : kCounts) {
            for (uint64_t seed : kSeeds) {
              if (rounding == ecclRoundNearest && seed != kSeeds[0]) continue;
              Generator gen(dt, ++dataSeed);
              const Bytes src = gen.buffer(n), addend = gen.buffer(n);
              checkCase(q, p, src, addend, n, seed);
              if (::testing::Test::HasFailure()) return;
            }
          }
        }
      }
    }
  }
}

// Every 16-bit word decodes as the host codec decodes it, NaN payloads and
// signalling NaN included.
TEST(CudaCodecElementwiseTest, CastDecodeOfEveryWord) {
  const size_t n = 0x10000;
  Bytes in(2 * n);
  for (size_t i = 0; i < n; ++i) {
    const auto w = static_cast<uint16_t>(i);
    std::memcpy(in.data() + 2 * i, &w, 2);
  }
  for (ecclQuantization_t q : {ecclQuantFloat16, ecclQuantBfloat16}) {
    for (ecclDataType_t dt : kSources) {
      const codec::Params p{dt, ecclRoundNearest, 0};
      Bytes want(n * dtypeSize(dt)), got(want.size());
      codec::find(q)->decode(p, in.data(), n, want.data());
      withSource(dt, [&](auto e) {
        hostDecode<decltype(e)>(q, p, in.data(), n, nullptr, got.data());
      });
      expectSameElements(dt, got, want, n, caseName(q, p, n, 0), [](size_t) { return false; });
    }
  }
}

// A frame of random bytes (a hostile peer) decodes to the host codec's bits;
// only a block whose two bounds are both NaN may differ, in the NaN payload.
TEST(CudaCodecElementwiseTest, AffineDecodeOfArbitraryBytes) {
  std::mt19937_64 rng(5);
  for (ecclQuantization_t q : {ecclQuantUint8, ecclQuantUint4}) {
    for (ecclDataType_t dt : kSources) {
      for (uint32_t block : {8u, 256u}) {
        const codec::Params p{dt, ecclRoundNearest, block};
        const size_t n = 20001;
        const codec::Codec& c = *codec::find(q);
        Bytes in(c.encodedBytes(p, n));
        for (auto& b : in) b = static_cast<std::byte>(rng());
        // Bounds: mostly numbers of the compute type, some NaN or infinite.
        const ecclDataType_t ct = dt == ecclFloat64 ? ecclFloat64 : ecclFloat32;
        Generator gen(ct, rng());
        const size_t blocks = affineBlocks(n, block);
        Bytes bounds = gen.buffer(2 * blocks);
        std::memcpy(in.data(), bounds.data(), bounds.size());
        Generator addGen(dt, rng());
        const Bytes addend = addGen.buffer(n);
        Bytes want(n * dtypeSize(dt)), got(want.size()), wantSum(want.size()), gotSum(want.size());
        c.decode(p, in.data(), n, want.data());
        c.decodeAdd(p, in.data(), n, addend.data(), wantSum.data());
        withSource(dt, [&](auto e) {
          hostDecode<decltype(e)>(q, p, in.data(), n, nullptr, got.data());
          hostDecode<decltype(e)>(q, p, in.data(), n, addend.data(), gotSum.data());
        });
        auto bothBoundsNan = [&](size_t i) {
          const size_t k = i / block;
          return isNan(ct, loadBits(ct, bounds, 2 * k)) &&
                 isNan(ct, loadBits(ct, bounds, 2 * k + 1));
        };
        const std::string what = caseName(q, p, n, 0) + " random frame";
        expectSameElements(dt, got, want, n, what + " decode", bothBoundsNan);
        expectSameElements(dt, gotSum, wantSum, n, what + " decodeAdd", [&](size_t i) {
          return bothBoundsNan(i) || isNan(dt, loadBits(dt, addend, i));
        });
      }
    }
  }
}

// Cases the grid above meets by chance, here for certain: bounds of signed
// zeros (the first of equal values wins, as std::min and std::max keep it),
// constant blocks, ranges that overflow, NaN and infinite blocks.
TEST(CudaCodecElementwiseTest, AffineCornerCases) {
  const codec::Params p{ecclFloat64, ecclRoundNearest, 8};
  const double nan = std::nan(""), inf = INFINITY, big = 1.7e308;
  const std::vector<double> x = {-0.0, 0.0, 0.0, -0.0, 0.0, -0.0, -0.0, 0.0,  // -0 first
                                 0.0, -0.0, -0.0, 0.0, -0.0, 0.0, 0.0, -0.0,  // +0 first
                                 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5,      // constant
                                 -big, big, 0, 1, -1, big / 3, -big / 7, 5,   // overflow
                                 1, 2, nan, 3, 4, 5, 6, 7,                    // NaN block
                                 1, 2, 3, inf, 4, 5, 6, 7};                   // inf block
  Bytes src(x.size() * 8);
  std::memcpy(src.data(), x.data(), src.size());
  for (ecclQuantization_t q : {ecclQuantUint8, ecclQuantUint4}) {
    for (ecclRounding_t r : {ecclRoundNearest, ecclRoundStochastic}) {
      checkCase(q, codec::Params{p.dtype, r, p.blockElems}, src, src, x.size(), 99);
    }
  }
  Bytes got(codec::find(ecclQuantUint8)->encodedBytes(p, x.size()));
  hostEncode<Native<double>>(ecclQuantUint8, p, src.data(), x.size(), got.data(), 0);
  double lo, hi;
  readBounds(got.data(), 0, &lo, &hi);
  EXPECT_TRUE(lo == 0 && hi == 0 && std::signbit(lo) && std::signbit(hi));
  readBounds(got.data(), 1, &lo, &hi);
  EXPECT_TRUE(lo == 0 && hi == 0 && !std::signbit(lo) && !std::signbit(hi));
  readBounds(got.data(), 3, &lo, &hi);
  EXPECT_TRUE(lo == -big && hi == big);
  for (size_t k : {4, 5}) {
    readBounds(got.data(), k, &lo, &hi);
    EXPECT_TRUE(std::isnan(lo) && std::isnan(hi)) << k;
  }
}

// A value on a code stays on it, also when its random draw u is exactly 0
// (up only when u < frac, and frac is 0): seed 3094064 gives element 6 of
// block 0 that draw, which random data meets once in 2^24 elements.
TEST(CudaCodecElementwiseTest, StochasticExactCodeWithZeroDraw) {
  constexpr uint64_t kSeed = 3094064;
  ASSERT_EQ(randomBits(blockStream(kSeed, 0), 6) >> 8, 0u);
  const std::vector<float> x = {0, 255, 3, 100, 7, 42, 6, 200};  // scale 1: every t whole
  Bytes src(x.size() * 4);
  std::memcpy(src.data(), x.data(), src.size());
  const codec::Params p{ecclFloat32, ecclRoundStochastic, 8};
  checkCase(ecclQuantUint8, p, src, src, x.size(), kSeed);
  Bytes got(codec::find(ecclQuantUint8)->encodedBytes(p, x.size()));
  hostEncode<Native<float>>(ecclQuantUint8, p, src.data(), x.size(), got.data(), kSeed);
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(std::to_integer<int>(got[8 + i]), static_cast<int>(x[i])) << i;  // after lo, hi
  }
}

// Stochastic rounding draws on the seed: two seeds give different bytes (so
// the grid above would see a kernel that ignored or misused it).
TEST(CudaCodecElementwiseTest, StochasticDependsOnSeed) {
  for (ecclQuantization_t q : kCodecs) {
    for (ecclDataType_t dt : kSources) {
      // 16-bit sources are exact in fp16, and bfloat16 ones in bf16.
      if (dtypeSize(dt) == 2 &&
          (q == ecclQuantFloat16 || (dt == ecclBfloat16 && q == ecclQuantBfloat16))) {
        continue;
      }
      const codec::Params p{dt, ecclRoundStochastic, codec::find(q)->blocked() ? 256u : 0u};
      Bytes src(1000 * dtypeSize(dt));
      std::normal_distribution<double> normal(0.0, 1.0);
      std::mt19937_64 rng(4);
      for (size_t i = 0; i < 1000; ++i) storeBits(dt, src, i, bitsOfValue(dt, normal(rng)));
      Bytes a(codec::find(q)->encodedBytes(p, 1000)), b(a.size());
      withSource(dt, [&](auto e) {
        hostEncode<decltype(e)>(q, p, src.data(), 1000, a.data(), 1);
        hostEncode<decltype(e)>(q, p, src.data(), 1000, b.data(), 2);
      });
      EXPECT_NE(a, b) << caseName(q, p, 1000, 1);
    }
  }
}

}  // namespace
}  // namespace eccl::cuda
