#include "codec/codec.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/dtype.h"
#include "codec/random.h"
#include "common/kernels.h"

namespace eccl::codec {
namespace {

using kernels::Bfloat16;
using kernels::Half;
using kernels::Native;

// ---- Wire element types of the cast codecs ---------------------------------

// double to float rounding to odd: exact, or the float toward zero with its
// last bit set. Rounding that to a narrower format (at least two bits fewer)
// to nearest-even gives the correctly rounded result of the double, which
// rounding double -> float -> half to nearest twice would not.
inline float toFloatOdd(double d) {
  float f = static_cast<float>(d);
  if (static_cast<double>(f) == d || d != d) return f;  // exact, or NaN
  if (std::fabs(static_cast<double>(f)) > std::fabs(d)) {
    f = std::nextafter(f, 0.0f);  // toward zero (from infinity: the largest float)
  }
  return std::bit_cast<float>(std::bit_cast<uint32_t>(f) | 1u);
}

struct WireHalf {
  static uint16_t narrow(float v) { return floatToHalf(v); }
  static uint16_t narrow(double v) { return floatToHalf(toFloatOdd(v)); }
  static float widen(uint16_t w) { return halfToFloat(w); }
};

struct WireBf16 {
  static uint16_t narrow(float v) { return floatToBf16(v); }
  static uint16_t narrow(double v) { return floatToBf16(toFloatOdd(v)); }
  static float widen(uint16_t w) { return bf16ToFloat(w); }
};

// Stochastic rounding to a 16-bit format: one of the two neighbours of v,
// the upper with probability (|v| - |lo|) / (|hi| - |lo|). Exact values, NaN
// and infinities round as to nearest.
template <typename W>
uint16_t narrowStochastic(double v, uint32_t r) {
  uint16_t h = W::narrow(v);
  const double y = W::widen(h);
  if (y == v || !std::isfinite(v)) return h;
  if (std::fabs(y) > std::fabs(v)) --h;  // the neighbour toward zero
  const double lo = std::fabs(static_cast<double>(W::widen(h)));
  const double hi = std::fabs(static_cast<double>(W::widen(static_cast<uint16_t>(h + 1))));
  const double p = (std::fabs(v) - lo) / (hi - lo);  // 0 when hi is infinite
  return static_cast<double>(r) * 0x1p-32 < p ? static_cast<uint16_t>(h + 1) : h;
}

// bfloat16 from a float is the float's top half, so adding 16 random bits
// below it and truncating rounds up with exactly the right probability (a
// carry into the exponent included).
ECCL_ALWAYS_INLINE uint16_t bf16Stochastic(float v, uint32_t r) {
  const uint32_t b = std::bit_cast<uint32_t>(v);
  const bool isNan = (b & 0x7fffffffu) > 0x7f800000u;
  const uint32_t rounded = (b + (r >> 16)) >> 16;
  return static_cast<uint16_t>(isNan ? floatToBf16(v) : rounded);
}

// A 16-bit word as the little-endian bytes it is read from (a no-op on x86).
ECCL_ALWAYS_INLINE uint32_t le16(uint16_t w) {
  if constexpr (std::endian::native == std::endian::little) {
    return w;
  } else {
    return static_cast<uint16_t>((w >> 8) | (w << 8));
  }
}

// 1 when x < 0 (or -0), else 0, from the sign bit: a comparison's result
// keeps GCC from vectorizing the loop. The sign of a rounded difference is the
// sign of the exact one, so isNegative(a - b) is a < b for finite a, b.
template <typename C>
ECCL_ALWAYS_INLINE int32_t isNegative(C x) {
  if constexpr (sizeof(C) == 4) {
    return static_cast<int32_t>(std::bit_cast<uint32_t>(x) >> 31);
  } else {
    return static_cast<int32_t>(std::bit_cast<uint64_t>(x) >> 63);
  }
}

// min(a, b) for a, b >= 0 (+0, not NaN): such floats order like their bits,
// and an integer min vectorizes where this float one does not.
// float16 from a float, stochastically, without branches: in the float16
// normal range, 13 random bits added below the kept mantissa, then truncated
// (a carry into the exponent is right); below it, where float16 steps are
// 2^-24 apart, up with probability frac(|v| * 2^24). Values under 65520
// (which round to 65504 to nearest) never become infinity; NaN, infinities
// and larger values round as to nearest.
ECCL_ALWAYS_INLINE uint16_t halfStochastic(float v, uint32_t r) {
  using half_detail::select;  // `?:` on floats keeps GCC from vectorizing
  const uint32_t b = std::bit_cast<uint32_t>(v);
  const uint32_t a = b & 0x7fffffffu;
  // Normal range: round the float's mantissa, then rebias (exact).
  const uint32_t up = (a + (r & 0x1fffu)) & ~0x1fffu;
  const uint32_t normal = (select(a < 0x477ff000u && up > 0x477fe000u, 0x477fe000u, up) -
                           0x38000000u) >> 13;
  // Subnormal range: the code is the count of 2^-24 steps (1024 is the
  // smallest normal, which is right). |v| * 2^24 < 2^10 there; 0 elsewhere,
  // so the conversion never overflows.
  const float t = std::bit_cast<float>(select(a < 0x38800000u, a, 0u)) * 0x1p24f;
  const int32_t whole = static_cast<int32_t>(t);
  const float frac = t - static_cast<float>(whole);
  const float u = static_cast<float>(static_cast<int32_t>(r >> 8)) * 0x1p-24f;
  const auto sub = static_cast<uint32_t>(whole + isNegative(u - frac));  // u < frac
  // NaN, infinity and beyond 65520: as floatToHalf rounds them.
  const uint32_t special = 0x7c00u | select(a > 0x7f800000u, 0x200u | ((a >> 13) & 0x3ffu), 0);
  uint32_t h = select(a < 0x38800000u, sub, normal);
  h = select(a >= 0x477ff000u, special, h);
  return static_cast<uint16_t>(h | ((b >> 16) & 0x8000u));
}

ECCL_ALWAYS_INLINE uint16_t load16(const std::byte* p) {
  uint16_t w;
  std::memcpy(&w, p, sizeof(w));
  return w;
}
ECCL_ALWAYS_INLINE void store16(std::byte* p, uint16_t w) { std::memcpy(p, &w, sizeof(w)); }

// ---- Cast codecs: float16 and bfloat16 on the wire -------------------------

template <typename E, typename W>
ECCL_ALWAYS_INLINE void castEncode(const void* src, size_t n, std::byte* __restrict out,
                                   bool stochastic, uint64_t seed) {
  const auto* __restrict in = static_cast<const typename E::Storage*>(src);
  using C = typename E::Compute;
  if (!stochastic) {
    for (size_t i = 0; i < n; ++i) store16(out + 2 * i, W::narrow(E::load(in[i])));
  } else if constexpr (std::is_same_v<W, WireBf16> && std::is_same_v<C, float>) {
    for (size_t i = 0; i < n; ++i) {
      store16(out + 2 * i, bf16Stochastic(E::load(in[i]), randomBits(seed, i)));
    }
  } else if constexpr (std::is_same_v<C, float>) {
    for (size_t i = 0; i < n; ++i) {
      store16(out + 2 * i, halfStochastic(E::load(in[i]), randomBits(seed, i)));
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      store16(out + 2 * i,
              narrowStochastic<W>(static_cast<double>(E::load(in[i])), randomBits(seed, i)));
    }
  }
}

template <typename E, typename W>
ECCL_ALWAYS_INLINE void castDecode(const std::byte* __restrict in, size_t n, void* dst) {
  auto* __restrict out = static_cast<typename E::Storage*>(dst);
  using C = typename E::Compute;
  for (size_t i = 0; i < n; ++i) out[i] = E::store(static_cast<C>(W::widen(load16(in + 2 * i))));
}

template <typename E, typename W>
ECCL_ALWAYS_INLINE void castDecodeAdd(const std::byte* __restrict in, size_t n, const void* addend,
                                      void* dst) {
  // out may alias addend (in place), so neither is restrict.
  const auto* a = static_cast<const typename E::Storage*>(addend);
  auto* out = static_cast<typename E::Storage*>(dst);
  using C = typename E::Compute;
  for (size_t i = 0; i < n; ++i) {
    out[i] = E::store(E::load(a[i]) + static_cast<C>(W::widen(load16(in + 2 * i))));
  }
}

// ---- Affine codecs: uint8 and uint4 with a min and max per block -----------
//
// Layout of an encoded run of n elements in blocks of B: first every block's
// (lo, hi) in the compute type of the source (float, or double for float64),
// then the codes: one byte per element (uint8), or two per byte, the even
// element in the low nibble (uint4; B is even, so every block starts on a
// byte). Code q stands for lo + q * scale, scale = (hi - lo) / L, except that
// q == L stands for hi exactly, and no value decodes above hi.

template <typename C>
ECCL_ALWAYS_INLINE C minNonNegative(C a, C b) {
  using I = std::conditional_t<sizeof(C) == 4, int32_t, int64_t>;
  return std::bit_cast<C>(std::min(std::bit_cast<I>(a), std::bit_cast<I>(b)));
}

template <typename C>
ECCL_ALWAYS_INLINE C scaleOf(C lo, C hi, int levels) {
  C s = (hi - lo) / static_cast<C>(levels);
  if (std::isinf(s)) s = (hi / 2 - lo / 2) / static_cast<C>(levels) * 2;  // hi - lo overflowed
  return s;
}

// min and max of a block, and whether it holds a NaN or an infinity. For
// float through integer keys (ordered like the floats), which vectorize
// where float min/max reductions do not.
template <typename E>
ECCL_ALWAYS_INLINE bool scanBlock(const typename E::Storage* __restrict x, size_t n,
                                  typename E::Compute* lo, typename E::Compute* hi) {
  using C = typename E::Compute;
  if constexpr (std::is_same_v<C, float>) {
    int32_t kmin = std::numeric_limits<int32_t>::max();
    int32_t kmax = std::numeric_limits<int32_t>::min();
    uint32_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
      const uint32_t b = std::bit_cast<uint32_t>(E::load(x[i]));
      const int32_t k = static_cast<int32_t>(b ^ ((0u - (b >> 31)) & 0x7fffffffu));
      kmin = std::min(kmin, k);
      kmax = std::max(kmax, k);
      bad |= static_cast<uint32_t>((b & 0x7f800000u) == 0x7f800000u);
    }
    auto fromKey = [](int32_t k) {
      const auto u = static_cast<uint32_t>(k);
      return std::bit_cast<float>(u ^ ((0u - (u >> 31)) & 0x7fffffffu));
    };
    *lo = fromKey(kmin);
    *hi = fromKey(kmax);
    return bad == 0;
  } else {
    C mn = std::numeric_limits<C>::infinity(), mx = -mn;
    bool finite = true;
    for (size_t i = 0; i < n; ++i) {
      const C v = E::load(x[i]);
      finite = finite && std::isfinite(v);
      mn = std::min(mn, v);
      mx = std::max(mx, v);
    }
    *lo = mn;
    *hi = mx;
    return finite;
  }
}

template <typename E, int kBits>
struct Affine {
  using S = typename E::Storage;
  using C = typename E::Compute;
  static constexpr int kLevels = (1 << kBits) - 1;

  static size_t blocks(size_t n, size_t b) { return (n + b - 1) / b; }
  static size_t metaBytes(size_t n, size_t b) { return blocks(n, b) * 2 * sizeof(C); }
  static size_t codeBytes(size_t n) { return kBits == 8 ? n : (n + 1) / 2; }
  static size_t bytes(size_t n, size_t b) { return metaBytes(n, b) + codeBytes(n); }

  // Codes of one block into q[0..n).
  static ECCL_ALWAYS_INLINE void quantize(const S* __restrict x, size_t n, C lo, C hi,
                                          uint8_t* __restrict q, bool stochastic,
                                          uint64_t stream) {
    const C s = scaleOf(lo, hi, kLevels);
    const C levels = static_cast<C>(kLevels);
    if (!(s > 0)) {  // constant block, or a range too small to divide: the nearer end
      for (size_t i = 0; i < n; ++i) {
        const C v = E::load(x[i]);
        q[i] = static_cast<uint8_t>((v - lo) > (hi - v) ? kLevels : 0);
      }
    } else if (!stochastic) {
      for (size_t i = 0; i < n; ++i) {
        const C t = (E::load(x[i]) - lo) / s;  // >= 0: lo is the minimum
        q[i] = static_cast<uint8_t>(static_cast<int32_t>(std::min(t + C(0.5), levels)));
      }
    } else {
      // Up with probability frac (exact: frac and u are exact in C). At the
      // top frac is 0, so no code passes kLevels. (u through int32: there is
      // no vector conversion from unsigned before AVX-512.)
      for (size_t i = 0; i < n; ++i) {
        const C t = (E::load(x[i]) - lo) / s;
        const C capped = minNonNegative(t, levels);
        const int32_t whole = static_cast<int32_t>(capped);
        const C frac = capped - static_cast<C>(whole);
        const C u = static_cast<C>(static_cast<int32_t>(randomBits(stream, i) >> 8)) * C(0x1p-24);
        q[i] = static_cast<uint8_t>(whole + isNegative(u - frac));  // u < frac
      }
    }
  }

  // Two 4-bit codes per byte, the even element in the low nibble. Through
  // 16-bit words (a pair of codes, little-endian) so the loops vectorize.
  static ECCL_ALWAYS_INLINE void pack(const uint8_t* __restrict q, size_t len,
                                      uint8_t* __restrict packed) {
    for (size_t i = 0; i < len / 2; ++i) {
      uint16_t w;
      std::memcpy(&w, q + 2 * i, 2);
      w = static_cast<uint16_t>(le16(w));
      packed[i] = static_cast<uint8_t>((w & 0x0fu) | ((w >> 4) & 0xf0u));
    }
    if (len % 2 != 0) packed[len / 2] = q[len - 1];
  }
  static ECCL_ALWAYS_INLINE void unpack(const uint8_t* __restrict packed, size_t len,
                                        uint8_t* __restrict q) {
    for (size_t i = 0; i < len / 2; ++i) {
      const uint16_t w = static_cast<uint16_t>((packed[i] & 0x0fu) | ((packed[i] & 0xf0u) << 4));
      const uint16_t e = static_cast<uint16_t>(le16(w));
      std::memcpy(q + 2 * i, &e, 2);
    }
    if (len % 2 != 0) q[len - 1] = packed[len / 2] & 0x0f;
  }

  static ECCL_ALWAYS_INLINE C value(uint8_t q, C lo, C hi, C s) {
    const C v = std::min(lo + static_cast<C>(q) * s, hi);
    return q == kLevels ? hi : v;
  }

  static ECCL_ALWAYS_INLINE void encode(const void* src, size_t n, size_t b, std::byte* out,
                                        bool stochastic, uint64_t seed) {
    const auto* x = static_cast<const S*>(src);
    std::byte* meta = out;
    auto* codes = reinterpret_cast<uint8_t*>(out + metaBytes(n, b));
    alignas(64) uint8_t q[kMaxBlockElems];
    for (size_t k = 0, begin = 0; begin < n; ++k, begin += b) {
      const size_t len = std::min(b, n - begin);
      C lo, hi;
      uint8_t* dst = kBits == 8 ? codes + begin : q;
      if (scanBlock<E>(x + begin, len, &lo, &hi)) {
        quantize(x + begin, len, lo, hi, dst, stochastic, blockStream(seed, k));
      } else {  // NaN or infinity: the whole block decodes as NaN
        lo = hi = std::numeric_limits<C>::quiet_NaN();
        std::memset(dst, 0, len);
      }
      std::memcpy(meta + k * 2 * sizeof(C), &lo, sizeof(C));
      std::memcpy(meta + k * 2 * sizeof(C) + sizeof(C), &hi, sizeof(C));
      if constexpr (kBits == 4) pack(q, len, codes + begin / 2);
    }
  }

  // Calls emit(i, value) for every element, block by block.
  template <typename Emit>
  static ECCL_ALWAYS_INLINE void decodeWith(const std::byte* in, size_t n, size_t b, Emit emit) {
    const std::byte* meta = in;
    const auto* codes = reinterpret_cast<const uint8_t*>(in + metaBytes(n, b));
    alignas(64) uint8_t q[kMaxBlockElems];
    for (size_t k = 0, begin = 0; begin < n; ++k, begin += b) {
      const size_t len = std::min(b, n - begin);
      C lo, hi;
      std::memcpy(&lo, meta + k * 2 * sizeof(C), sizeof(C));
      std::memcpy(&hi, meta + k * 2 * sizeof(C) + sizeof(C), sizeof(C));
      const C s = scaleOf(lo, hi, kLevels);
      const uint8_t* src = codes + begin;
      if constexpr (kBits == 4) {
        unpack(codes + begin / 2, len, q);
        src = q;
      }
      emit(begin, len, src, lo, hi, s);
    }
  }

  static ECCL_ALWAYS_INLINE void decode(const std::byte* in, size_t n, size_t b, void* dst) {
    auto* out = static_cast<S*>(dst);
    decodeWith(in, n, b, [&](size_t begin, size_t len, const uint8_t* __restrict q, C lo, C hi, C s) {
      S* __restrict o = out + begin;
      for (size_t i = 0; i < len; ++i) o[i] = E::store(value(q[i], lo, hi, s));
    });
  }

  static ECCL_ALWAYS_INLINE void decodeAdd(const std::byte* in, size_t n, size_t b,
                                           const void* addend, void* dst) {
    const auto* a = static_cast<const S*>(addend);
    auto* out = static_cast<S*>(dst);
    decodeWith(in, n, b, [&](size_t begin, size_t len, const uint8_t* __restrict q, C lo, C hi, C s) {
      const S* ab = a + begin;  // may alias out
      S* ob = out + begin;
      for (size_t i = 0; i < len; ++i) ob[i] = E::store(E::load(ab[i]) + value(q[i], lo, hi, s));
    });
  }
};

// ---- Out-of-line entry points, one per (codec, source dtype) ---------------

struct Kernels {
  void (*encode)(const void*, size_t, size_t, std::byte*, bool, uint64_t);
  void (*decode)(const std::byte*, size_t, size_t, void*);
  void (*decodeAdd)(const std::byte*, size_t, size_t, const void*, void*);
};

#define ECCL_CAST_KERNELS(Name, E, W)                                                      \
  ECCL_CLONES void encode##Name(const void* s, size_t n, size_t, std::byte* o, bool st,    \
                                uint64_t seed) {                                           \
    castEncode<E, W>(s, n, o, st, seed);                                                   \
  }                                                                                        \
  ECCL_CLONES void decode##Name(const std::byte* i, size_t n, size_t, void* o) {           \
    castDecode<E, W>(i, n, o);                                                             \
  }                                                                                        \
  ECCL_CLONES void decodeAdd##Name(const std::byte* i, size_t n, size_t, const void* a,    \
                                   void* o) {                                              \
    castDecodeAdd<E, W>(i, n, a, o);                                                       \
  }                                                                                        \
  constexpr Kernels k##Name{encode##Name, decode##Name, decodeAdd##Name};

#define ECCL_AFFINE_KERNELS(Name, E, Bits)                                                 \
  ECCL_CLONES void encode##Name(const void* s, size_t n, size_t b, std::byte* o, bool st,  \
                                uint64_t seed) {                                           \
    Affine<E, Bits>::encode(s, n, b, o, st, seed);                                         \
  }                                                                                        \
  ECCL_CLONES void decode##Name(const std::byte* i, size_t n, size_t b, void* o) {         \
    Affine<E, Bits>::decode(i, n, b, o);                                                   \
  }                                                                                        \
  ECCL_CLONES void decodeAdd##Name(const std::byte* i, size_t n, size_t b, const void* a,  \
                                   void* o) {                                              \
    Affine<E, Bits>::decodeAdd(i, n, b, a, o);                                             \
  }                                                                                        \
  constexpr Kernels k##Name{encode##Name, decode##Name, decodeAdd##Name};

ECCL_CAST_KERNELS(HalfF32, Native<float>, WireHalf)
ECCL_CAST_KERNELS(HalfF64, Native<double>, WireHalf)
ECCL_CAST_KERNELS(HalfF16, Half, WireHalf)
ECCL_CAST_KERNELS(HalfBf16, Bfloat16, WireHalf)
ECCL_CAST_KERNELS(Bf16F32, Native<float>, WireBf16)
ECCL_CAST_KERNELS(Bf16F64, Native<double>, WireBf16)
ECCL_CAST_KERNELS(Bf16F16, Half, WireBf16)
ECCL_CAST_KERNELS(Bf16Bf16, Bfloat16, WireBf16)
ECCL_AFFINE_KERNELS(U8F32, Native<float>, 8)
ECCL_AFFINE_KERNELS(U8F64, Native<double>, 8)
ECCL_AFFINE_KERNELS(U8F16, Half, 8)
ECCL_AFFINE_KERNELS(U8Bf16, Bfloat16, 8)
ECCL_AFFINE_KERNELS(U4F32, Native<float>, 4)
ECCL_AFFINE_KERNELS(U4F64, Native<double>, 4)
ECCL_AFFINE_KERNELS(U4F16, Half, 4)
ECCL_AFFINE_KERNELS(U4Bf16, Bfloat16, 4)
#undef ECCL_CAST_KERNELS
#undef ECCL_AFFINE_KERNELS

// Index of a float dtype in the kernel tables (float32, float64, float16,
// bfloat16); -1 for the others.
int floatIndex(ecclDataType_t dtype) {
  switch (dtype) {
    case ecclFloat32: return 0;
    case ecclFloat64: return 1;
    case ecclFloat16: return 2;
    case ecclBfloat16: return 3;
    default: return -1;
  }
}

class TableCodec final : public Codec {
 public:
  TableCodec(ecclQuantization_t id, int bits, const Kernels (&k)[4])
      : id_(id), bits_(bits), k_(k) {}

  ecclQuantization_t id() const override { return id_; }
  const char* name() const override { return quantName(id_); }
  bool blocked() const override { return bits_ != 16; }

  size_t encodedBytes(const Params& p, size_t n) const override {
    if (bits_ == 16) return 2 * n;
    const size_t meta = p.dtype == ecclFloat64 ? 16 : 8;
    const size_t b = p.blockElems;
    return (n + b - 1) / b * meta + (bits_ == 8 ? n : (n + 1) / 2);
  }
  void encode(const Params& p, const void* src, size_t n, std::byte* out,
              uint64_t seed) const override {
    kernels(p).encode(src, n, p.blockElems, out, p.rounding == ecclRoundStochastic, seed);
  }
  void decode(const Params& p, const std::byte* in, size_t n, void* out) const override {
    kernels(p).decode(in, n, p.blockElems, out);
  }
  void decodeAdd(const Params& p, const std::byte* in, size_t n, const void* addend,
                 void* out) const override {
    kernels(p).decodeAdd(in, n, p.blockElems, addend, out);
  }

 private:
  // checkParams admitted only float dtypes; anything else is a bug upstream.
  const Kernels& kernels(const Params& p) const { return k_[std::max(0, floatIndex(p.dtype))]; }

  ecclQuantization_t id_;
  int bits_;
  const Kernels (&k_)[4];
};

constexpr Kernels kHalfKernels[4] = {kHalfF32, kHalfF64, kHalfF16, kHalfBf16};
constexpr Kernels kBf16Kernels[4] = {kBf16F32, kBf16F64, kBf16F16, kBf16Bf16};
constexpr Kernels kU8Kernels[4] = {kU8F32, kU8F64, kU8F16, kU8Bf16};
constexpr Kernels kU4Kernels[4] = {kU4F32, kU4F64, kU4F16, kU4Bf16};

const TableCodec kFloat16(ecclQuantFloat16, 16, kHalfKernels);
const TableCodec kBfloat16(ecclQuantBfloat16, 16, kBf16Kernels);
const TableCodec kUint8(ecclQuantUint8, 8, kU8Kernels);
const TableCodec kUint4(ecclQuantUint4, 4, kU4Kernels);

}  // namespace

const Codec* find(ecclQuantization_t q) {
  switch (q) {
    case ecclQuantFloat16: return &kFloat16;
    case ecclQuantBfloat16: return &kBfloat16;
    case ecclQuantUint8: return &kUint8;
    case ecclQuantUint4: return &kUint4;
    default: return nullptr;
  }
}

Status checkParams(int quant, int rounding, ecclDataType_t dtype, uint32_t* blockElems) {
  if (quant < 0 || quant >= ecclNumQuantizations) {
    return error(ecclInvalidArgument, fmt::format("unknown quantization {}", quant));
  }
  if (rounding < 0 || rounding >= ecclNumRoundings) {
    return error(ecclInvalidArgument, fmt::format("unknown rounding {}", rounding));
  }
  const Codec* c = find(static_cast<ecclQuantization_t>(quant));
  if (c == nullptr) {
    if (rounding != ecclRoundNearest) {
      return error(ecclInvalidArgument, "stochastic rounding needs a codec (quantization is none)");
    }
    *blockElems = 0;
    return Status::ok();
  }
  if (floatIndex(dtype) < 0) {
    return error(ecclInvalidArgument,
                 fmt::format("quantization {} needs a float16, bfloat16, float32 or float64 "
                             "buffer, not {}", c->name(), dtypeName(dtype)));
  }
  if (!c->blocked()) {
    *blockElems = 0;
    return Status::ok();
  }
  if (*blockElems == 0) *blockElems = kDefaultBlockElems;
  if (*blockElems < kMinBlockElems || *blockElems > kMaxBlockElems || *blockElems % 8 != 0) {
    return error(ecclInvalidArgument,
                 fmt::format("quantBlockSize {} is not a multiple of 8 from {} to {}", *blockElems,
                             kMinBlockElems, kMaxBlockElems));
  }
  return Status::ok();
}

Status checkEncoded(const Codec& c, const Params& p, size_t count, size_t payloadBytes) {
  const size_t want = c.encodedBytes(p, count);
  if (payloadBytes == want) return Status::ok();
  return error(ecclInvalidUsage,
               fmt::format("{} payload of {} bytes for {} {} elements (block {}), expected {}",
                           c.name(), payloadBytes, count, dtypeName(p.dtype), p.blockElems, want));
}

uint64_t segmentSeed(uint64_t epoch, uint32_t tag, uint64_t seq, uint32_t step,
                     uint64_t firstElement) {
  uint64_t h = splitmix64(epoch);
  h = splitmix64(h ^ tag);
  h = splitmix64(h ^ seq);
  h = splitmix64(h ^ step);
  return splitmix64(h ^ firstElement);
}

}  // namespace eccl::codec
