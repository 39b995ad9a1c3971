// Registrations: the memory registrations large payloads are sent from, so
// that they go out by RDMA straight from where they lie (no bounce copy).
// Sends in flight over the same pages (several links, several queue pairs)
// share one registration.
//
// Lifetime: exactly as long as the sends using it (a Pin each). A
// registration pins the pages it covers as they were when it was made; if
// the program frees a buffer and gets new memory at the same address (a
// munmap'd allocation mapped again, ECCL's own temporaries within one op
// included), a registration kept from before would send the old pages,
// silently. So nothing is kept once no send uses it: each large frame pays
// one registration (about a page-table walk and an HCA translation update).
// A cache across sends needs on-demand paging (IBV_ACCESS_ON_DEMAND, which
// follows the page tables) or an explicit registration API; see
// docs/ibverbs.md.
//
// Bounded: at most `maxEntries` registrations in use and `maxBytes` pinned
// (a frame larger than that still goes alone); past that pin() fails and
// the frame is not sent.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "transport/ibverbs/device.h"

namespace eccl::transport::ibverbs {

class Registrations {
 public:
  struct Limits {
    size_t maxEntries = 1024;
    uint64_t maxBytes = uint64_t{4} << 30;
  };
  struct Stats {
    uint64_t shared = 0;  // pins that found a registration in use
    uint64_t made = 0;    // registrations made
    size_t entries = 0;   // in use now
    uint64_t bytes = 0;
  };

  // A registration in use; it is released with the last Pin on it.
  class Pin {
   public:
    Pin() = default;
    Pin(Pin&& o) noexcept : owner_(o.owner_), id_(o.id_), lkey_(o.lkey_) { o.owner_ = nullptr; }
    Pin& operator=(Pin&& o) noexcept;
    ~Pin() { release(); }
    uint32_t lkey() const { return lkey_; }

   private:
    friend class Registrations;
    void release();
    Registrations* owner_ = nullptr;
    uint64_t id_ = 0;
    uint32_t lkey_ = 0;
  };

  Registrations(std::shared_ptr<Device> device, Limits limits)
      : device_(std::move(device)), limits_(limits) {}
  ~Registrations();
  Registrations(const Registrations&) = delete;
  Registrations& operator=(const Registrations&) = delete;

  // A registration covering [p, p + n), n > 0, held by the Pin.
  Result<Pin> pin(const void* p, size_t n);
  Stats stats() const;

 private:
  struct Entry {
    uint64_t id = 0;
    uintptr_t start = 0, end = 0;  // page-aligned
    ibv_mr* mr = nullptr;
    uint32_t pins = 0;
  };
  void unpin(uint64_t id);

  std::shared_ptr<Device> device_;
  Limits limits_;
  mutable std::mutex mu_;
  std::vector<Entry> entries_;  // in use now: a few per queue pair, so a scan is cheap
  uint64_t nextId_ = 1;
  Stats stats_;
};

}  // namespace eccl::transport::ibverbs
