// ecclMemCuda collectives through the real plugin (libeccl_cuda) on a GPU:
// device members next to a host member of the same group, identical bits.
// Peers are threads of this process (one GPU, one context); CTest runs this
// with ECCL_SHM=0 (the default here), so the bytes cross loopback TCP. Without a GPU every test
// but the first skips with the reason.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "gpu/gpu_support.h"
#include "support/peers.h"
#include "support/reference.h"
#include "transport/transport.h"

namespace eccl::test {
namespace {

// The build's plugin (this binary links the core statically, so it would look
// next to itself), and loopback TCP rather than shared memory; the
// environment may say otherwise.
const bool kEnvironment = [] {
  setenv("ECCL_CUDA_PLUGIN", ECCL_TEST_CUDA_PLUGIN, 0);
  setenv("ECCL_SHM", "0", 0);
  return true;
}();

// Runs everywhere: the plugin is found and loads; without a GPU the op is
// ecclUnsupported and says why (not that the plugin is missing).
TEST(CudaPlugin, LoadsAndRunsOrSaysWhy) {
  const std::string why = noGpuReason();
  spawnPeers(1, [&](ecclComm_t comm) {
    float host[4] = {1, 2, 3, 4};
    void* p = host;
    if (why.empty()) {
      ASSERT_EQ(cudaMalloc(&p, sizeof host), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(p, host, sizeof host, cudaMemcpyDefault), cudaSuccess);
    }
    ecclOpOptions_t opts = ECCL_OP_OPTIONS_INIT;
    opts.memType = ecclMemCuda;
    const ecclResult_t rc = ecclAllReduce(p, p, 4, ecclFloat32, ecclSum, &opts, comm, nullptr);
    const std::string msg = ecclGetLastError(comm);
    if (why.empty()) {
      EXPECT_EQ(rc, ecclSuccess) << msg;
      cudaFree(p);
    } else {
      EXPECT_EQ(rc, ecclUnsupported);
      EXPECT_EQ(msg.find("could not be loaded"), std::string::npos) << msg;
      EXPECT_NE(msg.find("CUDA device"), std::string::npos) << msg;
    }
  });
}

using CudaCollectives = GpuTest;

// A device copy of host bytes, freed at scope exit.
class Device {
 public:
  explicit Device(const std::vector<std::byte>& bytes) : n_(bytes.size()) {
    EXPECT_EQ(cudaMalloc(&p_, std::max<size_t>(n_, 1)), cudaSuccess);
    if (n_ > 0) {
      EXPECT_EQ(cudaMemcpy(p_, bytes.data(), n_, cudaMemcpyDefault), cudaSuccess);
    }
  }
  ~Device() { cudaFree(p_); }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  void* get() const { return p_; }
  std::vector<std::byte> bytes() const {
    std::vector<std::byte> out(n_);
    if (n_ > 0) {
      EXPECT_EQ(cudaMemcpy(out.data(), p_, n_, cudaMemcpyDefault), cudaSuccess);
    }
    return out;
  }

 private:
  void* p_ = nullptr;
  size_t n_;
};

ecclOpOptions_t cudaOpts(cudaStream_t stream = nullptr) {
  ecclOpOptions_t o = ECCL_OP_OPTIONS_INIT;
  o.memType = ecclMemCuda;
  o.cudaStream = stream;
  return o;
}

TEST_F(CudaCollectives, EveryDtypeAndOpMatchesHostMembers) {
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm), world = worldOf(comm);
    for (int d = 0; d < ecclNumTypes; ++d) {
      for (int o = 0; o < ecclNumOps; ++o) {
        const auto dt = static_cast<ecclDataType_t>(d);
        const auto op = static_cast<ecclRedOp_t>(o);
        for (const size_t count : {size_t{1}, size_t{1001}, size_t{(1u << 20) + 3}}) {
          const bool inPlace = count != 1001;
          const std::vector<std::byte> input = makeInput(rank, count, dt);
          const std::vector<std::byte> want = expectedAllReduce(world, count, dt, op);
          if (rank == 1) {  // the host member
            std::vector<std::byte> in = input, out(input.size());
            ASSERT_EQ(ecclAllReduce(in.data(), inPlace ? in.data() : out.data(), count, dt, op,
                                    nullptr, comm, nullptr), ecclSuccess);
            EXPECT_TRUE((inPlace ? in : out) == want);
            continue;
          }
          Device in(input), out(std::vector<std::byte>(input.size()));
          const ecclOpOptions_t opts = cudaOpts();
          ASSERT_EQ(ecclAllReduce(in.get(), inPlace ? in.get() : out.get(), count, dt, op, &opts,
                                  comm, nullptr), ecclSuccess) << ecclGetLastError(comm);
          EXPECT_TRUE((inPlace ? in : out).bytes() == want)
              << dtypeName(dt) << " " << opName(op) << " count " << count;
        }
      }
    }
  });
}

// Random floats up to 256 MiB: the sum is inexact, and the device members
// must hold exactly the host member's bits.
TEST_F(CudaCollectives, LargeRandomFloatsMatchTheHostMemberBitForBit) {
  for (const size_t mib : {size_t{64}, size_t{256}}) {
    const size_t count = (mib << 20) / 4;
    std::mutex mu;
    std::vector<std::vector<std::byte>> results(3);
    spawnPeers(3, [&](ecclComm_t comm) {
      const int rank = rankOf(comm);
      std::vector<float> v(count);
      std::mt19937 rng(1234 + rank);
      std::normal_distribution<float> g;
      for (float& x : v) x = g(rng);
      std::vector<std::byte> bytes(count * 4);
      std::memcpy(bytes.data(), v.data(), bytes.size());
      std::vector<std::byte> got;
      if (rank == 1) {
        ASSERT_EQ(ecclAllReduce(bytes.data(), bytes.data(), count, ecclFloat32, ecclSum, nullptr,
                                comm, nullptr), ecclSuccess);
        got = std::move(bytes);
      } else {
        Device buf(bytes);
        const ecclOpOptions_t opts = cudaOpts();
        ASSERT_EQ(ecclAllReduce(buf.get(), buf.get(), count, ecclFloat32, ecclSum, &opts, comm,
                                nullptr), ecclSuccess) << ecclGetLastError(comm);
        got = buf.bytes();
      }
      std::lock_guard<std::mutex> lock(mu);
      results[static_cast<size_t>(rank)] = std::move(got);
    });
    EXPECT_TRUE(results[0] == results[1]) << mib << " MiB";
    EXPECT_TRUE(results[2] == results[1]) << mib << " MiB";
  }
}

TEST_F(CudaCollectives, BroadcastFromEveryRoot) {
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    for (int root = 0; root < 3; ++root) {
      for (const size_t count : {size_t{3}, size_t{5000001}}) {
        Device buf(makeInput(rank, count, ecclFloat64));
        const ecclOpOptions_t opts = cudaOpts();
        ASSERT_EQ(ecclBroadcast(buf.get(), count, ecclFloat64, root, &opts, comm, nullptr),
                  ecclSuccess) << ecclGetLastError(comm);
        EXPECT_TRUE(buf.bytes() == makeInput(root, count, ecclFloat64)) << "root " << root;
      }
    }
  });
}

// The op reads its input after the work enqueued on the caller's stream
// before the call: here a copy of the real input over a buffer of zeros.
TEST_F(CudaCollectives, ReadsAfterTheCallersStream) {
  spawnPeers(2, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    constexpr size_t kCount = 32u << 20;  // 128 MiB: the copy takes a while
    const std::vector<float> ones(kCount, static_cast<float>(rank + 1));
    std::vector<std::byte> zeros(kCount * 4);
    Device buf(zeros), source(zeros);
    ASSERT_EQ(cudaMemcpy(source.get(), ones.data(), kCount * 4, cudaMemcpyDefault), cudaSuccess);
    cudaStream_t stream = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    ASSERT_EQ(cudaMemcpyAsync(buf.get(), source.get(), kCount * 4, cudaMemcpyDefault, stream),
              cudaSuccess);
    const ecclOpOptions_t opts = cudaOpts(stream);
    ASSERT_EQ(ecclAllReduce(buf.get(), buf.get(), kCount, ecclFloat32, ecclSum, &opts, comm,
                            nullptr), ecclSuccess) << ecclGetLastError(comm);
    std::vector<float> got(kCount);
    ASSERT_EQ(cudaMemcpy(got.data(), buf.get(), kCount * 4, cudaMemcpyDefault), cudaSuccess);
    EXPECT_EQ(got, std::vector<float>(kCount, 3.0f));
    cudaStreamDestroy(stream);
  });
}

// Real NCCL, at the one world size a single GPU allows (NCCL refuses two
// ranks on one device): the communicator is made, the op runs on it, and a
// second op reuses it.
TEST_F(CudaCollectives, NcclWorldOfOne) {
  const Status nccl = transport::checkTransport("nccl");
  if (!nccl.isOk()) GTEST_SKIP() << nccl.message();
  PeerOptions options;
  options.transport = "nccl";
  spawnPeers(1, [&](ecclComm_t comm) {
    for (const ecclRedOp_t op : {ecclSum, ecclAvg, ecclMax}) {
      const std::vector<std::byte> input = makeInput(0, 1 << 20, ecclFloat32);
      Device in(input), out(std::vector<std::byte>(input.size()));
      const ecclOpOptions_t opts = cudaOpts();
      ASSERT_EQ(ecclAllReduce(in.get(), out.get(), 1 << 20, ecclFloat32, op, &opts, comm, nullptr),
                ecclSuccess) << ecclGetLastError(comm);
      EXPECT_TRUE(out.bytes() == input) << opName(op);
      ASSERT_EQ(ecclAllReduce(in.get(), in.get(), 1 << 20, ecclFloat32, op, &opts, comm, nullptr),
                ecclSuccess) << ecclGetLastError(comm);
      EXPECT_TRUE(in.bytes() == input) << opName(op) << " in place";
    }
    Device buf(makeInput(0, 1000, ecclInt32));
    const ecclOpOptions_t opts = cudaOpts();
    ASSERT_EQ(ecclBroadcast(buf.get(), 1000, ecclInt32, 0, &opts, comm, nullptr), ecclSuccess)
        << ecclGetLastError(comm);
    EXPECT_TRUE(buf.bytes() == makeInput(0, 1000, ecclInt32));
  }, options);
}

TEST_F(CudaCollectives, FailedOpsLeaveTheDeviceInput) {
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    const size_t n = rank == 2 ? 300000 : 200000;
    const std::vector<std::byte> input = makeInput(rank, n, ecclFloat32);
    const ecclOpOptions_t opts = cudaOpts();
    Device v(input), out(std::vector<std::byte>(input.size(), std::byte{0x7f}));
    EXPECT_EQ(ecclAllReduce(v.get(), v.get(), n, ecclFloat32, ecclSum, &opts, comm, nullptr),
              ecclInvalidUsage);
    EXPECT_TRUE(v.bytes() == input);
    EXPECT_EQ(ecclAllReduce(v.get(), out.get(), n, ecclFloat32, ecclSum, &opts, comm, nullptr),
              ecclInvalidUsage);
    EXPECT_TRUE(out.bytes() == input);
  });
}

}  // namespace
}  // namespace eccl::test
