// BufferPool: recycles payload buffers of received frames. Frames are up to a
// segment long (1 MiB by default); allocating each one fresh costs page
// faults on every frame, which shows at tens of GB per second.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

namespace eccl::transport {

class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  class Handle {
   public:
    Handle() = default;
    Handle(std::shared_ptr<BufferPool> pool, std::vector<std::byte> buf, size_t size)
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
    std::vector<std::byte> buf_;
    size_t size_ = 0;
  };

  static std::shared_ptr<BufferPool> create() { return std::shared_ptr<BufferPool>(new BufferPool()); }

  Handle get(size_t size) {
    std::vector<std::byte> buf;
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
  BufferPool() = default;
  void put(std::vector<std::byte> buf) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < kMaxFree) free_.push_back(std::move(buf));
  }
  static constexpr size_t kMaxFree = 64;
  std::mutex mu_;
  std::vector<std::vector<std::byte>> free_;
};

}  // namespace eccl::transport
