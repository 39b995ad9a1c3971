#include "transport/ibverbs/registration.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace eccl::transport::ibverbs {

Registrations::Pin& Registrations::Pin::operator=(Pin&& o) noexcept {
  if (this != &o) {
    release();
    owner_ = o.owner_;
    id_ = o.id_;
    lkey_ = o.lkey_;
    o.owner_ = nullptr;
  }
  return *this;
}

void Registrations::Pin::release() {
  if (owner_ != nullptr) owner_->unpin(id_);
  owner_ = nullptr;
}

Registrations::~Registrations() {
  for (Entry& e : entries_) device_->api().deregMr(e.mr);
}

Result<Registrations::Pin> Registrations::pin(const void* p, size_t n) {
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p);
  const uintptr_t end = begin + n;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find_if(entries_.begin(), entries_.end(),
                         [&](const Entry& e) { return e.start <= begin && end <= e.end; });
  if (it != entries_.end()) {
    ++stats_.shared;  // in use by another send right now: its pages are the caller's
  } else {
    const uintptr_t start = begin & ~(page - 1);
    const uintptr_t stop = (end + page - 1) & ~(page - 1);
    if (!entries_.empty() && (entries_.size() >= limits_.maxEntries ||
                              stats_.bytes + (stop - start) > limits_.maxBytes)) {
      return error(ecclSystemError,
                   fmt::format("RDMA: {} registrations ({} bytes) in use at once (limits {}, {})",
                               entries_.size(), stats_.bytes, limits_.maxEntries, limits_.maxBytes));
    }
    // Source buffers only: the HCA reads them. Access 0 lets read-only
    // mappings (an mmap'd checkpoint) register, and leaves copy-on-write pages alone.
    ibv_mr* mr = device_->api().regMr(device_->pd(), reinterpret_cast<void*>(start), stop - start, 0);
    if (mr == nullptr) {
      return error(ecclSystemError,
                   fmt::format("RDMA: cannot register {} bytes at {:#x} on {}: {} (locked-memory "
                               "limit? see ulimit -l)", stop - start, start, device_->name(),
                               std::strerror(errno)));
    }
    entries_.push_back(Entry{nextId_++, start, stop, mr, 0});
    it = std::prev(entries_.end());
    stats_.bytes += stop - start;
    ++stats_.made;
  }
  ++it->pins;
  Pin pin;
  pin.owner_ = this;
  pin.id_ = it->id;
  pin.lkey_ = it->mr->lkey;
  return pin;
}

void Registrations::unpin(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.id == id; });
  if (it == entries_.end() || --it->pins > 0) return;
  device_->api().deregMr(it->mr);
  stats_.bytes -= it->end - it->start;
  entries_.erase(it);
}

Registrations::Stats Registrations::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s = stats_;
  s.entries = entries_.size();
  return s;
}

}  // namespace eccl::transport::ibverbs
