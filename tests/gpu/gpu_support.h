// Shared by the GPU tests: why this machine cannot run them, a fixture that
// skips with that reason (and owns a stream), and a device buffer.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <string>

namespace eccl::test {

// Why this machine cannot run the GPU tests; empty when it can.
inline std::string noGpuReason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    return std::string("no CUDA device: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
  }
  return n == 0 ? "no CUDA device: cudaGetDeviceCount found none" : "";
}

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = noGpuReason();
    if (!why.empty()) GTEST_SKIP() << why;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess);
  }
  void TearDown() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  cudaStream_t stream_ = nullptr;
};

// `bytes` of device memory (plus one, so that 0 bytes is a valid buffer).
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) { EXPECT_EQ(cudaMalloc(&p_, bytes + 1), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  std::byte* get() const { return static_cast<std::byte*>(p_); }

 private:
  void* p_ = nullptr;
};

}  // namespace eccl::test
