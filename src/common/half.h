// IEEE binary16 ("half") and bfloat16 conversions by bit manipulation.
//
// Why not F16C or _Float16: the library targets baseline x86-64 and other
// architectures, and these conversions must give the same bits everywhere so
// that every ring member ends a collective with identical results.
//
// Contract
//  - Widening (halfToFloat, bf16ToFloat) is exact for every bit pattern; NaN
//    payloads are kept as they are (a signalling NaN stays signalling, which
//    the next float operation quiets anyway).
//  - Narrowing (floatToHalf, floatToBf16) rounds to nearest, ties to even,
//    including into and out of the subnormal range; values too large become
//    infinity with the input's sign. NaN becomes a quiet NaN with the same
//    sign and the top payload bits.
//  - Written as straight-line code with bitwise selects so that loops over
//    arrays auto-vectorize: with `?:` GCC sinks the float arithmetic into
//    branches, which it then may not if-convert (float ops can trap), and
//    gives up on the loop. The float additions used for subnormals are exact or
//    round correctly under the default rounding mode, and stay correct under
//    flush-to-zero / denormals-are-zero because their operands and results
//    are normal floats.
#pragma once

#include <bit>
#include <cstdint>

namespace eccl {
namespace half_detail {

// cond ? x : y without a branch.
inline uint32_t select(bool cond, uint32_t x, uint32_t y) {
  const uint32_t mask = 0u - static_cast<uint32_t>(cond);
  return (x & mask) | (y & ~mask);
}

}  // namespace half_detail

inline float halfToFloat(uint16_t bits) {
  const uint32_t h = bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t shifted = (h & 0x7fffu) << 13;  // exponent and mantissa in float position
  const uint32_t exponent = shifted & 0x0f800000u;
  const uint32_t normal = shifted + (112u << 23);   // rebias 15 -> 127
  const uint32_t infOrNan = shifted + (224u << 23); // exponent 31 -> 255
  // A subnormal's mantissa m means m * 2^-24: build 2^-14 * (1 + m/1024) and
  // subtract 2^-14, which is exact. Zero falls out of this too.
  const float magic = std::bit_cast<float>(113u << 23);
  const float subnormal = std::bit_cast<float>(shifted + (113u << 23)) - magic;
  uint32_t r = half_detail::select(exponent == 0, std::bit_cast<uint32_t>(subnormal), normal);
  r = half_detail::select(exponent == 0x0f800000u, infOrNan, r);
  return std::bit_cast<float>(r | sign);
}

inline uint16_t floatToHalf(float value) {
  const uint32_t f = std::bit_cast<uint32_t>(value);
  const uint32_t sign = (f >> 16) & 0x8000u;
  const uint32_t a = f & 0x7fffffffu;
  // Normal result: rebias, then add just under half an ulp plus the lowest
  // kept bit so that ties round to even. A carry out of the mantissa bumps
  // the exponent, which is right, up to and including infinity.
  const uint32_t normal = (a - (112u << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
  // Subnormal result: adding 0.5 puts the bits to keep at the bottom of the
  // float mantissa and lets the FPU's own RNE do the rounding.
  const uint32_t subnormal =
      std::bit_cast<uint32_t>(std::bit_cast<float>(a) + 0.5f) - 0x3f000000u;
  const uint32_t special =  // inf, or a quiet NaN keeping the top payload bits
      0x7c00u | half_detail::select(a > 0x7f800000u, 0x200u | ((a >> 13) & 0x3ffu), 0);
  uint32_t r = half_detail::select(a < 0x38800000u, subnormal, normal);  // |x| < 2^-14
  r = half_detail::select(a >= 0x47800000u, special, r);                  // |x| >= 65536
  return static_cast<uint16_t>(r | sign);
}

// bfloat16 is the top half of a float, so widening is a shift.
inline float bf16ToFloat(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

inline uint16_t floatToBf16(float value) {
  const uint32_t f = std::bit_cast<uint32_t>(value);
  const bool isNan = (f & 0x7fffffffu) > 0x7f800000u;
  // Round to nearest even; a carry into the exponent is right, and turns
  // the largest finite floats into infinity. Unsigned wrap is harmless: it
  // only happens for NaN, which takes the other branch.
  const uint32_t rounded = (f + 0x7fffu + ((f >> 16) & 1u)) >> 16;
  const uint32_t quietNan = (f >> 16) | 0x0040u;
  return static_cast<uint16_t>(isNan ? quietNan : rounded);
}

}  // namespace eccl
