// The arithmetic of the CUDA payload codecs (cuda/codec_kernels.h), written
// once for the host compiler and nvcc alike so a CPU test can prove it
// bit-identical to codec/codec.cc, the reference (docs/codecs.md has the
// formats). C++17: nvcc compiles it as such.
//
// Same approach as cuda/elementwise.h, whose helpers this uses: one IEEE
// operation per step, rounded to nearest (rn intrinsics on the device, which
// nvcc never contracts into an FMA), NaN results rebuilt as the CPU makes
// them, 16-bit conversions on the bits. What is particular to the codecs:
//
//  - float <-> double conversions of NaN are done on the bits: the device's
//    cvt returns a canonical NaN, the CPU keeps the payload (quieted).
//  - A block's min and max are found by several lanes at once, then merged.
//    For float compute types through integer keys, as codec.cc does, which
//    merge exactly in any order. For double, codec.cc's std::min/max keep the
//    first of equal values, which shows only for -0 and +0, so each lane
//    carries the index of its candidate and the lower index wins a tie.
//  - The stochastic stream is codec.cc's: splitmix64(seed + block) per block
//    and the element's place in its block for uint8/uint4, the seed and the
//    element's place in the whole buffer for fp16/bf16.
//
// One thing is left open, as in reduce.h: the payload of a sum of two NaNs
// with different payloads, which on the CPU depends on the operand order the
// compiler chose (codec.cc's decodeAdd, as built here, picks either within
// one buffer); here it is always the first operand's, the addend's. It
// arises only for a decode-and-add of a NaN addend and a NaN decoded value,
// or for a hostile frame whose block has two different NaN bounds; encoding
// never meets it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "codec/random.h"
#include "cuda/elementwise.h"

namespace eccl::cuda {

// ---- Operations elementwise.h lacks ---------------------------------------------

ECCL_HD inline double subDouble(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}

// One IEEE operation with the CPU's NaN (elementwise.h's propagateNan).
template <typename C>
ECCL_HD C cpuAdd(C a, C b) {
  return propagateNan(add(a, b), a, b);
}
template <typename C>
ECCL_HD C cpuSub(C a, C b) {
  if constexpr (std::is_same_v<C, float>) {
    return propagateNan(sub(a, b), a, b);
  } else {
    return propagateNan(subDouble(a, b), a, b);
  }
}
template <typename C>
ECCL_HD C cpuMul(C a, C b) {
  return propagateNan(mul(a, b), a, b);
}
template <typename C>
ECCL_HD C cpuDiv(C a, C b) {
  return propagateNan(div(a, b), a, b);
}

ECCL_HD inline bool isNanBits(float x) { return (bitsOf(x) & 0x7fffffffu) > 0x7f800000u; }
ECCL_HD inline bool isNanBits(double x) {
  return (bitsOf(x) & 0x7fffffffffffffffu) > 0x7ff0000000000000u;
}
ECCL_HD inline bool isInfBits(float x) { return (bitsOf(x) & 0x7fffffffu) == 0x7f800000u; }
ECCL_HD inline bool isInfBits(double x) {
  return (bitsOf(x) & 0x7fffffffffffffffu) == 0x7ff0000000000000u;
}
ECCL_HD inline bool isFiniteBits(double x) {
  return (bitsOf(x) & 0x7ff0000000000000u) != 0x7ff0000000000000u;
}
ECCL_HD inline double absDouble(double x) { return doubleFrom(bitsOf(x) & 0x7fffffffffffffffu); }

// The CPU's positive quiet NaN (std::numeric_limits<C>::quiet_NaN()), the
// bounds of a block that held a NaN or an infinity.
template <typename C>
ECCL_HD C blockNan() {
  if constexpr (std::is_same_v<C, float>) {
    return floatFrom(0x7fc00000u);
  } else {
    return doubleFrom(0x7ff8000000000000u);
  }
}

// (double)f as the CPU converts it: exact, and a NaN keeps its payload,
// quieted (the device's cvt would return its canonical NaN).
ECCL_HD inline double widenFloat(float f) {
  const uint32_t b = bitsOf(f);
  if ((b & 0x7fffffffu) > 0x7f800000u) {
    return doubleFrom(static_cast<uint64_t>(b >> 31) << 63 | 0x7ff8000000000000u |
                      static_cast<uint64_t>(b & 0x7fffffu) << 29);
  }
  return static_cast<double>(f);
}

// (float)d to nearest, as the CPU: a NaN keeps the top of its payload, quieted.
ECCL_HD inline float narrowDouble(double d) {
  const uint64_t b = bitsOf(d);
  if ((b & 0x7fffffffffffffffu) > 0x7ff0000000000000u) {
    return floatFrom(static_cast<uint32_t>(b >> 63) << 31 | 0x7fc00000u |
                     (static_cast<uint32_t>(b >> 29) & 0x7fffffu));
  }
#ifdef __CUDA_ARCH__
  return __double2float_rn(d);
#else
  return static_cast<float>(d);
#endif
}

// 1 when the sign bit is set (x < 0 or -0), as codec.cc decides "u < frac".
ECCL_HD inline int32_t isNegative(float x) { return static_cast<int32_t>(bitsOf(x) >> 31); }
ECCL_HD inline int32_t isNegative(double x) { return static_cast<int32_t>(bitsOf(x) >> 63); }

// ---- Random stream for stochastic rounding: codec/random.h, shared with codec.cc --

using codec::blockStream;
using codec::randomBits;

// ---- Cast codecs: float16 and bfloat16 on the wire ---------------------------------

ECCL_HD inline uint16_t narrowTo(bool bf16, float v) {
  return bf16 ? floatToBf16(v) : floatToHalf(v);
}
ECCL_HD inline float widenFrom(bool bf16, uint16_t w) {
  return bf16 ? bf16ToFloat(w) : halfToFloat(w);
}

// double -> float rounding to odd (see codec.cc): exact, or the float toward
// zero with its last bit set. Toward zero from a float that is not zero is
// one step down in magnitude, from infinity too (to the largest float).
ECCL_HD inline float toFloatOdd(double d) {
  const float f = narrowDouble(d);
  const double back = widenFloat(f);
  if (back == d || d != d) return f;  // NOLINT(misc-redundant-expression): exact, or NaN
  uint32_t b = bitsOf(f);
  if (absDouble(back) > absDouble(d)) --b;
  return floatFrom(b | 1u);
}

ECCL_HD inline uint16_t narrowDoubleTo(bool bf16, double v) {
  return narrowTo(bf16, toFloatOdd(v));
}

// Stochastic rounding of a double to a 16-bit format (codec.cc's
// narrowStochastic): the upper neighbour with probability
// (|v| - |lo|) / (|hi| - |lo|); exact values, NaN and infinities to nearest.
ECCL_HD inline uint16_t narrowStochastic(bool bf16, double v, uint32_t r) {
  uint16_t h = narrowDoubleTo(bf16, v);
  const double y = widenFloat(widenFrom(bf16, h));
  if (y == v || !isFiniteBits(v)) return h;
  if (absDouble(y) > absDouble(v)) --h;  // the neighbour toward zero
  const double lo = absDouble(widenFloat(widenFrom(bf16, h)));
  const double hi = absDouble(widenFloat(widenFrom(bf16, static_cast<uint16_t>(h + 1))));
  const double p = div(subDouble(absDouble(v), lo), subDouble(hi, lo));  // 0 when hi is inf
  return mul(static_cast<double>(r), 0x1p-32) < p ? static_cast<uint16_t>(h + 1) : h;
}

// bfloat16 from a float, stochastically: 16 random bits added below the kept
// half, then truncated; NaN as to nearest.
ECCL_HD inline uint16_t bf16Stochastic(float v, uint32_t r) {
  const uint32_t b = bitsOf(v);
  const bool isNan = (b & 0x7fffffffu) > 0x7f800000u;
  const uint32_t rounded = (b + (r >> 16)) >> 16;
  return static_cast<uint16_t>(isNan ? floatToBf16(v) : rounded);
}

// float16 from a float, stochastically: codec.cc's halfStochastic step for
// step (the reasons are there).
ECCL_HD inline uint16_t halfStochastic(float v, uint32_t r) {
  const uint32_t b = bitsOf(v);
  const uint32_t a = b & 0x7fffffffu;
  const uint32_t up = (a + (r & 0x1fffu)) & ~0x1fffu;
  const uint32_t normal =
      (selectBits(a < 0x477ff000u && up > 0x477fe000u, 0x477fe000u, up) - 0x38000000u) >> 13;
  const float t = mul(floatFrom(selectBits(a < 0x38800000u, a, 0u)), 0x1p24f);
  const int32_t whole = static_cast<int32_t>(t);
  const float frac = sub(t, static_cast<float>(whole));
  const float u = mul(static_cast<float>(static_cast<int32_t>(r >> 8)), 0x1p-24f);
  const auto subnormal = static_cast<uint32_t>(whole + isNegative(sub(u, frac)));
  const uint32_t special = 0x7c00u | selectBits(a > 0x7f800000u, 0x200u | ((a >> 13) & 0x3ffu), 0);
  uint32_t h = selectBits(a < 0x38800000u, subnormal, normal);
  h = selectBits(a >= 0x477ff000u, special, h);
  return static_cast<uint16_t>(h | ((b >> 16) & 0x8000u));
}

// The 16-bit word of element i (at its place in the whole buffer: the
// stream's index) of a source of element type E.
template <typename E>
ECCL_HD uint16_t castEncodeOne(typename E::Storage x, bool bf16, bool stochastic, uint64_t seed,
                               size_t i) {
  using C = typename E::Compute;
  const C v = E::load(x);
  if constexpr (std::is_same_v<C, float>) {
    if (!stochastic) return narrowTo(bf16, v);
    const uint32_t r = randomBits(seed, i);
    return bf16 ? bf16Stochastic(v, r) : halfStochastic(v, r);
  } else {
    if (!stochastic) return narrowDoubleTo(bf16, v);
    return narrowStochastic(bf16, v, randomBits(seed, i));
  }
}

// A 16-bit word in the compute type of E.
template <typename E>
ECCL_HD typename E::Compute castWiden(uint16_t w, bool bf16) {
  if constexpr (std::is_same_v<typename E::Compute, float>) {
    return widenFrom(bf16, w);
  } else {
    return widenFloat(widenFrom(bf16, w));
  }
}

template <typename E>
ECCL_HD typename E::Storage castDecodeOne(uint16_t w, bool bf16) {
  return E::store(castWiden<E>(w, bf16));
}

// addend + decoded, added as reduce::reduce adds.
template <typename E>
ECCL_HD typename E::Storage castDecodeAddOne(uint16_t w, typename E::Storage addend, bool bf16) {
  return E::store(cpuAdd(E::load(addend), castWiden<E>(w, bf16)));
}

// ---- Affine codecs: uint8 and uint4 with a min and max per block ----------------
//
// Layout (codec.cc): every block's (lo, hi) in the compute type, then the
// codes, one byte each (uint8) or two per byte, the even element in the low
// nibble (uint4; blocks are even, so each starts on a byte).

ECCL_HD inline size_t affineBlocks(size_t n, size_t b) { return (n + b - 1) / b; }
template <typename C>
ECCL_HD size_t affineMetaBytes(size_t n, size_t b) {
  return affineBlocks(n, b) * 2 * sizeof(C);
}
// Offset of the first code byte of the block starting at element `begin`,
// from the first code byte.
ECCL_HD inline size_t codeOffset(int bits, size_t begin) { return bits == 8 ? begin : begin / 2; }

// Lanes that work on one block: enough to share the block's elements, few
// enough that a block of 8 keeps them busy. A power of two dividing 32, so a
// lane group never straddles a warp.
ECCL_HD inline unsigned lanesPerBlock(size_t b) { return b >= 32 ? 32u : 8u; }

// The min, max and finiteness of the part of a block one lane saw; merge()
// combines two lanes' parts in any order to the same result.
template <typename C>
struct Scan;

template <>
struct Scan<float> {
  int32_t kmin = 0x7fffffff;
  int32_t kmax = -0x7fffffff - 1;
  uint32_t bad = 0;  // a NaN or an infinity

  // A key ordered like the float (-0 before +0), as codec.cc's scanBlock.
  ECCL_HD static int32_t key(uint32_t b) {
    return static_cast<int32_t>(b ^ ((0u - (b >> 31)) & 0x7fffffffu));
  }
  ECCL_HD static float fromKey(int32_t k) {
    const auto u = static_cast<uint32_t>(k);
    return floatFrom(u ^ ((0u - (u >> 31)) & 0x7fffffffu));
  }
  ECCL_HD void add(float v, uint32_t /*index*/) {
    const uint32_t b = bitsOf(v);
    const int32_t k = key(b);
    kmin = k < kmin ? k : kmin;
    kmax = k > kmax ? k : kmax;
    bad |= static_cast<uint32_t>((b & 0x7f800000u) == 0x7f800000u);
  }
  ECCL_HD void merge(const Scan& o) {
    kmin = o.kmin < kmin ? o.kmin : kmin;
    kmax = o.kmax > kmax ? o.kmax : kmax;
    bad |= o.bad;
  }
  ECCL_HD float lo() const { return fromKey(kmin); }
  ECCL_HD float hi() const { return fromKey(kmax); }
};

template <>
struct Scan<double> {
  double mn = doubleFrom(0x7ff0000000000000u);   // +inf
  double mx = doubleFrom(0xfff0000000000000u);   // -inf
  uint32_t imn = 0xffffffffu;  // index of mn in its block (none yet)
  uint32_t imx = 0xffffffffu;
  uint32_t bad = 0;

  // std::min(mn, v) and std::max(mx, v) in index order: a later equal value
  // (-0 after +0) does not replace.
  ECCL_HD void add(double v, uint32_t index) {
    bad |= static_cast<uint32_t>(!isFiniteBits(v));
    if (v < mn) {
      mn = v;
      imn = index;
    }
    if (mx < v) {
      mx = v;
      imx = index;
    }
  }
  ECCL_HD void merge(const Scan& o) {
    if (o.mn < mn || (o.mn == mn && o.imn < imn)) {
      mn = o.mn;
      imn = o.imn;
    }
    if (mx < o.mx || (o.mx == mx && o.imx < imx)) {
      mx = o.mx;
      imx = o.imx;
    }
    bad |= o.bad;
  }
  ECCL_HD double lo() const { return mn; }
  ECCL_HD double hi() const { return mx; }
};

// codec.cc's scaleOf: (hi - lo) / L, or, where hi - lo overflows,
// (hi/2 - lo/2) / L * 2. Through cpu* so that a hostile frame's NaN and
// infinite bounds give the CPU's bits.
template <typename C>
ECCL_HD C scaleOf(C lo, C hi, int levels) {
  const C l = static_cast<C>(levels);
  C s = cpuDiv(cpuSub(hi, lo), l);
  if (isInfBits(s)) {
    // x / 2 as x * 0.5: the same value, the same rounding. nvcc turns
    // __ddiv_rn(x, 2) into a plain mul.f64, which ptxas may fuse into an FMA
    // with the subtraction; __dmul_rn is never fused.
    const C half = C(0.5), two = 2;
    s = cpuMul(cpuDiv(cpuSub(cpuMul(hi, half), cpuMul(lo, half)), l), two);
  }
  return s;
}

template <typename C>
struct AffineBlock {
  C lo;
  C hi;
  C scale;
  bool finite;  // false: the block decodes as NaN, its codes are 0
};

template <typename C>
ECCL_HD AffineBlock<C> affineBlock(const Scan<C>& scan, int levels) {
  if (scan.bad != 0) return {blockNan<C>(), blockNan<C>(), blockNan<C>(), false};
  const C lo = scan.lo(), hi = scan.hi();
  return {lo, hi, scaleOf(lo, hi, levels), true};
}

// min(a, b) for a, b >= +0 (not NaN), on the bits as codec.cc does.
ECCL_HD inline float minNonNegative(float a, float b) {
  const auto x = static_cast<int32_t>(bitsOf(a)), y = static_cast<int32_t>(bitsOf(b));
  return floatFrom(static_cast<uint32_t>(x < y ? x : y));
}
ECCL_HD inline double minNonNegative(double a, double b) {
  const auto x = static_cast<int64_t>(bitsOf(a)), y = static_cast<int64_t>(bitsOf(b));
  return doubleFrom(static_cast<uint64_t>(x < y ? x : y));
}

// The code of element v, at place i of its block. The block is finite, so
// no NaN arises here: v - lo >= +0 (lo is the minimum), and is at most
// +inf when the range overflowed, which caps at the top code.
template <typename C>
ECCL_HD uint8_t quantizeOne(C v, const AffineBlock<C>& blk, int levels, bool stochastic,
                            uint64_t stream, size_t i) {
  if (!blk.finite) return 0;
  const C s = blk.scale;
  if (!(s > 0)) {  // constant block, or a range too small to divide: the nearer end
    return static_cast<uint8_t>(cpuSub(v, blk.lo) > cpuSub(blk.hi, v) ? levels : 0);
  }
  const C l = static_cast<C>(levels);
  const C t = cpuDiv(cpuSub(v, blk.lo), s);
  if (!stochastic) {
    const C r = cpuAdd(t, C(0.5));
    return static_cast<uint8_t>(static_cast<int32_t>(l < r ? l : r));  // std::min(r, l)
  }
  const C capped = minNonNegative(t, l);
  const int32_t whole = static_cast<int32_t>(capped);
  const C frac = cpuSub(capped, static_cast<C>(whole));
  const C u = cpuMul(static_cast<C>(static_cast<int32_t>(randomBits(stream, i) >> 8)), C(0x1p-24));
  return static_cast<uint8_t>(whole + isNegative(cpuSub(u, frac)));  // u < frac
}

// What code q of a block decodes to: min(lo + q * scale, hi), hi exactly at
// the top code.
template <typename C>
ECCL_HD C dequantize(uint8_t q, C lo, C hi, C s, int levels) {
  const C sum = cpuAdd(lo, cpuMul(static_cast<C>(q), s));
  const C v = hi < sum ? hi : sum;  // std::min(sum, hi): a NaN sum stays
  return q == levels ? hi : v;
}

// Block k's bounds, at any alignment.
template <typename C>
ECCL_HD void writeBounds(std::byte* encoded, size_t k, C lo, C hi) {
  std::memcpy(encoded + k * 2 * sizeof(C), &lo, sizeof(C));
  std::memcpy(encoded + k * 2 * sizeof(C) + sizeof(C), &hi, sizeof(C));
}
template <typename C>
ECCL_HD void readBounds(const std::byte* encoded, size_t k, C* lo, C* hi) {
  std::memcpy(lo, encoded + k * 2 * sizeof(C), sizeof(C));
  std::memcpy(hi, encoded + k * 2 * sizeof(C) + sizeof(C), sizeof(C));
}

// ---- One lane's share of a block ---------------------------------------------------
//
// A block of len elements is shared by `lanes` lanes: lane l takes elements
// l, l + lanes, ... (uint8 codes, the scan, the decoded values) or code bytes
// l, l + lanes, ... (uint4: two elements each). x, codes and out point at the
// block's first element or code byte.

template <typename E>
ECCL_HD Scan<typename E::Compute> scanLane(const typename E::Storage* x, size_t len,
                                           unsigned lane, unsigned lanes) {
  Scan<typename E::Compute> scan;
  for (size_t i = lane; i < len; i += lanes) scan.add(E::load(x[i]), static_cast<uint32_t>(i));
  return scan;
}

template <typename E>
ECCL_HD void encodeLane(const typename E::Storage* x, size_t len,
                        const AffineBlock<typename E::Compute>& blk, int bits, bool stochastic,
                        uint64_t stream, uint8_t* codes, unsigned lane, unsigned lanes) {
  const int levels = (1 << bits) - 1;
  if (bits == 8) {
    for (size_t i = lane; i < len; i += lanes) {
      codes[i] = quantizeOne(E::load(x[i]), blk, levels, stochastic, stream, i);
    }
    return;
  }
  for (size_t j = lane; 2 * j < len; j += lanes) {
    const uint8_t even = quantizeOne(E::load(x[2 * j]), blk, levels, stochastic, stream, 2 * j);
    const uint8_t odd = 2 * j + 1 < len ? quantizeOne(E::load(x[2 * j + 1]), blk, levels,
                                                      stochastic, stream, 2 * j + 1)
                                        : 0;
    codes[j] = static_cast<uint8_t>(even | odd << 4);
  }
}

// Decodes the lane's elements into out, or, with an addend, out = addend +
// decoded (out may be addend: each element is read before it is written).
template <typename E>
ECCL_HD void decodeLane(const uint8_t* codes, size_t len, typename E::Compute lo,
                        typename E::Compute hi, int bits, const typename E::Storage* addend,
                        typename E::Storage* out, unsigned lane, unsigned lanes) {
  using C = typename E::Compute;
  const int levels = (1 << bits) - 1;
  const C s = scaleOf(lo, hi, levels);
  auto emit = [&](size_t i, uint8_t q) {
    const C v = dequantize(q, lo, hi, s, levels);
    out[i] = E::store(addend != nullptr ? cpuAdd(E::load(addend[i]), v) : v);
  };
  if (bits == 8) {
    for (size_t i = lane; i < len; i += lanes) emit(i, codes[i]);
    return;
  }
  for (size_t j = lane; 2 * j < len; j += lanes) {
    const uint8_t c = codes[j];
    emit(2 * j, static_cast<uint8_t>(c & 0x0fu));
    if (2 * j + 1 < len) emit(2 * j + 1, static_cast<uint8_t>(c >> 4));
  }
}

}  // namespace eccl::cuda
