// A cuda::Device made of host memory, for running the staging code of
// ecclMemCuda ops without a GPU.
//
// "Device memory" is what allocate() hands out; other memory is host memory
// to it, as to CUDA. Each stream is a thread running its work in order, so
// copies really are asynchronous, and an optional delay before every copy
// makes a missing wait show up as wrong results, not as luck. Copies check
// CUDA's rule that a pointer on the host side of a device copy is pinned.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "cuda/device.h"

namespace eccl::test {

class HostDevice : public cuda::Device {
 public:
  HostDevice();
  ~HostDevice() override;

  // "Device" memory, as cudaMalloc would give (64-byte aligned).
  void* allocate(size_t bytes);
  void release(void* p);
  // Runs `work` on `stream` in order with its copies (a stand-in kernel).
  void enqueue(cuda::Stream stream, std::function<void()> work);
  // Every copy waits this long before it runs.
  void setCopyDelay(std::chrono::microseconds delay) { copyDelayUs_ = delay.count(); }
  // Copies and reductions run so far (host to device, device to host, other).
  struct Counts {
    uint64_t toDevice = 0, toHost = 0, deviceToDevice = 0;
    uint64_t bytesToDevice = 0, bytesToHost = 0;  // what crossed "PCIe"
  };
  Counts counts() const;
  // Pinned blocks still allocated (a leak check).
  size_t pinnedBlocks() const;

  std::string describe() const override { return "host memory (test device)"; }
  Result<int> deviceOf(const void* p, size_t bytes) override;
  Result<int> currentDevice() override { return 0; }
  Status useDevice(int device) override;
  Result<cuda::Stream> createStream() override;
  void destroyStream(cuda::Stream stream) override;
  Result<cuda::Event> createEvent() override;
  void destroyEvent(cuda::Event event) override;
  Status record(cuda::Event event, cuda::Stream stream) override;
  Status wait(cuda::Stream stream, cuda::Event event) override;
  Status synchronize(cuda::Event event) override;
  Result<bool> query(cuda::Event event) override;
  Result<void*> allocDevice(size_t bytes) override { return allocate(bytes); }
  void freeDevice(void* p) override { release(p); }
  Status copy(void* dst, const void* src, size_t bytes, cuda::Stream stream) override;
  Result<void*> allocPinned(size_t bytes) override;
  void freePinned(void* p) override;
  Status reduce(ecclDataType_t dtype, ecclRedOp_t op, void* dst, const void* a, const void* b,
                size_t count, cuda::Stream stream) override;
  Status divide(ecclDataType_t dtype, void* data, size_t count, uint64_t divisor,
                cuda::Stream stream) override;
  // The host codecs, run on the stream (so in stream order, like kernels).
  Status encode(ecclQuantization_t q, const codec::Params& p, const void* src, size_t count,
                std::byte* out, uint64_t seed, cuda::Stream stream) override;
  Status decode(ecclQuantization_t q, const codec::Params& p, const std::byte* in, size_t count,
                void* out, cuda::Stream stream) override;
  Status decodeAdd(ecclQuantization_t q, const codec::Params& p, const std::byte* in,
                   size_t count, const void* addend, void* out, cuda::Stream stream) override;
  // Codec calls so far (a test's proof that the elements stayed on the device).
  uint64_t codecCalls() const { return codecCalls_.load(); }

  class Worker;  // one stream
  struct Marker;  // one event

 private:
  enum class Kind { kDevice, kPinned, kNone };
  Kind kindOf(const void* p, size_t bytes) const;
  Worker* streamOf(cuda::Stream stream);
  std::shared_ptr<Marker> markerOf(cuda::Event event);

  mutable std::mutex mu_;
  std::map<const std::byte*, size_t> device_, pinned_;  // start -> bytes
  std::map<Marker*, std::shared_ptr<Marker>> markers_;     // live events
  Counts counts_;
  std::unique_ptr<Worker> default_;
  std::atomic<int64_t> copyDelayUs_{0};
  std::atomic<uint64_t> codecCalls_{0};
};

}  // namespace eccl::test
