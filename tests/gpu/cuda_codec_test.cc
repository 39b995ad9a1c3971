// The CUDA codec kernels (cuda/codec_kernels.h) against the host codec they
// must match byte for byte: every codec, source dtype and rounding, block
// sizes 8, 256 and 32768, counts that end mid-block, data with NaN,
// infinities, signed zeros, subnormals, huge ranges and constant blocks;
// encoded bytes at odd addresses too, decode-and-add in place, and guard
// bytes after every output that must come back untouched.
//
// Skips, saying why, on a machine without a CUDA device. The argument checks
// run everywhere: they must return before touching the CUDA runtime.
#include <cuda_runtime.h>
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
#include "cuda/codec_kernels.h"
#include "eccl/eccl.h"
#include "gpu/gpu_support.h"
#include "support/codec_cases.h"

namespace eccl::cuda {
namespace {

using test::DeviceBuffer;
using namespace test::codec_cases;  // NOLINT: the shared grid and data
constexpr size_t kGuard = 64;  // bytes after each output
constexpr auto kGuardByte = std::byte{0xa5};

// ---- Device memory ---------------------------------------------------------------------


// bytes + kGuard guard bytes at dev: host bytes in, then everything back.
void upload(std::byte* dev, const Bytes& host) {
  Bytes withGuard = host;
  withGuard.resize(host.size() + kGuard, kGuardByte);
  ASSERT_EQ(cudaMemcpy(dev, withGuard.data(), withGuard.size(), cudaMemcpyHostToDevice),
            cudaSuccess);
}

Bytes download(const std::byte* dev, size_t bytes) {
  Bytes out(bytes + kGuard);
  EXPECT_EQ(cudaMemcpy(out.data(), dev, out.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

void expectGuard(const Bytes& got, size_t bytes, const std::string& what) {
  for (size_t i = bytes; i < got.size(); ++i) {
    if (got[i] != kGuardByte) {
      ADD_FAILURE() << what << ": wrote past the end, byte " << i - bytes;
      return;
    }
  }
}

// Elements must have the same bits; where open(i), NaN + NaN chose the
// payload, and both need only be NaN.
template <typename Open>
void expectSameElements(ecclDataType_t dt, const Bytes& got, const Bytes& want, size_t n,
                        const std::string& what, Open open) {
  size_t bad = 0;
  for (size_t i = 0; i < n && bad < 5; ++i) {
    const uint64_t g = loadBits(dt, got, i), w = loadBits(dt, want, i);
    if (g == w || (isNan(dt, g) && isNan(dt, w) && open(i))) continue;
    ++bad;
    ADD_FAILURE() << what << ": element " << i << std::hex << " cpu 0x" << w << " gpu 0x" << g;
  }
  expectGuard(got, n * dtypeSize(dt), what);
}

class CudaCodecTest : public test::GpuTest {
 protected:

  // One case: the kernels' encode, decode and in-place decode-and-add against
  // the host codec. The encoded bytes sit `offset` bytes into their buffer.
  void check(ecclQuantization_t q, const codec::Params& p, const Bytes& src, const Bytes& addend,
             size_t n, uint64_t seed, size_t offset) {
    const codec::Codec& c = *codec::find(q);
    const std::string what = std::string(c.name()) + " from " + dtypeName(p.dtype) +
                             (p.rounding == ecclRoundStochastic ? " stochastic" : " nearest") +
                             " block " + std::to_string(p.blockElems) + " count " +
                             std::to_string(n) + " seed " + std::to_string(seed) + " offset " +
                             std::to_string(offset);
    const size_t encoded = c.encodedBytes(p, n);
    Bytes want(encoded);
    c.encode(p, src.data(), n, want.data(), seed);
    DeviceBuffer dSrc(src.size() + kGuard), dEnc(encoded + offset + kGuard),
        dOut(src.size() + kGuard);
    std::byte* enc = dEnc.get() + offset;

    upload(dSrc.get(), src);
    upload(enc, Bytes(encoded, kGuardByte));
    ASSERT_EQ(launchEncode(q, p, dSrc.get(), n, enc, seed, stream_), cudaSuccess) << what;
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess) << what;
    const Bytes got = download(enc, encoded);
    for (size_t i = 0; i < encoded; ++i) {
      ASSERT_EQ(got[i], want[i]) << what << ": encoded byte " << i << " of " << encoded;
    }
    expectGuard(got, encoded, what + " encode");

    Bytes wantOut(src.size());
    c.decode(p, want.data(), n, wantOut.data());
    upload(enc, want);
    upload(dOut.get(), Bytes(src.size(), kGuardByte));
    ASSERT_EQ(launchDecode(q, p, enc, n, dOut.get(), stream_), cudaSuccess) << what;
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess) << what;
    expectSameElements(p.dtype, download(dOut.get(), src.size()), wantOut, n, what + " decode",
                       [](size_t) { return false; });

    Bytes wantSum = addend;
    c.decodeAdd(p, want.data(), n, wantSum.data(), wantSum.data());
    upload(dOut.get(), addend);
    ASSERT_EQ(launchDecodeAdd(q, p, enc, n, dOut.get(), dOut.get(), stream_), cudaSuccess) << what;
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess) << what;
    expectSameElements(p.dtype, download(dOut.get(), src.size()), wantSum, n,
                       what + " decodeAdd", [&](size_t i) {
                         return isNan(p.dtype, loadBits(p.dtype, addend, i)) &&
                                isNan(p.dtype, loadBits(p.dtype, wantOut, i));
                       });
  }

};

TEST_F(CudaCodecTest, MatchesHostCodec) {
  std::mt19937_64 rng(2025);
  size_t caseNo = 0;
  for (ecclQuantization_t q : kCodecs) {
    const bool blocked = codec::find(q)->blocked();
    for (ecclDataType_t dt : kSources) {
      for (int rounding = 0; rounding < ecclNumRoundings; ++rounding) {
        for (uint32_t block : blocked ? kBlockList : std::vector<uint32_t>{0}) {
          const codec::Params p{dt, static_cast<ecclRounding_t>(rounding), block};
          for (size_t n : kCounts) {
            for (uint64_t seed : kSeeds) {
              if (rounding == ecclRoundNearest && seed != kSeeds[0]) continue;
              const Bytes src = Generator(dt, rng()).buffer(n);
              const Bytes addend = Generator(dt, rng()).buffer(n);
              check(q, p, src, addend, n, seed, ++caseNo % 3 == 0 ? 1 : 0);  // odd addresses too
              if (::testing::Test::HasFailure()) return;
            }
          }
        }
      }
    }
  }
}

// No device needed: what codec::checkParams refuses is refused before any
// CUDA call, and count 0 does nothing (the null pointers are never touched).
TEST(CudaCodecArgsTest, RefusesBadArgumentsWithoutLaunching) {
  const codec::Params ok{ecclFloat32, ecclRoundNearest, 256};
  std::byte* none = nullptr;
  auto refused = [&](ecclQuantization_t q, const codec::Params& p, size_t n) {
    return launchEncode(q, p, none, n, none, 0, nullptr) == cudaErrorInvalidValue &&
           launchDecode(q, p, none, n, none, nullptr) == cudaErrorInvalidValue &&
           launchDecodeAdd(q, p, none, n, none, none, nullptr) == cudaErrorInvalidValue;
  };
  EXPECT_TRUE(refused(ecclQuantNone, ok, 10));
  EXPECT_TRUE(refused(static_cast<ecclQuantization_t>(ecclNumQuantizations), ok, 10));
  EXPECT_TRUE(refused(ecclQuantUint8, codec::Params{ecclInt32, ecclRoundNearest, 256}, 10));
  EXPECT_TRUE(refused(ecclQuantFloat16, codec::Params{ecclUint8, ecclRoundNearest, 0}, 10));
  EXPECT_TRUE(refused(ecclQuantUint8, codec::Params{ecclFloat32, ecclNumRoundings, 256}, 10));
  for (uint32_t block : {0u, 4u, 12u, 32776u, 65536u}) {
    EXPECT_TRUE(refused(ecclQuantUint4, codec::Params{ecclFloat32, ecclRoundNearest, block}, 10))
        << block;
  }
  EXPECT_TRUE(refused(ecclQuantUint8, ok, 10));  // null buffers
  EXPECT_TRUE(refused(ecclQuantNone, ok, 0));    // checked before count 0
  // The cast codecs have no block size, as codec::checkParams leaves it 0.
  const codec::Params cast{ecclFloat64, ecclRoundStochastic, 0};
  EXPECT_EQ(launchEncode(ecclQuantBfloat16, cast, none, 0, none, 0, nullptr), cudaSuccess);
  EXPECT_EQ(launchDecode(ecclQuantUint4, ok, none, 0, none, nullptr), cudaSuccess);
  EXPECT_EQ(launchDecodeAdd(ecclQuantUint8, ok, none, 0, none, none, nullptr), cudaSuccess);
}

}  // namespace
}  // namespace eccl::cuda
