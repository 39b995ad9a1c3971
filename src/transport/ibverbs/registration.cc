#include "transport/ibverbs/registration.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace eccl::transport::ibverbs {

RegistrationCache::Pin& RegistrationCache::Pin::operator=(Pin&& o) noexcept {
  if (this != &o) {
    release();
    cache_ = o.cache_;
    entry_ = o.entry_;
    lkey_ = o.lkey_;
    o.cache_ = nullptr;
  }
  return *this;
}

void RegistrationCache::Pin::release() {
  if (cache_ != nullptr) cache_->unpin(entry_);
  cache_ = nullptr;
}

RegistrationCache::~RegistrationCache() {
  for (auto& [start, e] : entries_) device_->api().deregMr(e.mr);
}

Result<RegistrationCache::Pin> RegistrationCache::pin(const void* p, size_t n, uint32_t tag,
                                                      uint64_t seq) {
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p);
  const uintptr_t end = begin + n;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.upper_bound(begin);
  if (it != entries_.begin() && std::prev(it)->second.end >= end) {
    --it;
    ++stats_.hits;
  } else {
    ++stats_.misses;
    const uintptr_t start = begin & ~(page - 1);
    const uintptr_t stop = (end + page - 1) & ~(page - 1);
    if (!makeRoom(stop - start)) {
      return error(ecclSystemError, fmt::format("RDMA: {} registrations in use at once (limit {})",
                                                entries_.size(), limits_.maxEntries));
    }
    // Source buffers only: the HCA reads them, nobody writes them remotely.
    ibv_mr* mr = device_->api().regMr(device_->pd(), reinterpret_cast<void*>(start), stop - start,
                                      IBV_ACCESS_LOCAL_WRITE);
    if (mr == nullptr) {
      return error(ecclSystemError,
                   fmt::format("RDMA: cannot register {} bytes at {:#x} on {}: {} (locked-memory "
                               "limit? see ulimit -l)", stop - start, start, device_->name(),
                               std::strerror(errno)));
    }
    auto existing = entries_.find(start);
    if (existing != entries_.end()) {  // a shorter one at the same start: replaced
      if (existing->second.pins == 0) {
        drop(existing);
      } else {
        device_->api().deregMr(mr);
        return error(ecclSystemError, "RDMA: a registration in use overlaps a larger one");
      }
    }
    lru_.push_front(start);
    it = entries_.emplace(start, Entry{stop, mr, 0, tag, seq, lru_.begin()}).first;
    stats_.bytes += stop - start;
  }
  Entry& e = it->second;
  ++e.pins;
  e.tag = tag;
  e.seq = seq;
  lru_.splice(lru_.begin(), lru_, e.lru);
  Pin pin;
  pin.cache_ = this;
  pin.entry_ = it->first;
  pin.lkey_ = e.mr->lkey;
  return pin;
}

void RegistrationCache::unpin(uintptr_t start) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(start);
  if (it != entries_.end() && it->second.pins > 0) --it->second.pins;
}

void RegistrationCache::drop(std::map<uintptr_t, Entry>::iterator it) {
  device_->api().deregMr(it->second.mr);
  stats_.bytes -= it->second.end - it->first;
  ++stats_.dropped;
  lru_.erase(it->second.lru);
  entries_.erase(it);
}

bool RegistrationCache::makeRoom(uint64_t bytes) {
  while (entries_.size() >= limits_.maxEntries || stats_.bytes + bytes > limits_.maxBytes) {
    auto victim = std::find_if(lru_.rbegin(), lru_.rend(),
                               [&](uintptr_t start) { return entries_.at(start).pins == 0; });
    // All in use: a frame larger than maxBytes still goes, more entries do not.
    if (victim == lru_.rend()) return entries_.size() < limits_.maxEntries;
    drop(entries_.find(*victim));
  }
  return true;
}

void RegistrationCache::retire(uint32_t tag, uint64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto next = std::next(it);
    if (it->second.pins == 0 && it->second.tag == tag && it->second.seq <= seq) drop(it);
    it = next;
  }
}

RegistrationCache::Stats RegistrationCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s = stats_;
  s.entries = entries_.size();
  return s;
}

}  // namespace eccl::transport::ibverbs
