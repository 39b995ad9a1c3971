// The copy helpers of the large all-reduce path: streamCopy (non-temporal
// stores past the cache) copies exactly, at every size around its thresholds
// and every alignment; large-page buffers are aligned to a huge page, keep
// their allocator when moved, and come back from a pool that makes them.
#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <vector>

#include "common/large_pages.h"
#include "common/stream_copy.h"
#include "transport/buffer_pool.h"

namespace eccl {
namespace {

TEST(StreamCopy, CopiesExactlyAtEverySizeAndAlignment) {
  const size_t sizes[] = {0,  1,  15, 16, 17, 63, 64, 65, 4095,
                          kStreamCopyMinBytes - 1, kStreamCopyMinBytes, kStreamCopyMinBytes + 1,
                          kStreamCopyMinBytes + 63, (3 << 20) + 5};
  std::vector<uint8_t> src((3 << 20) + 128);
  std::iota(src.begin(), src.end(), uint8_t{7});
  std::vector<uint8_t> dst(src.size());
  for (size_t n : sizes) {
    for (size_t so : {0, 1, 8, 13}) {
      for (size_t d : {0, 3, 16, 33}) {
        std::fill(dst.begin(), dst.end(), uint8_t{0xEE});
        streamCopy(dst.data() + d, src.data() + so, n);
        ASSERT_TRUE(std::equal(dst.begin() + d, dst.begin() + d + n, src.begin() + so))
            << "n " << n << " src +" << so << " dst +" << d;
        // Nothing written outside [d, d + n).
        for (size_t i = 0; i < d; ++i) ASSERT_EQ(dst[i], 0xEE) << "n " << n << " before " << i;
        for (size_t i = d + n; i < std::min(dst.size(), d + n + 64); ++i) {
          ASSERT_EQ(dst[i], 0xEE) << "n " << n << " after " << i;
        }
      }
    }
  }
}

TEST(LargePages, MegabyteBuffersAreAlignedToAHugePage) {
  LargePageBytes big{LargePageAllocator<std::byte>(true)};
  big.resize(1 << 20);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(big.data()) % LargePageAllocator<std::byte>::kHugePage, 0u);
  big[(1 << 20) - 1] = std::byte{1};
  LargePageBytes small{LargePageAllocator<std::byte>(true)};
  small.resize(4096);  // the ordinary heap
  small[4095] = std::byte{2};
  // Moved, a buffer keeps its allocator, so it is freed the way it was made.
  LargePageBytes plain;
  plain.resize(1 << 20);
  plain = std::move(big);
  EXPECT_TRUE(plain.get_allocator().large());
  EXPECT_EQ(plain[(1 << 20) - 1], std::byte{1});
}

TEST(LargePages, APoolMadeForThemHandsThemOutAgain) {
  auto pool = transport::BufferPool::create(/*largePages=*/true);
  const std::byte* first = nullptr;
  {
    transport::BufferPool::Handle h = pool->get(1 << 20);
    first = h.data();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % LargePageAllocator<std::byte>::kHugePage, 0u);
    EXPECT_EQ(h.size(), size_t{1} << 20);
  }
  transport::BufferPool::Handle again = pool->get(1000);  // the same buffer, recycled
  EXPECT_EQ(again.data(), first);
  EXPECT_EQ(again.size(), 1000u);
}

}  // namespace
}  // namespace eccl
