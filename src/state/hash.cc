#include "state/hash.h"

#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <thread>
#include <vector>

namespace eccl::state {
namespace {

size_t pieces(size_t bytes) { return bytes <= kPieceBytes ? 1 : (bytes + kPieceBytes - 1) / kPieceBytes; }

void putLe64(std::byte* out, uint64_t v) {
  if constexpr (std::endian::native != std::endian::little) v = __builtin_bswap64(v);
  std::memcpy(out, &v, 8);
}

// The hash of a large buffer from its pieces' hashes.
uint64_t combine(const uint64_t* pieceHashes, size_t n, size_t bytes) {
  std::vector<std::byte> buf((n + 1) * 8);
  for (size_t i = 0; i < n; ++i) putLe64(buf.data() + 8 * i, pieceHashes[i]);
  putLe64(buf.data() + 8 * n, bytes);
  return XXH3_64bits(buf.data(), buf.size());
}

unsigned threadsFor(unsigned asked, size_t work) {
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const unsigned t = asked == 0 ? hw : asked;
  return static_cast<unsigned>(std::min<size_t>(t, work));
}

}  // namespace

uint64_t contentHash(const void* data, size_t bytes, unsigned threads) {
  HashJob job{data, bytes, 0};
  hashAll({&job, 1}, threads);
  return job.hash;
}

void hashAll(std::span<HashJob> jobs, unsigned threads) {
  // Every piece of every job is one unit of work, taken from a shared counter.
  struct Unit {
    size_t job;
    size_t piece;
  };
  std::vector<Unit> units;
  std::vector<std::vector<uint64_t>> pieceHashes(jobs.size());
  for (size_t j = 0; j < jobs.size(); ++j) {
    const size_t n = pieces(jobs[j].bytes);
    pieceHashes[j].resize(n);
    for (size_t p = 0; p < n; ++p) units.push_back({j, p});
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t u = next.fetch_add(1); u < units.size(); u = next.fetch_add(1)) {
      const HashJob& job = jobs[units[u].job];
      const size_t begin = units[u].piece * kPieceBytes;
      const size_t len = std::min(kPieceBytes, job.bytes - std::min(job.bytes, begin));
      const auto* p = static_cast<const std::byte*>(job.data);
      pieceHashes[units[u].job][units[u].piece] = XXH3_64bits(len > 0 ? p + begin : nullptr, len);
    }
  };
  const unsigned t = threadsFor(threads, units.size());
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < t; ++i) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  for (size_t j = 0; j < jobs.size(); ++j) {
    const auto& h = pieceHashes[j];
    jobs[j].hash = jobs[j].bytes <= kPieceBytes ? h[0] : combine(h.data(), h.size(), jobs[j].bytes);
  }
}

}  // namespace eccl::state
