// Tests for state/hash.h: XXH3-64 for small buffers, the piece construction
// for large ones (rebuilt here from XXH3 directly), independence from the
// thread count, and that any changed byte changes the hash.
#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <random>
#include <vector>

#include "state/hash.h"

namespace eccl::state {
namespace {

std::vector<std::byte> randomBytes(size_t n, uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<std::byte>(rng());
  return v;
}

// The documented construction, from XXH3 calls only.
uint64_t reference(const std::vector<std::byte>& v) {
  if (v.size() <= kPieceBytes) return XXH3_64bits(v.data(), v.size());
  std::vector<uint64_t> words;
  for (size_t b = 0; b < v.size(); b += kPieceBytes) {
    words.push_back(XXH3_64bits(v.data() + b, std::min(kPieceBytes, v.size() - b)));
  }
  words.push_back(v.size());  // little-endian on this (x86) machine
  return XXH3_64bits(words.data(), words.size() * 8);
}

TEST(StateHash, SmallBuffersAreXxh3) {
  EXPECT_EQ(contentHash(nullptr, 0), XXH3_64bits("", 0));
  for (size_t n : {size_t{1}, size_t{7}, size_t{4096}, kPieceBytes}) {
    const auto v = randomBytes(n, static_cast<uint32_t>(n));
    EXPECT_EQ(contentHash(v.data(), v.size()), XXH3_64bits(v.data(), v.size())) << n;
  }
}

TEST(StateHash, LargeBuffersSameForEveryThreadCount) {
  const auto v = randomBytes(2 * kPieceBytes + 12345, 9);
  const uint64_t want = reference(v);
  for (unsigned t : {1u, 2u, 3u, 8u, 0u}) EXPECT_EQ(contentHash(v.data(), v.size(), t), want) << t;
  EXPECT_NE(want, XXH3_64bits(v.data(), v.size()));
}

TEST(StateHash, AnyChangedByteChangesIt) {
  auto v = randomBytes(kPieceBytes + 100, 4);
  const uint64_t before = contentHash(v.data(), v.size());
  for (size_t at : {size_t{0}, kPieceBytes - 1, kPieceBytes, v.size() - 1}) {
    v[at] ^= std::byte{1};
    EXPECT_NE(contentHash(v.data(), v.size()), before) << at;
    v[at] ^= std::byte{1};
  }
  EXPECT_EQ(contentHash(v.data(), v.size()), before);
  // A prefix with the same pieces but another length differs too.
  EXPECT_NE(contentHash(v.data(), v.size() - 1), before);
}

TEST(StateHash, HashAllMatchesOneByOne) {
  std::vector<std::vector<std::byte>> bufs;
  for (size_t n : {size_t{0}, size_t{3}, kPieceBytes + 1, size_t{1} << 20}) {
    bufs.push_back(randomBytes(n, static_cast<uint32_t>(n + 1)));
  }
  std::vector<HashJob> jobs;
  for (const auto& b : bufs) jobs.push_back({b.data(), b.size(), 0});
  hashAll(jobs, 3);
  for (size_t i = 0; i < bufs.size(); ++i) {
    EXPECT_EQ(jobs[i].hash, reference(bufs[i])) << i;
  }
}

}  // namespace
}  // namespace eccl::state
