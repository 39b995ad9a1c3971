// Device memory behind one interface, so the core never links CUDA.
//
// The core (libeccl) stages ecclMemCuda buffers through pinned host memory
// using only this interface. Two implementations:
//  - the CUDA runtime, in the plugin libeccl_cuda (src/cuda/cuda_device.cc),
//    loaded with dlopen on the first ecclMemCuda op: a build or a machine
//    without CUDA keeps working and reports ecclUnsupported with the reason;
//  - host memory with copies run by one thread per stream
//    (tests/support/host_device.h), which tests install to run the same
//    staging code without a GPU.
//
// Streams and events are opaque handles (cudaStream_t and cudaEvent_t for
// CUDA). Calls that enqueue (copy, reduce, record, wait) return at once; the
// work runs in stream order. Every method is thread-safe. Errors come back as
// Status (ecclSystemError with the runtime's own error name), never thrown.
//
// Current device: CUDA binds streams, events and copies to the calling
// thread's current device. Callers first make the buffer's device current with
// useDeviceOf(); stream and event handles then belong to that device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "codec/codec.h"
#include "common/status.h"
#include "eccl/eccl.h"

namespace eccl::cuda {

using Stream = void*;
using Event = void*;

class Device {
 public:
  virtual ~Device() = default;

  // "CUDA 13.0 runtime, driver 13.0, 1 device" or "host memory (test device)".
  virtual std::string describe() const = 0;

  // The index of the device that [p, p + bytes) lives on, or -1 for host
  // memory (pageable or pinned): such a buffer cannot be staged.
  virtual Result<int> deviceOf(const void* p, size_t bytes) = 0;
  // The calling thread's current device, and making another one current.
  virtual Result<int> currentDevice() = 0;
  virtual Status useDevice(int device) = 0;

  // A stream that does not synchronize with the legacy default stream.
  virtual Result<Stream> createStream() = 0;
  virtual void destroyStream(Stream stream) = 0;
  virtual Result<Event> createEvent() = 0;  // without timing
  virtual void destroyEvent(Event event) = 0;

  // Marks the point in `stream` that synchronize(event) and wait(_, event)
  // wait for: the work enqueued on it before this call. A null stream is the
  // current device's default stream.
  virtual Status record(Event event, Stream stream) = 0;
  // Work enqueued on `stream` after this call starts after `event`'s point.
  virtual Status wait(Stream stream, Event event) = 0;
  // Blocks the calling thread until `event`'s point was reached.
  virtual Status synchronize(Event event) = 0;
  // Whether `event`'s point was reached; never blocks.
  virtual Result<bool> query(Event event) = 0;

  // Enqueues a copy of `bytes` between any two of device memory and pinned
  // host memory (the direction is inferred from the pointers).
  virtual Status copy(void* dst, const void* src, size_t bytes, Stream stream) = 0;

  // Memory of the current device (scratch space of the NCCL backend).
  virtual Result<void*> allocDevice(size_t bytes) = 0;
  virtual void freeDevice(void* p) = 0;

  // Page-locked host memory, which device copies can run from asynchronously.
  virtual Result<void*> allocPinned(size_t bytes) = 0;
  virtual void freePinned(void* p) = 0;

  // dst[i] = a[i] OP b[i] on the device, bit for bit what reduce::reduce
  // gives on the host, and the ecclAvg division of reduce::divide.
  virtual Status reduce(ecclDataType_t dtype, ecclRedOp_t op, void* dst, const void* a,
                        const void* b, size_t count, Stream stream) = 0;
  virtual Status divide(ecclDataType_t dtype, void* data, size_t count, uint64_t divisor,
                        Stream stream) = 0;

  // The payload codecs (codec/codec.h) on the device: byte for byte and bit
  // for bit what the host codec `q` gives.
  virtual Status encode(ecclQuantization_t q, const codec::Params& p, const void* src,
                        size_t count, std::byte* out, uint64_t seed, Stream stream) = 0;
  virtual Status decode(ecclQuantization_t q, const codec::Params& p, const std::byte* in,
                        size_t count, void* out, Stream stream) = 0;
  virtual Status decodeAdd(ecclQuantization_t q, const codec::Params& p, const std::byte* in,
                           size_t count, const void* addend, void* out, Stream stream) = 0;
};

// The device ecclMemCuda buffers go through: the test device when one is
// installed, else the CUDA plugin, loaded on first use (it then stays loaded).
// ecclUnsupported, saying why, when this build has no CUDA, the plugin cannot
// be loaded, or the machine has no CUDA device.
Result<Device*> device();

// Installs a device in place of CUDA for this process (tests); nullptr
// uninstalls it. Not while ops with device buffers run.
void setDeviceForTesting(Device* device);

// Copies `bytes` on `device`'s legacy default stream (so after the work of
// the device's blocking streams) and waits for it; the calling thread's
// current device is the same afterwards.
Status copyAndWait(Device& dev, int device, void* dst, const void* src, size_t bytes);

// The plugin's entry point, extern "C" so dlsym finds it by name. The core
// passes kPluginAbi; a plugin of another ABI returns null and says why.
inline constexpr int kPluginAbi = 1;
using PluginEntry = Device* (*)(int abi, std::string* whyNot);
inline constexpr const char* kPluginEntryName = "ecclCudaPluginDevice";

}  // namespace eccl::cuda
