// RegistrationCache: memory registrations of the buffers frames are sent
// from, so that a large payload goes out by RDMA straight from where it lies
// (no bounce copy), and a buffer sent on several links (a broadcast tree, the
// small-message collectives' hops) or several times in one op is registered
// once.
//
// Lifetime: a registration pins the pages it covers as they were when it was
// made. If the program frees a buffer and gets new memory at the same
// address, a registration kept from before would send the old pages. So
// registrations live only as long as the op that made them: retire(tag, seq)
// (the op ended; Link::retire) drops every one last used by that op or an
// earlier one of its tag and not in use now. Between ops nothing is assumed
// about user memory. (Keeping them across ops safely needs on-demand paging
// or hooks on munmap; see docs/ibverbs.md.)
//
// Bounded: at most `maxEntries` registrations and `maxBytes` pinned; past
// that the least recently used idle one is dropped first.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>

#include "transport/ibverbs/device.h"

namespace eccl::transport::ibverbs {

class RegistrationCache {
 public:
  struct Limits {
    size_t maxEntries = 256;
    uint64_t maxBytes = uint64_t{4} << 30;
  };
  struct Stats {
    uint64_t hits = 0;
    uint64_t misses = 0;
    uint64_t dropped = 0;  // by retire or eviction
    size_t entries = 0;
    uint64_t bytes = 0;
  };

  // A registration in use: its entry is not dropped while a Pin holds it.
  class Pin {
   public:
    Pin() = default;
    Pin(Pin&& o) noexcept : cache_(o.cache_), entry_(o.entry_), lkey_(o.lkey_) { o.cache_ = nullptr; }
    Pin& operator=(Pin&& o) noexcept;
    ~Pin() { release(); }
    uint32_t lkey() const { return lkey_; }

   private:
    friend class RegistrationCache;
    void release();
    RegistrationCache* cache_ = nullptr;
    uintptr_t entry_ = 0;
    uint32_t lkey_ = 0;
  };

  RegistrationCache(std::shared_ptr<Device> device, Limits limits)
      : device_(std::move(device)), limits_(limits) {}
  ~RegistrationCache();
  RegistrationCache(const RegistrationCache&) = delete;
  RegistrationCache& operator=(const RegistrationCache&) = delete;

  // A registration covering [p, p + n) for op (tag, seq); n > 0.
  Result<Pin> pin(const void* p, size_t n, uint32_t tag, uint64_t seq);
  void retire(uint32_t tag, uint64_t seq);
  Stats stats() const;

 private:
  struct Entry {
    uintptr_t end = 0;
    ibv_mr* mr = nullptr;
    uint32_t pins = 0;
    uint32_t tag = 0;  // the op that used it last
    uint64_t seq = 0;
    std::list<uintptr_t>::iterator lru;
  };
  void unpin(uintptr_t start);
  // Drops the entry at `it` (idle) under mu_.
  void drop(std::map<uintptr_t, Entry>::iterator it);
  // Makes room for `bytes` more (under mu_): false when every entry is in use.
  bool makeRoom(uint64_t bytes);

  std::shared_ptr<Device> device_;
  Limits limits_;
  mutable std::mutex mu_;
  std::map<uintptr_t, Entry> entries_;  // by page-aligned start
  std::list<uintptr_t> lru_;            // most recently used first
  Stats stats_;
};

}  // namespace eccl::transport::ibverbs
