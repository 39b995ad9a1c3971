// The memory-bandwidth probe: how fast this machine copies with 1 and 2
// threads (memcpy of 64 MiB buffers, each thread its own pair, pages touched
// first). The copy rate bounds any shared-memory collective: a ring
// all-reduce copies each byte into a shared ring and out again per hop, and
// reduces it once, so the busbw README reports is set against this.
//
// Three ways: one memcpy of the whole buffer (glibc streams copies this
// large past the cache), memcpy in 1 MiB pieces (how the ring copies: one
// segment at a time, through the cache) and eccl::streamCopy in 1 MiB pieces
// (non-temporal stores, common/stream_copy.h: the ring's backup and
// all-gather copies into large buffers).
//
// Usage: memcpy_bw [--mib N] [--reps R] [--threads "1 2"]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/stream_copy.h"

namespace {

enum class Way { kWhole, kPieces, kStreamPieces };
constexpr size_t kPiece = 1 << 20;

void copy(Way way, char* dst, const char* src, size_t bytes) {
  if (way == Way::kWhole) {
    std::memcpy(dst, src, bytes);
    return;
  }
  for (size_t o = 0; o < bytes; o += kPiece) {
    const size_t n = std::min(kPiece, bytes - o);
    if (way == Way::kPieces) {
      std::memcpy(dst + o, src + o, n);
    } else {
      eccl::streamCopy(dst + o, src + o, n);
    }
  }
}

double copyRate(Way way, int threads, size_t bytes, int reps) {
  std::vector<std::vector<char>> src(threads), dst(threads);
  for (int t = 0; t < threads; ++t) {
    src[t].assign(bytes, static_cast<char>(t + 1));
    dst[t].assign(bytes, 0);
  }
  double best = 0.0;
  for (int r = 0; r < reps; ++r) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] { copy(way, dst[t].data(), src[t].data(), bytes); });
    }
    for (auto& th : pool) th.join();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, static_cast<double>(bytes) * threads / secs);
  }
  // Keep the copies observable.
  size_t sum = 0;
  for (int t = 0; t < threads; ++t) sum += static_cast<unsigned char>(dst[t][bytes / 2]);
  if (sum == 0) std::fprintf(stderr, "unexpected zero\n");
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  size_t mib = 64;
  int reps = 10;
  std::string threads = "1 2";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--mib") mib = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--threads") threads = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: %s [--mib N] [--reps R] [--threads \"1 2\"]\n", argv[0]);
      return 2;
    }
  }
  if (mib == 0 || reps <= 0) return 2;
  std::istringstream in(threads);
  int t = 0;
  std::printf("# memcpy of %zu MiB per thread, best of %d\n", mib, reps);
  while (in >> t) {
    if (t <= 0) continue;
    const double rate = copyRate(Way::kWhole, t, mib << 20, reps);
    std::printf("threads %d  copy %.2f GB/s  (memory traffic %.2f GB/s: read + write)\n", t, rate / 1e9,
                2 * rate / 1e9);
    std::printf("threads %d  in 1 MiB pieces: memcpy %.2f GB/s, streamCopy %.2f GB/s\n", t,
                copyRate(Way::kPieces, t, mib << 20, reps) / 1e9,
                copyRate(Way::kStreamPieces, t, mib << 20, reps) / 1e9);
  }
  return 0;
}
