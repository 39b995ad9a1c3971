// cuda_bw: the GPU figures the staging path is judged against (docs/cuda.md).
//
//   cuda_bw [--mib 256] [--iters 20]
//
// Prints, per line, GB/s of: pinned host -> device and device -> pinned host
// copies (what staging moves), device -> device copies (the memory limit the
// kernels run against), and the reduction kernels (src/cuda/kernels.cu) for
// sum on each floating dtype and float32 max, counting the bytes they read and
// write (3 x the buffer), and the codec kernels (src/cuda/codec_kernels.cu)
// encoding float32 and decoding back to it, counting the float32 bytes (so
// comparable with the host codec's figures, docs/codecs.md). Times come from
// CUDA events, median of --iters.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "codec/codec.h"
#include "common/dtype.h"
#include "cuda/codec_kernels.h"
#include "cuda/kernels.h"

namespace {

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  std::fprintf(stderr, "cuda_bw: %s: %s\n", what, cudaGetErrorString(e));
  std::exit(1);
}

// Median seconds of `iters` runs of `body` on `stream`.
double timeIt(int iters, cudaStream_t stream, const std::function<void()>& body) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  body();  // warm-up
  std::vector<double> s;
  for (int i = 0; i < iters; ++i) {
    check(cudaEventRecord(a, stream), "cudaEventRecord");
    body();
    check(cudaEventRecord(b, stream), "cudaEventRecord");
    check(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    s.push_back(ms / 1e3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  size_t mib = 256;
  int iters = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--mib") == 0) mib = std::strtoull(argv[i + 1], nullptr, 10);
    if (std::strcmp(argv[i], "--iters") == 0) iters = std::atoi(argv[i + 1]);
  }
  const size_t bytes = mib << 20;
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("# cuda_bw: %s, %zu MiB buffers, median of %d\n", prop.name, mib, iters);
  void *host = nullptr, *a = nullptr, *b = nullptr, *c = nullptr;
  check(cudaHostAlloc(&host, bytes, cudaHostAllocPortable), "cudaHostAlloc");
  check(cudaMalloc(&a, bytes), "cudaMalloc");
  check(cudaMalloc(&b, bytes), "cudaMalloc");
  check(cudaMalloc(&c, bytes), "cudaMalloc");
  std::memset(host, 1, bytes);
  check(cudaMemset(a, 0, bytes), "cudaMemset");
  check(cudaMemset(b, 0, bytes), "cudaMemset");
  cudaStream_t stream;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  auto row = [&](const std::string& what, double movedBytes, double seconds) {
    std::printf("%-32s %10.1f GB/s\n", what.c_str(), movedBytes / seconds / 1e9);
  };
  row("copy pinned host -> device", static_cast<double>(bytes), timeIt(iters, stream, [&] {
        check(cudaMemcpyAsync(a, host, bytes, cudaMemcpyHostToDevice, stream), "H2D");
      }));
  row("copy device -> pinned host", static_cast<double>(bytes), timeIt(iters, stream, [&] {
        check(cudaMemcpyAsync(host, a, bytes, cudaMemcpyDeviceToHost, stream), "D2H");
      }));
  row("copy device -> device", 2.0 * static_cast<double>(bytes), timeIt(iters, stream, [&] {
        check(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream), "D2D");
      }));
  struct Case {
    ecclDataType_t dtype;
    ecclRedOp_t op;
  };
  for (const Case k : {Case{ecclFloat32, ecclSum}, Case{ecclFloat16, ecclSum},
                       Case{ecclBfloat16, ecclSum}, Case{ecclFloat64, ecclSum},
                       Case{ecclFloat32, ecclMax}, Case{ecclInt32, ecclSum}}) {
    const size_t count = bytes / eccl::dtypeSize(k.dtype);
    const double seconds = timeIt(iters, stream, [&] {
      check(eccl::cuda::launchReduce(k.dtype, k.op, c, a, b, count, stream), "launchReduce");
    });
    row(std::string("reduce ") + eccl::dtypeName(k.dtype) + " " + eccl::opName(k.op),
        3.0 * static_cast<double>(bytes), seconds);
  }
  row("divide float32 (avg)", 2.0 * static_cast<double>(bytes), timeIt(iters, stream, [&] {
        check(eccl::cuda::launchDivide(ecclFloat32, c, bytes / 4, 3, stream), "launchDivide");
      }));
  // Codecs on float32 with the default block: encode a into c (at most half
  // the buffer), decode c into b. Varied input, since constant blocks take
  // a shortcut (no division).
  auto* values = static_cast<float*>(host);
  uint32_t lcg = 1;
  for (size_t i = 0; i < bytes / 4; ++i) {
    lcg = lcg * 1664525u + 1013904223u;
    values[i] = static_cast<float>(static_cast<int32_t>(lcg)) * 0x1p-31f;
  }
  check(cudaMemcpy(a, host, bytes, cudaMemcpyHostToDevice), "H2D");
  struct CodecCase {
    ecclQuantization_t quant;
    ecclRounding_t rounding;
  };
  for (const CodecCase k : {CodecCase{ecclQuantBfloat16, ecclRoundNearest},
                            CodecCase{ecclQuantFloat16, ecclRoundNearest},
                            CodecCase{ecclQuantUint8, ecclRoundNearest},
                            CodecCase{ecclQuantUint8, ecclRoundStochastic},
                            CodecCase{ecclQuantUint4, ecclRoundNearest}}) {
    const bool blocked = k.quant == ecclQuantUint8 || k.quant == ecclQuantUint4;
    const eccl::codec::Params p{ecclFloat32, k.rounding,
                                blocked ? eccl::codec::kDefaultBlockElems : 0};
    const size_t count = bytes / 4;
    auto* encoded = static_cast<std::byte*>(c);
    const std::string name = std::string(eccl::quantName(k.quant)) +
                             (k.rounding == ecclRoundStochastic ? " stochastic" : "");
    row("encode float32 " + name, static_cast<double>(bytes), timeIt(iters, stream, [&] {
          check(eccl::cuda::launchEncode(k.quant, p, a, count, encoded, 7, stream),
                "launchEncode");
        }));
    if (k.rounding == ecclRoundStochastic) continue;  // decoding does not depend on it
    row("decode float32 " + name, static_cast<double>(bytes), timeIt(iters, stream, [&] {
          check(eccl::cuda::launchDecode(k.quant, p, encoded, count, b, stream), "launchDecode");
        }));
    row("decodeAdd float32 " + name, static_cast<double>(bytes), timeIt(iters, stream, [&] {
          check(eccl::cuda::launchDecodeAdd(k.quant, p, encoded, count, b, b, stream),
                "launchDecodeAdd");
        }));
  }
  cudaStreamDestroy(stream);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  cudaFreeHost(host);
  return 0;
}
