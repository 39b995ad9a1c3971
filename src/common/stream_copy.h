// Copies whose destination will not be read again soon (the all-or-nothing
// backup of an input, results written over a buffer much larger than the
// cache): non-temporal stores go to memory without first reading each
// destination line into the cache, about 1.5x the rate of memcpy from and to
// buffers that are not in the cache (bench/memcpy_bw). Small copies, and
// builds for CPUs without SSE2, use memcpy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace eccl {

// Below this a copy is likely to stay in the cache and memcpy is better.
inline constexpr size_t kStreamCopyMinBytes = 256 << 10;

inline void streamCopy(void* dst, const void* src, size_t n) {
#if defined(__SSE2__)
  if (n >= kStreamCopyMinBytes) {
    auto* d = static_cast<std::byte*>(dst);
    const auto* s = static_cast<const std::byte*>(src);
    const size_t head = (16 - (reinterpret_cast<uintptr_t>(d) & 15)) & 15;
    std::memcpy(d, s, head);
    d += head;
    s += head;
    n -= head;
    const size_t blocks = n / 64;
    for (size_t i = 0; i < blocks; ++i, d += 64, s += 64) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16));
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 32));
      const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 48));
      _mm_stream_si128(reinterpret_cast<__m128i*>(d), a);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + 16), b);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + 32), c);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + 48), e);
    }
    _mm_sfence();  // ordered before whatever follows, as memcpy's stores are
    std::memcpy(d, s, n % 64);
    return;
  }
#endif
  std::memcpy(dst, src, n);
}

}  // namespace eccl
