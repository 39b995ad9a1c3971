#include "comm/staging.h"

#include <fmt/format.h>

#include <algorithm>

#include "comm/device_ring.h"
#include "common/dtype.h"

namespace eccl::comm {
namespace {

// Copy-in segments: at least 4 MiB (a copy that small is already at full
// PCIe speed) and at most 32 of them (an event each).
constexpr size_t kMinSegmentBytes = 4u << 20;
constexpr size_t kMaxSegments = 32;

const char* bufferName(const OpArgs& a, bool send) {
  if (a.kind == wire::OpKind::kBroadcast) return "buf";
  return send ? "sendbuf" : "recvbuf";
}

}  // namespace

Result<void*> StagingArea::hostBuffer(cuda::Device* dev, size_t bytes) {
  if (dev_ != nullptr && dev_ != dev) release();
  dev_ = dev;
  if (capacity_ < bytes) {
    if (pinned_ != nullptr) dev->freePinned(pinned_);
    pinned_ = nullptr;
    capacity_ = 0;
    Result<void*> p = dev->allocPinned(bytes);
    if (!p) return p.status();
    pinned_ = *p;
    capacity_ = bytes;
  }
  return pinned_;
}

Status StagingArea::prepare(cuda::Device* dev, int deviceIndex, size_t bytes, size_t segments) {
  if (dev_ != nullptr && (dev_ != dev || device_ != deviceIndex)) release();
  device_ = deviceIndex;
  Result<void*> pinned = hostBuffer(dev, bytes);
  if (!pinned) return pinned.status();
  if (stream_ == nullptr) {
    Result<cuda::Stream> s = dev->createStream();
    if (!s) return s.status();
    stream_ = *s;
  }
  while (events_.size() < segments + 1) {  // + the copy-out's
    Result<cuda::Event> e = dev->createEvent();
    if (!e) return e.status();
    events_.push_back(*e);
  }
  return Status::ok();
}

Result<void*> StagingArea::grow(Block& block, size_t bytes) {
  if (block.bytes >= bytes && block.p != nullptr) return block.p;
  if (block.p != nullptr) block.pinned ? dev_->freePinned(block.p) : dev_->freeDevice(block.p);
  block.p = nullptr;
  block.bytes = 0;
  Result<void*> p = block.pinned ? dev_->allocPinned(bytes) : dev_->allocDevice(bytes);
  if (!p) return p;
  block.p = *p;
  block.bytes = bytes;
  return p;
}

void StagingArea::release() {
  if (dev_ == nullptr) return;
  for (Block* b : {&encodedOut, &encodedIn, &hostOut, &hostIn, &scratch, &backup}) {
    if (b->p != nullptr) b->pinned ? dev_->freePinned(b->p) : dev_->freeDevice(b->p);
    b->p = nullptr;
    b->bytes = 0;
  }
  for (cuda::Event e : events_) dev_->destroyEvent(e);
  events_.clear();
  if (stream_ != nullptr) dev_->destroyStream(stream_);
  stream_ = nullptr;
  if (pinned_ != nullptr) dev_->freePinned(pinned_);
  pinned_ = nullptr;
  capacity_ = 0;
  dev_ = nullptr;
}

Result<std::unique_ptr<Staging>> Staging::begin(const OpArgs& a, void* userStream) {
  Result<cuda::Device*> found = cuda::device();
  if (!found) return found.status();
  cuda::Device* dev = *found;
  const size_t bytes = a.count * dtypeSize(a.dtype);
  int index = -1;
  if (bytes > 0) {
    for (const bool send : {true, false}) {
      const void* p = send ? a.sendbuf : a.recvbuf;
      Result<int> d = dev->deviceOf(p, bytes);
      if (!d) return d.status();
      if (*d < 0) {
        return error(ecclInvalidArgument,
                     fmt::format("opts.memType is ecclMemCuda but {} ({}) is host memory: use "
                                 "ecclMemHost for it", bufferName(a, send), p));
      }
      if (index >= 0 && *d != index) {
        return error(ecclInvalidArgument,
                     fmt::format("sendbuf is on CUDA device {} and recvbuf on device {}: both "
                                 "must be on one device", index, *d));
      }
      index = *d;
    }
  }
  std::unique_ptr<Staging> st(new Staging(dev, a, index));
  st->bytes_ = bytes;
  if (bytes == 0) return st;  // nothing to read or write
  ECCL_RETURN_IF_ERROR(st->onDevice([&]() -> Status {
    Result<cuda::Event> e = dev->createEvent();
    if (!e) return e.status();
    st->ready_ = *e;
    return dev->record(st->ready_, userStream);
  }));
  return st;
}

Staging::~Staging() {
  if (ready_ != nullptr) dev_->destroyEvent(ready_);
}

template <typename F>
Status Staging::onDevice(F&& body) {
  if (device_ < 0) return body();  // no bytes: no device to name
  Result<int> previous = dev_->currentDevice();
  if (!previous) return previous.status();
  if (*previous != device_) ECCL_RETURN_IF_ERROR(dev_->useDevice(device_));
  Status st = body();
  if (*previous != device_) {
    Status back = dev_->useDevice(*previous);
    if (st.isOk()) st = std::move(back);
  }
  return st;
}

Status Staging::withDevice(const std::function<Status()>& body) { return onDevice(body); }

Result<OpArgs> Staging::start(StagingArea& area, bool root) {
  OpArgs host = args_;
  if (bytes_ == 0) return host;
  segmentBytes_ = std::max(kMinSegmentBytes, (bytes_ + kMaxSegments - 1) / kMaxSegments);
  const size_t segments = (bytes_ + segmentBytes_ - 1) / segmentBytes_;
  const bool copyIn = args_.kind == wire::OpKind::kAllReduce || root;
  ECCL_RETURN_IF_ERROR(onDevice([&]() -> Status {
    ECCL_RETURN_IF_ERROR(area.prepare(dev_, device_, bytes_, segments));
    area_ = &area;
    // Everything on the tag's stream, the copy back into a receiver's buffer
    // included, comes after the caller's earlier work on the buffers.
    ECCL_RETURN_IF_ERROR(dev_->wait(area.stream_, ready_));
    if (!copyIn) return Status::ok();
    const auto* from = static_cast<const std::byte*>(args_.sendbuf);
    auto* to = static_cast<std::byte*>(area.pinned_);
    for (size_t k = 0; k < segments; ++k) {
      const size_t offset = k * segmentBytes_;
      const size_t len = std::min(segmentBytes_, bytes_ - offset);
      ECCL_RETURN_IF_ERROR(dev_->copy(to + offset, from + offset, len, area.stream_));
      ECCL_RETURN_IF_ERROR(dev_->record(area.events_[k], area.stream_));
    }
    return Status::ok();
  }));
  segmentsReady_ = copyIn ? 0 : segments;  // a receiver reads nothing of its own
  host.sendbuf = area.pinned_;
  host.recvbuf = area.pinned_;
  return host;
}

Result<collectives::ElementStore*> Staging::startOnDevice(StagingArea& area,
                                                          const codec::Params& params,
                                                          bool changes) {
  ECCL_RETURN_IF_ERROR(onDevice([&]() -> Status {
    ECCL_RETURN_IF_ERROR(area.prepare(dev_, device_, 0, 0));
    area_ = &area;
    ECCL_RETURN_IF_ERROR(dev_->wait(area.stream_, ready_));
    // An out-of-place all-reduce gets sendbuf back instead (restore()).
    const bool inPlace = args_.kind != wire::OpKind::kAllReduce || args_.sendbuf == args_.recvbuf;
    if (!changes || !inPlace || bytes_ == 0) return Status::ok();
    Result<void*> backup = area.grow(area.backup, bytes_);
    if (!backup) return backup.status();
    ECCL_RETURN_IF_ERROR(dev_->copy(*backup, args_.recvbuf, bytes_, area.stream_));
    backedUp_ = true;  // (the ring's first device work is queued behind this copy)
    return Status::ok();
  }));
  elements_ = std::make_unique<DeviceElements>(*dev_, area, args_.quant, params);
  return elements_.get();
}

Status Staging::awaitInput(size_t offset, size_t len) {
  if (len == 0 || area_ == nullptr) return Status::ok();
  const size_t last = (offset + len - 1) / segmentBytes_;
  if (last < segmentsReady_) return Status::ok();
  // The stream runs in order: the last segment's event covers the others.
  ECCL_RETURN_IF_ERROR(dev_->synchronize(area_->events_[last]));
  segmentsReady_ = last + 1;
  return Status::ok();
}

Status Staging::commit(bool changed) {
  // (The codec ring wrote the device buffers itself, each step waited for.)
  if (bytes_ == 0 || !changed || elements_) return Status::ok();
  return onDevice([&]() -> Status {
    ECCL_RETURN_IF_ERROR(dev_->copy(args_.recvbuf, area_->pinned_, bytes_, area_->stream_));
    cuda::Event done = area_->events_.back();
    ECCL_RETURN_IF_ERROR(dev_->record(done, area_->stream_));
    return dev_->synchronize(done);
  });
}

Status Staging::restore() {
  const bool outOfPlace = args_.kind == wire::OpKind::kAllReduce && args_.sendbuf != args_.recvbuf;
  if (bytes_ == 0) return Status::ok();
  return onDevice([&]() -> Status {
    // A copy-in the ring did not wait for ends before the op does (the next
    // op may reuse or free the pinned buffer).
    if (area_ != nullptr) {
      cuda::Event drained = area_->events_.back();
      ECCL_RETURN_IF_ERROR(dev_->record(drained, area_->stream_));
      ECCL_RETURN_IF_ERROR(dev_->synchronize(drained));
    }
    if (backedUp_) return blockingCopy(args_.recvbuf, area_->backup.p, bytes_);
    return outOfPlace ? blockingCopy(args_.recvbuf, args_.sendbuf, bytes_) : Status::ok();
  });
}

Status Staging::blockingCopy(void* dst, const void* src, size_t bytes) {
  // Before start() (an op refused at submission) there is no tag stream yet.
  cuda::Stream stream = area_ != nullptr ? area_->stream_ : nullptr;
  cuda::Stream own = nullptr;
  cuda::Event done = nullptr;
  auto cleanup = [&] {
    if (done != nullptr) dev_->destroyEvent(done);
    if (own != nullptr) dev_->destroyStream(own);
  };
  Status st = [&]() -> Status {
    if (stream == nullptr) {
      Result<cuda::Stream> s = dev_->createStream();
      if (!s) return s.status();
      stream = own = *s;
    }
    Result<cuda::Event> e = dev_->createEvent();
    if (!e) return e.status();
    done = *e;
    ECCL_RETURN_IF_ERROR(dev_->wait(stream, ready_));  // the caller's writes to src
    ECCL_RETURN_IF_ERROR(dev_->copy(dst, src, bytes, stream));
    ECCL_RETURN_IF_ERROR(dev_->record(done, stream));
    return dev_->synchronize(done);
  }();
  cleanup();
  return st;
}

}  // namespace eccl::comm
