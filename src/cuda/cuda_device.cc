// The CUDA runtime behind cuda::Device: the body of the plugin libeccl_cuda,
// which the core loads on the first ecclMemCuda op (cuda/device.cc). It links
// the CUDA runtime statically, so it needs only the driver (libcuda) at run
// time, and a machine without one gets a reason instead of a failed load of
// libeccl itself.
#include <cuda_runtime.h>
#include <fmt/format.h>

#include "cuda/device.h"
#include "cuda/codec_kernels.h"
#include "cuda/kernels.h"

namespace eccl::cuda {
namespace {

Status check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::ok();
  return error(ecclSystemError,
               fmt::format("{}: {} ({})", what, cudaGetErrorName(e), cudaGetErrorString(e)));
}

cudaStream_t toStream(Stream s) { return static_cast<cudaStream_t>(s); }
cudaEvent_t toEvent(Event e) { return static_cast<cudaEvent_t>(e); }

class CudaDevice final : public Device {
 public:
  explicit CudaDevice(int devices) : devices_(devices) {}

  std::string describe() const override {
    int runtime = 0, driver = 0;
    cudaRuntimeGetVersion(&runtime);
    cudaDriverGetVersion(&driver);
    return fmt::format("CUDA runtime {}.{}, driver {}.{}, {} device(s)", runtime / 1000,
                       runtime % 1000 / 10, driver / 1000, driver % 1000 / 10, devices_);
  }

  Result<int> deviceOf(const void* p, size_t /*bytes*/) override {
    cudaPointerAttributes attr{};
    const cudaError_t e = cudaPointerGetAttributes(&attr, p);
    if (e == cudaErrorInvalidValue) {  // memory CUDA never saw: plain host memory
      cudaGetLastError();             // not sticky, but clear it for the next call's check
      return -1;
    }
    ECCL_RETURN_IF_ERROR(check(e, "cudaPointerGetAttributes"));
    if (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged) return attr.device;
    return -1;
  }

  Result<int> currentDevice() override {
    int d = 0;
    ECCL_RETURN_IF_ERROR(check(cudaGetDevice(&d), "cudaGetDevice"));
    return d;
  }
  Status useDevice(int device) override { return check(cudaSetDevice(device), "cudaSetDevice"); }

  Result<Stream> createStream() override {
    cudaStream_t s = nullptr;
    ECCL_RETURN_IF_ERROR(check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking),
                               "cudaStreamCreateWithFlags"));
    return static_cast<Stream>(s);
  }
  void destroyStream(Stream stream) override { cudaStreamDestroy(toStream(stream)); }

  Result<Event> createEvent() override {
    cudaEvent_t e = nullptr;
    // Blocking sync: a thread waiting for a copy sleeps instead of spinning on
    // a core the network threads need.
    ECCL_RETURN_IF_ERROR(check(
        cudaEventCreateWithFlags(&e, cudaEventDisableTiming | cudaEventBlockingSync),
        "cudaEventCreateWithFlags"));
    return static_cast<Event>(e);
  }
  void destroyEvent(Event event) override { cudaEventDestroy(toEvent(event)); }

  Status record(Event event, Stream stream) override {
    return check(cudaEventRecord(toEvent(event), toStream(stream)), "cudaEventRecord");
  }
  Status wait(Stream stream, Event event) override {
    return check(cudaStreamWaitEvent(toStream(stream), toEvent(event), 0), "cudaStreamWaitEvent");
  }
  Status synchronize(Event event) override {
    return check(cudaEventSynchronize(toEvent(event)), "cudaEventSynchronize");
  }

  Result<bool> query(Event event) override {
    const cudaError_t e = cudaEventQuery(toEvent(event));
    if (e == cudaErrorNotReady) return false;
    ECCL_RETURN_IF_ERROR(check(e, "cudaEventQuery"));
    return true;
  }

  Result<void*> allocDevice(size_t bytes) override {
    void* p = nullptr;
    ECCL_RETURN_IF_ERROR(check(cudaMalloc(&p, bytes), "cudaMalloc"));
    return p;
  }
  void freeDevice(void* p) override { cudaFree(p); }

  Status copy(void* dst, const void* src, size_t bytes, Stream stream) override {
    return check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, toStream(stream)),
                 "cudaMemcpyAsync");
  }

  Result<void*> allocPinned(size_t bytes) override {
    void* p = nullptr;
    // Portable: usable with every device, whichever is current.
    ECCL_RETURN_IF_ERROR(check(cudaHostAlloc(&p, bytes, cudaHostAllocPortable), "cudaHostAlloc"));
    return p;
  }
  void freePinned(void* p) override { cudaFreeHost(p); }

  Status reduce(ecclDataType_t dtype, ecclRedOp_t op, void* dst, const void* a, const void* b,
                size_t count, Stream stream) override {
    return check(launchReduce(dtype, op, dst, a, b, count, toStream(stream)), "reduce kernel");
  }
  Status divide(ecclDataType_t dtype, void* data, size_t count, uint64_t divisor,
                Stream stream) override {
    return check(launchDivide(dtype, data, count, divisor, toStream(stream)), "divide kernel");
  }

  Status encode(ecclQuantization_t q, const codec::Params& p, const void* src, size_t count,
                std::byte* out, uint64_t seed, Stream stream) override {
    return check(launchEncode(q, p, src, count, out, seed, toStream(stream)), "encode kernel");
  }
  Status decode(ecclQuantization_t q, const codec::Params& p, const std::byte* in, size_t count,
                void* out, Stream stream) override {
    return check(launchDecode(q, p, in, count, out, toStream(stream)), "decode kernel");
  }
  Status decodeAdd(ecclQuantization_t q, const codec::Params& p, const std::byte* in,
                   size_t count, const void* addend, void* out, Stream stream) override {
    return check(launchDecodeAdd(q, p, in, count, addend, out, toStream(stream)),
                 "decode-add kernel");
  }

 private:
  int devices_;
};

}  // namespace
}  // namespace eccl::cuda

extern "C" __attribute__((visibility("default"))) eccl::cuda::Device* ecclCudaPluginDevice(
    int abi, std::string* whyNot) {
  using eccl::cuda::CudaDevice;
  if (abi != eccl::cuda::kPluginAbi) {
    *whyNot = fmt::format("the CUDA plugin has interface version {}, libeccl wants {}",
                          eccl::cuda::kPluginAbi, abi);
    return nullptr;
  }
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    *whyNot = e != cudaSuccess ? fmt::format("no usable CUDA device: cudaGetDeviceCount: {} ({})",
                                             cudaGetErrorName(e), cudaGetErrorString(e))
                               : std::string("no CUDA device on this machine");
    return nullptr;
  }
  static CudaDevice device(devices);  // lives as long as the process
  return &device;
}
