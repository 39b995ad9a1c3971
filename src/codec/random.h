// The random stream of stochastic rounding (codec.cc), in one place for the
// host codecs and the CUDA codec kernels (cuda/codec_elementwise.h): the two
// must draw the same bits for every element, or the members of a group that
// mixes GPUs and CPUs stop agreeing.
#pragma once

#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define ECCL_RANDOM_FN __host__ __device__ __forceinline__
#else
#define ECCL_RANDOM_FN inline __attribute__((always_inline))
#endif

namespace eccl::codec {

ECCL_RANDOM_FN uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// 32-bit finalizer (lowbias32): 32-bit multiplies only, so it vectorizes.
ECCL_RANDOM_FN uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// 32 random bits for element i of a stream (i wraps at 2^32).
ECCL_RANDOM_FN uint32_t randomBits(uint64_t stream, size_t i) {
  return mix32((static_cast<uint32_t>(i) * 0x9e3779b9U) ^ static_cast<uint32_t>(stream)) ^
         static_cast<uint32_t>(stream >> 32);
}

// The stream of block k of an encode whose seed is `seed`.
ECCL_RANDOM_FN uint64_t blockStream(uint64_t seed, size_t k) { return splitmix64(seed + k); }

}  // namespace eccl::codec
