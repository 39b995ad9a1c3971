#include "host_device.h"

#include <fmt/format.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <thread>

#include "reduce/reduce.h"

namespace eccl::test {

// A stream: one thread running its work in order.
class HostDevice::Worker {
 public:
  Worker() : thread_([this] { run(); }) {}
  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();  // after the queued work: destroying a stream lets it finish
  }
  void enqueue(std::function<void()> work) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(work));
    }
    cv_.notify_all();
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> work;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        work = std::move(queue_.front());
        queue_.pop_front();
      }
      work();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

// An event: how many times it was recorded, and how many of those points
// its stream has passed.
struct HostDevice::Marker {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t recorded = 0, reached = 0;
  void reach(uint64_t point) {
    std::lock_guard<std::mutex> lock(mu);
    reached = std::max(reached, point);
    cv.notify_all();
  }
  void await(uint64_t point) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return reached >= point; });
  }
};

HostDevice::HostDevice() : default_(std::make_unique<Worker>()) {}

HostDevice::~HostDevice() {
  default_.reset();
  for (auto& [p, bytes] : device_) std::free(const_cast<std::byte*>(p));
  for (auto& [p, bytes] : pinned_) std::free(const_cast<std::byte*>(p));
}

void* HostDevice::allocate(size_t bytes) {
  void* p = std::aligned_alloc(64, (std::max<size_t>(bytes, 1) + 63) / 64 * 64);
  std::lock_guard<std::mutex> lock(mu_);
  device_[static_cast<std::byte*>(p)] = bytes;
  return p;
}

void HostDevice::release(void* p) {
  std::lock_guard<std::mutex> lock(mu_);
  device_.erase(static_cast<std::byte*>(p));
  std::free(p);
}

HostDevice::Counts HostDevice::counts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counts_;
}

size_t HostDevice::pinnedBlocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pinned_.size();
}

HostDevice::Kind HostDevice::kindOf(const void* p, size_t bytes) const {
  const auto* b = static_cast<const std::byte*>(p);
  auto inside = [&](const std::map<const std::byte*, size_t>& blocks) {
    auto it = blocks.upper_bound(b);
    if (it == blocks.begin()) return false;
    --it;
    return b + bytes <= it->first + it->second;
  };
  std::lock_guard<std::mutex> lock(mu_);
  if (inside(device_)) return Kind::kDevice;
  if (inside(pinned_)) return Kind::kPinned;
  return Kind::kNone;
}

HostDevice::Worker* HostDevice::streamOf(cuda::Stream stream) {
  return stream != nullptr ? static_cast<Worker*>(stream) : default_.get();
}

Result<int> HostDevice::deviceOf(const void* p, size_t bytes) {
  return kindOf(p, bytes) == Kind::kDevice ? 0 : -1;
}

Status HostDevice::useDevice(int device) {
  if (device == 0) return Status::ok();
  return error(ecclSystemError, fmt::format("test device: no device {}", device));
}

Result<cuda::Stream> HostDevice::createStream() {
  return static_cast<cuda::Stream>(new Worker());
}

void HostDevice::destroyStream(cuda::Stream stream) { delete static_cast<Worker*>(stream); }

Result<cuda::Event> HostDevice::createEvent() {
  auto m = std::make_shared<Marker>();
  std::lock_guard<std::mutex> lock(mu_);
  markers_[m.get()] = m;
  return static_cast<cuda::Event>(m.get());
}

// As CUDA allows, an event may be destroyed while work that records or waits
// for it is still queued: that work holds the marker.
void HostDevice::destroyEvent(cuda::Event event) {
  std::lock_guard<std::mutex> lock(mu_);
  markers_.erase(static_cast<Marker*>(event));
}

std::shared_ptr<HostDevice::Marker> HostDevice::markerOf(cuda::Event event) {
  std::lock_guard<std::mutex> lock(mu_);
  return markers_.at(static_cast<Marker*>(event));
}

Status HostDevice::record(cuda::Event event, cuda::Stream stream) {
  std::shared_ptr<Marker> m = markerOf(event);
  uint64_t point = 0;
  {
    std::lock_guard<std::mutex> lock(m->mu);
    point = ++m->recorded;
  }
  streamOf(stream)->enqueue([m, point] { m->reach(point); });
  return Status::ok();
}

Status HostDevice::wait(cuda::Stream stream, cuda::Event event) {
  std::shared_ptr<Marker> m = markerOf(event);
  uint64_t point = 0;
  {
    std::lock_guard<std::mutex> lock(m->mu);
    point = m->recorded;
  }
  streamOf(stream)->enqueue([m, point] { m->await(point); });
  return Status::ok();
}

Status HostDevice::synchronize(cuda::Event event) {
  std::shared_ptr<Marker> m = markerOf(event);
  uint64_t point = 0;
  {
    std::lock_guard<std::mutex> lock(m->mu);
    point = m->recorded;
  }
  m->await(point);
  return Status::ok();
}

Result<bool> HostDevice::query(cuda::Event event) {
  std::shared_ptr<Marker> m = markerOf(event);
  std::lock_guard<std::mutex> lock(m->mu);
  return m->reached >= m->recorded;
}

void HostDevice::enqueue(cuda::Stream stream, std::function<void()> work) {
  streamOf(stream)->enqueue(std::move(work));
}

Status HostDevice::copy(void* dst, const void* src, size_t bytes, cuda::Stream stream) {
  const Kind to = kindOf(dst, bytes), from = kindOf(src, bytes);
  if (to == Kind::kNone || from == Kind::kNone) {
    return error(ecclSystemError, fmt::format("test device: an asynchronous copy of {} bytes "
                                              "from {} to {} involves pageable host memory",
                                              bytes, src, dst));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (to == Kind::kDevice && from == Kind::kDevice) {
      ++counts_.deviceToDevice;
    } else if (to == Kind::kDevice) {
      ++counts_.toDevice;
      counts_.bytesToDevice += bytes;
    } else if (from == Kind::kDevice) {
      ++counts_.toHost;
      counts_.bytesToHost += bytes;
    }
  }
  const auto delay = std::chrono::microseconds(copyDelayUs_.load());
  streamOf(stream)->enqueue([dst, src, bytes, delay] {
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    std::memcpy(dst, src, bytes);
  });
  return Status::ok();
}

Result<void*> HostDevice::allocPinned(size_t bytes) {
  void* p = std::aligned_alloc(64, (std::max<size_t>(bytes, 1) + 63) / 64 * 64);
  if (p == nullptr) return error(ecclSystemError, "test device: out of memory");
  std::lock_guard<std::mutex> lock(mu_);
  pinned_[static_cast<std::byte*>(p)] = bytes;
  return p;
}

void HostDevice::freePinned(void* p) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pinned_.erase(static_cast<std::byte*>(p));
  }
  std::free(p);
}

Status HostDevice::reduce(ecclDataType_t dtype, ecclRedOp_t op, void* dst, const void* a,
                          const void* b, size_t count, cuda::Stream stream) {
  streamOf(stream)->enqueue([=] { (void)reduce::reduce(dtype, op, dst, a, b, count); });
  return Status::ok();
}

Status HostDevice::divide(ecclDataType_t dtype, void* data, size_t count, uint64_t divisor,
                          cuda::Stream stream) {
  streamOf(stream)->enqueue([=] { (void)reduce::divide(dtype, data, count, divisor); });
  return Status::ok();
}

}  // namespace eccl::test

namespace eccl::test {

Status HostDevice::encode(ecclQuantization_t q, const codec::Params& p, const void* src,
                          size_t count, std::byte* out, uint64_t seed, cuda::Stream stream) {
  const codec::Codec* c = codec::find(q);
  if (c == nullptr) return error(ecclInvalidArgument, "test device: no such codec");
  ++codecCalls_;
  streamOf(stream)->enqueue([=] { c->encode(p, src, count, out, seed); });
  return Status::ok();
}

Status HostDevice::decode(ecclQuantization_t q, const codec::Params& p, const std::byte* in,
                          size_t count, void* out, cuda::Stream stream) {
  const codec::Codec* c = codec::find(q);
  if (c == nullptr) return error(ecclInvalidArgument, "test device: no such codec");
  ++codecCalls_;
  streamOf(stream)->enqueue([=] { c->decode(p, in, count, out); });
  return Status::ok();
}

Status HostDevice::decodeAdd(ecclQuantization_t q, const codec::Params& p, const std::byte* in,
                             size_t count, const void* addend, void* out, cuda::Stream stream) {
  const codec::Codec* c = codec::find(q);
  if (c == nullptr) return error(ecclInvalidArgument, "test device: no such codec");
  ++codecCalls_;
  streamOf(stream)->enqueue([=] { c->decodeAdd(p, in, count, addend, out); });
  return Status::ok();
}

}  // namespace eccl::test
