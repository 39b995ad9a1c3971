// BufferPool: recycles payload buffers of received frames. Frames are up to a
// segment long (1 MiB by default); allocating each one fresh costs page
// faults on every frame, which shows at tens of GB per second. A pool made
// with largePages puts segment-sized buffers on huge pages
// (common/large_pages.h): the shared-memory link's, whose buffers the next
// peer reads with process_vm_readv when the all-gather forwards them.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "common/large_pages.h"

namespace eccl::transport {

class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  class Handle {
   public:
    Handle() = default;
    Handle(std::shared_ptr<BufferPool> pool, LargePageBytes buf, size_t size)
        : pool_(std::move(pool)), buf_(std::move(buf)), size_(size) {}
    Handle(Handle&&) noexcept = default;
    Handle& operator=(Handle&& o) noexcept {
      release();
      pool_ = std::move(o.pool_);
      buf_ = std::move(o.buf_);
      size_ = o.size_;
      return *this;
    }
    ~Handle() { release(); }

    std::byte* data() { return buf_.data(); }
    std::span<const std::byte> span() const { return {buf_.data(), size_}; }
    size_t size() const { return size_; }

   private:
    void release() {
      if (pool_) pool_->put(std::move(buf_));
      pool_.reset();
    }
    std::shared_ptr<BufferPool> pool_;
    LargePageBytes buf_;
    size_t size_ = 0;
  };

  static std::shared_ptr<BufferPool> create(bool largePages = false) {
    return std::shared_ptr<BufferPool>(new BufferPool(largePages));
  }

  Handle get(size_t size) {
    LargePageBytes buf{LargePageAllocator<std::byte>(largePages_)};
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        buf = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (buf.size() < size) buf.resize(size);
    return Handle(shared_from_this(), std::move(buf), size);
  }

 private:
  explicit BufferPool(bool largePages) : largePages_(largePages) {}
  void put(LargePageBytes buf) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < kMaxFree) free_.push_back(std::move(buf));
  }
  static constexpr size_t kMaxFree = 64;
  const bool largePages_;
  std::mutex mu_;
  std::vector<LargePageBytes> free_;
};

}  // namespace eccl::transport
