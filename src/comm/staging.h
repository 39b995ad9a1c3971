// Staging: how a collective on device buffers (ecclMemCuda) runs over a host
// transport. The op runs on a pinned host copy of the buffer; the device
// buffer itself is written only once the master's verdict is success.
//
// Per op:
//  1. At submission, on the caller's thread: both buffers must be memory of
//     one device; an event marks the caller's stream (opts.cudaStream), so the
//     op reads the input only after the work enqueued there before the call.
//  2. On the worker: the input is copied to the pinned buffer in segments on
//     the tag's own stream, an event after each; the ring waits for the
//     segment it is about to read (awaitInput), so copying overlaps with the
//     first sends instead of preceding them. A broadcast copies in at the
//     root only.
//  3. Success: the result is copied back into recvbuf and waited for, so
//     when the op completes it is in device memory, visible to every stream
//     and to the host. Failure: the device buffer never held a partial
//     result; an out-of-place all-reduce copies sendbuf into recvbuf (the
//     host contract: recvbuf holds the input).
// All or nothing thus costs no backup copy: the device buffer is the backup.
//
// The pinned buffer, stream and events belong to the tag (StagingArea) and
// are reused by its next ops: pinning memory costs far more than copying it.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "collectives/ring.h"
#include "comm/request.h"
#include "cuda/device.h"

namespace eccl::comm {

// One tag's staging resources, grown on demand, freed with the communicator.
class StagingArea {
 public:
  StagingArea() = default;
  StagingArea(const StagingArea&) = delete;
  StagingArea& operator=(const StagingArea&) = delete;
  ~StagingArea() { release(); }

  // The pinned buffer alone, of at least `bytes` (shared-state mirrors).
  Result<void*> hostBuffer(cuda::Device* dev, size_t bytes);

  // Growable buffers of the codec ring on the device (comm/device_ring.h),
  // on the area's device; freed with the area.
  struct Block {
    void* p = nullptr;
    size_t bytes = 0;
    bool pinned = false;  // else device memory
  };
  Result<void*> grow(Block& block, size_t bytes);
  Block encodedOut{nullptr, 0, false}, encodedIn{nullptr, 0, false};
  Block hostOut{nullptr, 0, true}, hostIn{nullptr, 0, true};
  Block scratch{nullptr, 0, false}, backup{nullptr, 0, false};
  cuda::Stream stream() const { return stream_; }
  cuda::Event lastEvent() const { return events_.back(); }

 private:
  friend class Staging;
  // Ready for `bytes` in `segments` segments on `deviceIndex` (current on
  // the calling thread).
  Status prepare(cuda::Device* dev, int deviceIndex, size_t bytes, size_t segments);
  void release();

  cuda::Device* dev_ = nullptr;
  int device_ = -1;
  cuda::Stream stream_ = nullptr;
  void* pinned_ = nullptr;
  size_t capacity_ = 0;
  std::vector<cuda::Event> events_;  // one per segment in flight, then the last is "done"
};

class Staging {
 public:
  // Step 1. ecclInvalidArgument when a buffer is not device memory (or the
  // two are on different devices); ecclUnsupported without CUDA.
  static Result<std::unique_ptr<Staging>> begin(const OpArgs& device, void* userStream);
  ~Staging();

  // Step 2: starts the copy-in into `area` and returns the op's arguments
  // with the pinned buffer in place of the device buffers. `root`: whether
  // this member is a broadcast's root.
  Result<OpArgs> start(StagingArea& area, bool root);
  // Instead of start(), for a codec op: the ring works on the device
  // buffers themselves through the returned store (comm/device_ring.h), with
  // `area`'s buffers. `changes`: whether this member's buffer takes new
  // bytes; an in-place one is first backed up on the device, for restore().
  // Run the ring inside withDevice().
  Result<collectives::ElementStore*> startOnDevice(StagingArea& area, const codec::Params& params,
                                                   bool changes);

  // The input's bytes [offset, offset + len) are in the pinned buffer.
  Status awaitInput(size_t offset, size_t len);
  Status awaitAll() { return awaitInput(0, bytes_); }

  // Step 3: the op succeeded; `changed`: whether this member's buffer holds
  // new bytes (not a broadcast root without a codec).
  Status commit(bool changed);
  // The op failed or never ran: the device recvbuf holds the input.
  Status restore();
  // A world of one: recvbuf = sendbuf on the device.
  Status copyThrough() { return restore(); }

  // For a backend that reads the device buffers itself (NCCL): the buffers'
  // device, made current while `body` runs, and the caller's stream event.
  Status withDevice(const std::function<Status()>& body);
  int deviceIndex() const { return device_; }
  cuda::Event ready() const { return ready_; }
  cuda::Device& device() const { return *dev_; }

 private:
  Staging(cuda::Device* dev, const OpArgs& args, int deviceIndex)
      : dev_(dev), args_(args), device_(deviceIndex) {}
  // Runs `body` with this op's device current on the calling thread, then
  // makes the previous one current again.
  template <typename F>
  Status onDevice(F&& body);
  Status blockingCopy(void* dst, const void* src, size_t bytes);

  cuda::Device* dev_;
  OpArgs args_;  // the caller's, with device pointers
  int device_;
  size_t bytes_ = 0;
  cuda::Event ready_ = nullptr;  // the caller's stream at submission
  StagingArea* area_ = nullptr;  // from start()
  size_t segmentBytes_ = 0;
  size_t segmentsReady_ = 0;  // copy-in segments known to be done
  std::unique_ptr<collectives::ElementStore> elements_;  // startOnDevice()
  bool backedUp_ = false;  // recvbuf's input is in area_->backup
};

}  // namespace eccl::comm
