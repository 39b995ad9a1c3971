// Prints one line per (codec, source dtype, rounding, operation) with a hash of
// the bytes the codec produced for a fixed input: random normal values with
// NaN, infinities, huge, tiny and constant stretches mixed in, an odd count.
// Built twice, against the library's kernels (AVX2 clones where the CPU has
// AVX2) and against a baseline-only build of the same source; the test
// Codec.BaselineMatchesClones compares the two outputs, so every CPU path must
// give the same bits.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "codec/codec.h"
#include "common/dtype.h"
#include "common/half.h"

namespace {

uint64_t fnv1a(const std::vector<std::byte>& v) {
  uint64_t h = 14695981039346656037ull;
  for (std::byte b : v) h = (h ^ static_cast<uint8_t>(b)) * 1099511628211ull;
  return h;
}

void put(std::vector<std::byte>& buf, ecclDataType_t dt, size_t i, double v) {
  std::byte* p = buf.data() + i * eccl::dtypeSize(dt);
  if (dt == ecclFloat32) {
    const float f = static_cast<float>(v);
    std::memcpy(p, &f, 4);
  } else if (dt == ecclFloat64) {
    std::memcpy(p, &v, 8);
  } else {
    const float f = static_cast<float>(v);
    const uint16_t h = dt == ecclFloat16 ? eccl::floatToHalf(f) : eccl::floatToBf16(f);
    std::memcpy(p, &h, 2);
  }
}

}  // namespace

int main() {
  using namespace eccl;
  const size_t n = 3001;
  for (ecclDataType_t dt : {ecclFloat32, ecclFloat64, ecclFloat16, ecclBfloat16}) {
    std::vector<std::byte> in(n * dtypeSize(dt)), addend(in.size());
    std::mt19937 rng(17);
    std::normal_distribution<double> normal(0.0, 3.0);
    for (size_t i = 0; i < n; ++i) {
      double v = normal(rng);
      if (i >= 512 && i < 768) v = 2.5;                         // a constant block
      if (i >= 1024 && i < 1280) v *= 1e-41;                    // subnormal in float32
      if (i >= 1536 && i < 1792) v *= 1e37;                     // beyond float16
      if (i == 2000) v = NAN;
      if (i == 2300) v = INFINITY;
      if (i == 2600) v = -INFINITY;
      put(in, dt, i, v);
      put(addend, dt, i, normal(rng));
    }
    for (int q = 1; q < ecclNumQuantizations; ++q) {
      for (int rounding = 0; rounding < ecclNumRoundings; ++rounding) {
        uint32_t block = 0;
        if (!codec::checkParams(q, rounding, dt, &block).isOk()) return 1;
        const codec::Params p{dt, static_cast<ecclRounding_t>(rounding), block};
        const codec::Codec& c = *codec::find(static_cast<ecclQuantization_t>(q));
        std::vector<std::byte> wire(c.encodedBytes(p, n)), out(in.size()), sum(in.size());
        c.encode(p, in.data(), n, wire.data(), 12345);
        c.decode(p, wire.data(), n, out.data());
        c.decodeAdd(p, wire.data(), n, addend.data(), sum.data());
        std::printf("%s %s %s encode %016llx decode %016llx decodeAdd %016llx\n", c.name(),
                    dtypeName(dt), rounding == 0 ? "nearest" : "stochastic",
                    static_cast<unsigned long long>(fnv1a(wire)),
                    static_cast<unsigned long long>(fnv1a(out)),
                    static_cast<unsigned long long>(fnv1a(sum)));
      }
    }
  }
  return 0;
}
