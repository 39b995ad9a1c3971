// Ring chunk schedule: how `count` elements are cut into one chunk per rank
// and each chunk into pipelining segments. Pure arithmetic, unit tested for
// awkward counts (0, 1, fewer elements than ranks, not divisible).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace eccl::collectives {

struct Range {
  size_t begin = 0;
  size_t count = 0;
};

// Chunk c of `count` elements over `world` ranks: the first count % world
// chunks hold one element more.
inline Range chunkRange(size_t count, int world, int c) {
  const size_t n = static_cast<size_t>(world);
  const size_t base = count / n, rem = count % n, i = static_cast<size_t>(c);
  return {i * base + std::min(i, rem), base + (i < rem ? 1 : 0)};
}

// Segments of a range: at least one (possibly empty), each at most segElems.
inline uint32_t segmentCount(size_t rangeCount, size_t segElems) {
  if (rangeCount == 0) return 1;
  return static_cast<uint32_t>((rangeCount + segElems - 1) / segElems);
}

inline Range segmentRange(Range r, size_t segElems, uint32_t j) {
  const size_t begin = std::min(r.count, static_cast<size_t>(j) * segElems);
  return {r.begin + begin, std::min(segElems, r.count - begin)};
}

inline int mod(int a, int n) { return ((a % n) + n) % n; }

// Ops whose inputs, all gathered, make at most this many bytes (world x the
// op's bytes) and that have no codec run the small-message algorithms
// (collectives/small.h) instead of the ring. Chosen by measurement (4 and 16
// local peers: both cost the same around 32-128 KiB gathered; README,
// "Measured"). Part of data link version 7: every member, and the master
// weighing stall reports, must choose alike.
inline constexpr size_t kSmallGatherBytes = 32 << 10;
inline bool smallPath(size_t bytes, size_t world, bool codec) {
  return world > 1 && bytes > 0 && !codec && bytes * world <= kSmallGatherBytes;
}

}  // namespace eccl::collectives
