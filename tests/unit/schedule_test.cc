// Ring chunk schedule for awkward counts.
#include <gtest/gtest.h>

#include "collectives/schedule.h"

namespace eccl::collectives {
namespace {

TEST(Schedule, ChunksTileTheBufferExactly) {
  for (int world : {1, 2, 3, 5, 8, 13}) {
    for (size_t count : {size_t{0}, size_t{1}, size_t{2}, size_t{7}, size_t{12}, size_t{1000003}}) {
      size_t next = 0, minLen = SIZE_MAX, maxLen = 0;
      for (int c = 0; c < world; ++c) {
        Range r = chunkRange(count, world, c);
        EXPECT_EQ(r.begin, next) << "world " << world << " count " << count << " chunk " << c;
        next = r.begin + r.count;
        minLen = std::min(minLen, r.count);
        maxLen = std::max(maxLen, r.count);
      }
      EXPECT_EQ(next, count);
      EXPECT_LE(maxLen - minLen, 1u);  // balanced
    }
  }
}

TEST(Schedule, SegmentsTileAChunk) {
  for (size_t len : {size_t{0}, size_t{1}, size_t{5}, size_t{6}, size_t{7}, size_t{1u << 20}}) {
    for (size_t seg : {size_t{1}, size_t{3}, size_t{6}, size_t{4096}}) {
      const Range chunk{100, len};
      const uint32_t n = segmentCount(len, seg);
      EXPECT_GE(n, 1u);
      size_t next = 100;
      for (uint32_t j = 0; j < n; ++j) {
        Range s = segmentRange(chunk, seg, j);
        EXPECT_EQ(s.begin, next);
        EXPECT_LE(s.count, seg);
        if (len > 0) {
          EXPECT_GT(s.count, 0u);
        }
        next += s.count;
      }
      EXPECT_EQ(next, 100 + len);
    }
  }
}

TEST(Schedule, ModIsNonNegative) {
  EXPECT_EQ(mod(-1, 4), 3);
  EXPECT_EQ(mod(-9, 4), 3);
  EXPECT_EQ(mod(5, 4), 1);
}

}  // namespace
}  // namespace eccl::collectives
