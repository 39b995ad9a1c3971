// What the CPU kernels (reduce/, codec/) share: how an element of each dtype
// is stored and computed, and how entry points get an AVX2 clone.
//
// Kernels are plain indexed loops over restrict pointers that the compiler
// vectorizes; only the per-dtype entry points are out of line (the rest is
// force-inlined), so each gets its loops compiled as one unit.
//
// On x86-64 the baseline is SSE2; an AVX2 clone of each entry point, picked
// at load time, doubles the vector width on the machines that have it.
// ECCL_NO_CLONES turns it off (TSan, or platforms without ifunc). Neither
// clone contracts a*b+c into an FMA (AVX2 does not imply FMA, and the kernel
// libraries are built with -ffp-contract=off), so both give the same bits.
#pragma once

#include <cstdint>

#include "common/half.h"

#define ECCL_ALWAYS_INLINE inline __attribute__((always_inline))

#if defined(__x86_64__) && defined(__has_attribute) && !defined(ECCL_NO_CLONES)
#if __has_attribute(target_clones)
#define ECCL_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef ECCL_CLONES
#define ECCL_CLONES
#endif

namespace eccl::kernels {

// How an element is stored and what type it is computed in.
template <typename T>
struct Native {
  using Storage = T;
  using Compute = T;
  static T load(T x) { return x; }
  static T store(T x) { return x; }
};

struct Half {
  using Storage = uint16_t;
  using Compute = float;
  static float load(uint16_t x) { return halfToFloat(x); }
  static uint16_t store(float x) { return floatToHalf(x); }
};

struct Bfloat16 {
  using Storage = uint16_t;
  using Compute = float;
  static float load(uint16_t x) { return bf16ToFloat(x); }
  static uint16_t store(float x) { return floatToBf16(x); }
};

}  // namespace eccl::kernels
