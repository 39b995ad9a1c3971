// Content hashes of shared-state tensors: XXH3-64 (libxxhash), parallel for
// large buffers, and the same value whatever the thread count.
//
// Buffers up to kPieceBytes are hashed whole with XXH3-64. Larger ones are
// cut into kPieceBytes pieces hashed in parallel; the result is XXH3-64 over
// the pieces' hashes (little-endian u64 each) followed by the length (u64).
// So the value depends only on the bytes, and changes with any of them.
//
// Thread safety: pure functions; the pool they use is internal.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace eccl::state {

inline constexpr size_t kPieceBytes = size_t{16} << 20;

// Hash of `bytes` bytes at `data` (may be null when bytes is 0). `threads`:
// how many threads may work on it, 0 = the hardware's count.
uint64_t contentHash(const void* data, size_t bytes, unsigned threads = 0);

struct HashJob {
  const void* data = nullptr;
  size_t bytes = 0;
  uint64_t hash = 0;  // out
};

// Hashes every job, spreading the pieces of all of them over the threads.
void hashAll(std::span<HashJob> jobs, unsigned threads = 0);

}  // namespace eccl::state
