// ecclMemCuda buffers over the host transports, with host memory standing in
// for the GPU (support/host_device.h): the staging code (comm/staging.h) runs
// as it does with CUDA, down to asynchronous copies on stream threads. The
// same ops on a real GPU are in tests/gpu.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <vector>

#include "support/host_device.h"
#include "support/peers.h"
#include "support/reference.h"

namespace eccl::test {
namespace {

class CudaStaging : public ::testing::Test {
 protected:
  void SetUp() override { cuda::setDeviceForTesting(&dev_); }
  void TearDown() override {
    cuda::setDeviceForTesting(nullptr);
    EXPECT_EQ(dev_.pinnedBlocks(), 0u) << "pinned staging memory outlived its communicator";
  }

  // A device buffer holding `bytes`; freed by the fixture's device.
  struct DeviceBuffer {
    HostDevice* dev;
    void* p;
    size_t n;
    DeviceBuffer(HostDevice& d, const std::vector<std::byte>& bytes)
        : dev(&d), p(d.allocate(bytes.size())), n(bytes.size()) {
      if (n > 0) std::memcpy(p, bytes.data(), n);
    }
    ~DeviceBuffer() { dev->release(p); }
    std::vector<std::byte> bytes() const {
      const auto* b = static_cast<const std::byte*>(p);
      return {b, b + n};
    }
  };

  static ecclOpOptions_t onDevice(cuda::Stream stream = nullptr) {
    ecclOpOptions_t o = ECCL_OP_OPTIONS_INIT;
    o.memType = ecclMemCuda;
    o.cudaStream = stream;
    return o;
  }

  HostDevice dev_;
};

struct ByRank {
  std::mutex mu;
  std::vector<std::vector<std::byte>> v;
  explicit ByRank(int n) : v(static_cast<size_t>(n)) {}
  void put(int rank, std::vector<std::byte> b) {
    std::lock_guard<std::mutex> lock(mu);
    v[static_cast<size_t>(rank)] = std::move(b);
  }
};

// Device members (even ranks) and a host member (rank 1) in one group: every
// dtype and op gives the exact result on both, in and out of place.
TEST_F(CudaStaging, EveryDtypeAndOpMatchesHostMembers) {
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm), world = worldOf(comm);
    const bool device = rank != 1;
    for (int d = 0; d < ecclNumTypes; ++d) {
      for (int o = 0; o < ecclNumOps; ++o) {
        const auto dt = static_cast<ecclDataType_t>(d);
        const auto op = static_cast<ecclRedOp_t>(o);
        for (const size_t count : {size_t{0}, size_t{1}, size_t{1001}}) {
          const bool inPlace = count == 1;
          const std::vector<std::byte> input = makeInput(rank, count, dt);
          const std::vector<std::byte> want = expectedAllReduce(world, count, dt, op);
          if (!device) {
            std::vector<std::byte> in = input, out(input.size());
            ASSERT_EQ(ecclAllReduce(in.data(), inPlace ? in.data() : out.data(), count, dt, op,
                                    nullptr, comm, nullptr), ecclSuccess);
            EXPECT_TRUE((inPlace ? in : out) == want) << dtypeName(dt) << " " << opName(op);
            continue;
          }
          DeviceBuffer in(dev_, input), out(dev_, std::vector<std::byte>(input.size()));
          const ecclOpOptions_t opts = onDevice();
          ASSERT_EQ(ecclAllReduce(in.p, inPlace ? in.p : out.p, count, dt, op, &opts, comm,
                                  nullptr), ecclSuccess) << ecclGetLastError(comm);
          EXPECT_TRUE((inPlace ? in : out).bytes() == want) << dtypeName(dt) << " " << opName(op);
          if (!inPlace) {
            EXPECT_TRUE(in.bytes() == input) << "sendbuf was modified";
          }
        }
      }
    }
  });
}

// Random whole numbers (exact sums) over many copy-in segments, each copy
// delayed: a ring that read a segment before its copy finished would send
// stale bytes. Device and host members end with the exact sum.
TEST_F(CudaStaging, SegmentedCopiesAreAwaited) {
  dev_.setCopyDelay(std::chrono::milliseconds(3));
  constexpr size_t kCount = (13u << 20) / 4 + 5;  // 4 segments of 4 MiB, the last short
  auto inputOf = [](int rank) {
    std::vector<float> v(kCount);
    std::mt19937 rng(17 + rank);
    std::uniform_int_distribution<int> u(-1000, 1000);
    for (float& x : v) x = static_cast<float>(u(rng));
    return v;
  };
  ByRank results(3);
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    const std::vector<float> input = inputOf(rank);
    std::vector<std::byte> bytes(kCount * 4);
    std::memcpy(bytes.data(), input.data(), bytes.size());
    if (rank == 1) {
      ASSERT_EQ(ecclAllReduce(bytes.data(), bytes.data(), kCount, ecclFloat32, ecclSum, nullptr,
                              comm, nullptr), ecclSuccess);
      results.put(rank, bytes);
      return;
    }
    DeviceBuffer buf(dev_, bytes);
    const ecclOpOptions_t opts = onDevice();
    ASSERT_EQ(ecclAllReduce(buf.p, buf.p, kCount, ecclFloat32, ecclSum, &opts, comm, nullptr),
              ecclSuccess) << ecclGetLastError(comm);
    results.put(rank, buf.bytes());
  });
  std::vector<float> sum = inputOf(0);
  for (int r = 1; r < 3; ++r) {
    const std::vector<float> v = inputOf(r);
    for (size_t i = 0; i < kCount; ++i) sum[i] += v[i];
  }
  std::vector<std::byte> want(kCount * 4);
  std::memcpy(want.data(), sum.data(), want.size());
  for (int r = 0; r < 3; ++r) EXPECT_TRUE(results.v[static_cast<size_t>(r)] == want) << "rank " << r;
  EXPECT_GE(dev_.counts().toHost, 8u);  // 4 segments on each device member
}

// The op reads its input after the work enqueued on the caller's stream
// before the call: here a (delayed) copy that writes the input.
TEST_F(CudaStaging, WaitsForTheCallersStream) {
  dev_.setCopyDelay(std::chrono::milliseconds(100));  // the caller's copy lands late
  spawnPeers(2, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    constexpr size_t kCount = 100000;
    std::vector<float> source(kCount, static_cast<float>(rank + 1));
    std::vector<std::byte> zeros(kCount * 4);
    DeviceBuffer buf(dev_, zeros), staged(dev_, zeros);
    std::memcpy(staged.p, source.data(), kCount * 4);
    Result<cuda::Stream> stream = dev_.createStream();
    ASSERT_TRUE(stream);
    ASSERT_TRUE(dev_.copy(buf.p, staged.p, kCount * 4, *stream).isOk());
    const ecclOpOptions_t opts = onDevice(*stream);
    ecclRequest_t req = nullptr;
    ASSERT_EQ(ecclAllReduceAsync(buf.p, buf.p, kCount, ecclFloat32, ecclSum, &opts, comm, &req),
              ecclSuccess);
    ASSERT_EQ(ecclWait(req, nullptr), ecclSuccess) << ecclGetLastError(comm);
    std::vector<float> got(kCount);
    std::memcpy(got.data(), buf.p, kCount * 4);
    EXPECT_EQ(got, std::vector<float>(kCount, 3.0f));  // 1 + 2, not 0 + 0
    dev_.destroyStream(*stream);
  });
}

// A broadcast writes a receiver's buffer only after the caller's earlier
// work on it: here a late copy of stale bytes, which must not land on top of
// the result.
TEST_F(CudaStaging, BroadcastWritesAfterTheCallersStream) {
  spawnPeers(2, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    constexpr size_t kCount = 1000;
    DeviceBuffer buf(dev_, makeInput(rank, kCount, ecclInt32));
    DeviceBuffer stale(dev_, makeInput(7, kCount, ecclInt32));
    Result<cuda::Stream> stream = dev_.createStream();
    ASSERT_TRUE(stream);
    if (rank == 1) {  // only this copy is slow (the delay is read when a copy is queued)
      dev_.setCopyDelay(std::chrono::milliseconds(200));
      ASSERT_TRUE(dev_.copy(buf.p, stale.p, kCount * 4, *stream).isOk());
      dev_.setCopyDelay(std::chrono::milliseconds(0));
    }
    const ecclOpOptions_t opts = onDevice(*stream);
    ASSERT_EQ(ecclBroadcast(buf.p, kCount, ecclInt32, 0, &opts, comm, nullptr), ecclSuccess)
        << ecclGetLastError(comm);
    Result<cuda::Event> idle = dev_.createEvent();  // the caller's stream has run out too
    ASSERT_TRUE(idle);
    ASSERT_TRUE(dev_.record(*idle, *stream).isOk());
    ASSERT_TRUE(dev_.synchronize(*idle).isOk());
    EXPECT_TRUE(buf.bytes() == makeInput(0, kCount, ecclInt32)) << "rank " << rank;
    dev_.destroyEvent(*idle);
    dev_.destroyStream(*stream);
  });
}

TEST_F(CudaStaging, BroadcastFromEveryRoot) {
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    for (int root = 0; root < 3; ++root) {
      for (const size_t count : {size_t{5}, size_t{300001}}) {
        const std::vector<std::byte> mine = makeInput(rank, count, ecclInt32);
        DeviceBuffer buf(dev_, mine);
        const ecclOpOptions_t opts = onDevice();
        ASSERT_EQ(ecclBroadcast(buf.p, count, ecclInt32, root, &opts, comm, nullptr), ecclSuccess)
            << ecclGetLastError(comm);
        EXPECT_TRUE(buf.bytes() == makeInput(root, count, ecclInt32)) << "root " << root;
      }
    }
  });
}

// A codec changes the root's own buffer too (it keeps the decoded value):
// every member, the root included, ends with the same bits.
TEST_F(CudaStaging, BroadcastWithCodecGivesTheRootTheDecodedValue) {
  ByRank results(3);
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    std::vector<float> v(40000);
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (float& x : v) x = rank == 0 ? u(rng) : 0.f;
    std::vector<std::byte> bytes(v.size() * 4);
    std::memcpy(bytes.data(), v.data(), bytes.size());
    DeviceBuffer buf(dev_, bytes);
    ecclOpOptions_t opts = onDevice();
    opts.quantization = ecclQuantUint8;
    ASSERT_EQ(ecclBroadcast(buf.p, v.size(), ecclFloat32, 0, &opts, comm, nullptr), ecclSuccess)
        << ecclGetLastError(comm);
    if (rank == 0) {
      EXPECT_FALSE(buf.bytes() == bytes) << "the root kept its undecoded input";
    }
    results.put(rank, buf.bytes());
  });
  EXPECT_TRUE(results.v[1] == results.v[0]);
  EXPECT_TRUE(results.v[2] == results.v[0]);
}

// A quantized all-reduce of device buffers keeps the elements on the device:
// only encoded bytes cross between host and device, every codec op runs
// there, and device and host members end with the same bits, for every codec
// and op, in and out of place.
TEST_F(CudaStaging, CodecsRunOnTheDeviceAndMoveOnlyEncodedBytes) {
  constexpr size_t kCount = 300000;  // 1.2 MiB of float32: two segments
  struct Case {
    ecclQuantization_t quant;
    ecclRedOp_t op;
    bool inPlace;
  };
  const Case cases[] = {{ecclQuantUint8, ecclSum, true},     {ecclQuantUint4, ecclAvg, false},
                        {ecclQuantBfloat16, ecclMax, true},  {ecclQuantFloat16, ecclProd, false},
                        {ecclQuantUint8, ecclMin, false}};
  for (const Case& c : cases) {
    const HostDevice::Counts before = dev_.counts();
    ByRank results(3);
    spawnPeers(3, [&](ecclComm_t comm) {
      const int rank = rankOf(comm);
      std::vector<float> v(kCount);
      std::mt19937 rng(40 + rank);
      std::normal_distribution<float> g;
      for (float& x : v) x = g(rng);
      std::vector<std::byte> bytes(kCount * 4);
      std::memcpy(bytes.data(), v.data(), bytes.size());
      ecclOpOptions_t opts = onDevice();
      if (rank == 1) opts.memType = ecclMemHost;
      opts.quantization = c.quant;
      opts.rounding = ecclRoundStochastic;
      if (rank == 1) {  // the host member
        std::vector<std::byte> out(bytes.size());
        ASSERT_EQ(ecclAllReduce(bytes.data(), c.inPlace ? bytes.data() : out.data(), kCount,
                                ecclFloat32, c.op, &opts, comm, nullptr), ecclSuccess);
        results.put(rank, c.inPlace ? bytes : out);
        return;
      }
      DeviceBuffer in(dev_, bytes), out(dev_, std::vector<std::byte>(bytes.size()));
      ASSERT_EQ(ecclAllReduce(in.p, c.inPlace ? in.p : out.p, kCount, ecclFloat32, c.op, &opts,
                              comm, nullptr), ecclSuccess) << ecclGetLastError(comm);
      results.put(rank, (c.inPlace ? in : out).bytes());
      if (!c.inPlace) {
        EXPECT_TRUE(in.bytes() == bytes) << "sendbuf changed";
      }
    });
    EXPECT_TRUE(results.v[0] == results.v[1]) << "codec " << c.quant << " op " << c.op;
    EXPECT_TRUE(results.v[2] == results.v[1]) << "codec " << c.quant << " op " << c.op;
    // What crossed "PCIe" is encoded segments: each device member encodes
    // each chunk once (n chunks of the buffer) and receives 2(n-1) of them.
    // Staging the float32s would move 4 bytes per element each way.
    const codec::Params params{ecclFloat32, ecclRoundStochastic, codec::kDefaultBlockElems};
    const size_t encoded = codec::find(c.quant)->encodedBytes(params, kCount);
    const HostDevice::Counts after = dev_.counts();
    EXPECT_LE(after.bytesToHost - before.bytesToHost, 2 * (encoded + 4096)) << "codec " << c.quant;
    EXPECT_LE(after.bytesToDevice - before.bytesToDevice, 2 * (2 * encoded * 2 / 3 + 4096))
        << "codec " << c.quant;
    EXPECT_LT(encoded, kCount * 4);
  }
  EXPECT_GT(dev_.codecCalls(), 0u);
}

// A failed codec op on device buffers leaves every buffer as it was, the
// in-place ones restored from the device backup.
TEST_F(CudaStaging, FailedCodecOpsLeaveTheDeviceInput) {
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    const size_t n = rank == 2 ? 300000 : 200000;
    const std::vector<std::byte> input = makeInput(rank, n, ecclFloat32);
    ecclOpOptions_t opts = onDevice();
    opts.quantization = ecclQuantUint8;
    DeviceBuffer v(dev_, input), out(dev_, std::vector<std::byte>(input.size(), std::byte{3}));
    EXPECT_EQ(ecclAllReduce(v.p, v.p, n, ecclFloat32, ecclSum, &opts, comm, nullptr),
              ecclInvalidUsage);
    EXPECT_TRUE(v.bytes() == input);
    EXPECT_EQ(ecclAllReduce(v.p, out.p, n, ecclFloat32, ecclSum, &opts, comm, nullptr),
              ecclInvalidUsage);
    EXPECT_TRUE(out.bytes() == input);
    EXPECT_EQ(ecclBroadcast(v.p, n, ecclFloat32, 0, &opts, comm, nullptr), ecclInvalidUsage);
    EXPECT_TRUE(v.bytes() == input);
  });
}

// All or nothing: a failed op (members disagree on the count) leaves every
// device buffer as the host contract says, and the device result is never
// written: nothing is copied back to the device.
TEST_F(CudaStaging, FailedOpsLeaveTheDeviceInput) {
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    const size_t n = rank == 2 ? 300000 : 200000;
    const std::vector<std::byte> input = makeInput(rank, n, ecclFloat32);
    const ecclOpOptions_t opts = onDevice();
    DeviceBuffer v(dev_, input);
    EXPECT_EQ(ecclAllReduce(v.p, v.p, n, ecclFloat32, ecclSum, &opts, comm, nullptr),
              ecclInvalidUsage);
    EXPECT_TRUE(v.bytes() == input);
    DeviceBuffer out(dev_, std::vector<std::byte>(input.size(), std::byte{0x7f}));
    EXPECT_EQ(ecclAllReduce(v.p, out.p, n, ecclFloat32, ecclSum, &opts, comm, nullptr),
              ecclInvalidUsage);
    EXPECT_TRUE(out.bytes() == input) << "recvbuf must hold the input after a failure";
    EXPECT_EQ(ecclBroadcast(v.p, n, ecclFloat32, 0, &opts, comm, nullptr), ecclInvalidUsage);
    EXPECT_TRUE(v.bytes() == input);
    // And the group still works.
    DeviceBuffer one(dev_, makeInput(rank, 1, ecclFloat32));
    EXPECT_EQ(ecclAllReduce(one.p, one.p, 1, ecclFloat32, ecclSum, &opts, comm, nullptr),
              ecclSuccess);
    EXPECT_TRUE(one.bytes() == expectedAllReduce(3, 1, ecclFloat32, ecclSum));
  });
  // Only the last op's result went to the device: one copy per member.
  EXPECT_EQ(dev_.counts().toDevice, 3u);
}

TEST_F(CudaStaging, WorldOfOneCopiesOnTheDevice) {
  spawnPeers(1, [&](ecclComm_t comm) {
    const std::vector<std::byte> input = makeInput(0, 1000, ecclFloat64);
    DeviceBuffer in(dev_, input), out(dev_, std::vector<std::byte>(input.size()));
    const ecclOpOptions_t opts = onDevice();
    ASSERT_EQ(ecclAllReduce(in.p, out.p, 1000, ecclFloat64, ecclSum, &opts, comm, nullptr),
              ecclSuccess);
    EXPECT_TRUE(out.bytes() == input);
  });
  EXPECT_EQ(dev_.counts().deviceToDevice, 1u);
}

TEST_F(CudaStaging, HostPointersAndUnknownMemoryTypesAreRefused) {
  spawnPeers(2, [&](ecclComm_t comm) {
    std::vector<float> host(10, 1.0f);
    DeviceBuffer d(dev_, std::vector<std::byte>(40));
    ecclOpOptions_t opts = onDevice();
    EXPECT_EQ(ecclAllReduce(host.data(), host.data(), 10, ecclFloat32, ecclSum, &opts, comm,
                            nullptr), ecclInvalidArgument);
    EXPECT_NE(std::string(ecclGetLastError(comm)).find("host memory"), std::string::npos)
        << ecclGetLastError(comm);
    EXPECT_EQ(ecclAllReduce(d.p, host.data(), 10, ecclFloat32, ecclSum, &opts, comm, nullptr),
              ecclInvalidArgument);
    opts.memType = static_cast<ecclMemType_t>(7);
    EXPECT_EQ(ecclAllReduce(d.p, d.p, 10, ecclFloat32, ecclSum, &opts, comm, nullptr),
              ecclInvalidArgument);
    // Nothing ran: the group is still in step.
    float x = 1;
    EXPECT_EQ(ecclAllReduce(&x, &x, 1, ecclFloat32, ecclSum, nullptr, comm, nullptr), ecclSuccess);
    EXPECT_EQ(x, 2.0f);
  });
}

// Shared state with CUDA tensors: a member whose device tensor drifted gets
// the popular content into device memory; device members serve a host
// member; a host pointer marked ecclMemCuda is refused before the sync.
TEST_F(CudaStaging, SharedStateWithDeviceTensors) {
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    std::vector<std::byte> w = makeInput(0, 50000, ecclFloat32);
    if (rank == 2) w = makeInput(1, 50000, ecclFloat32);  // drifted
    const bool device = rank != 0;
    DeviceBuffer d(dev_, w);
    ecclTensorInfo_t t = {"w", device ? d.p : w.data(), 50000, ecclFloat32,
                          device ? ecclMemCuda : ecclMemHost, 0};
    ecclSharedState_t state = ECCL_SHARED_STATE_INIT;
    state.revision = 1;
    state.tensors = &t;
    state.tensorCount = 1;
    ecclSyncInfo_t info = ECCL_SYNC_INFO_INIT;
    ASSERT_EQ(ecclSharedStateSync(comm, &state, ecclSyncEnforcePopular, &info), ecclSuccess)
        << ecclGetLastError(comm);
    const std::vector<std::byte> popular = makeInput(0, 50000, ecclFloat32);
    EXPECT_TRUE((device ? d.bytes() : w) == popular) << "rank " << rank;
    EXPECT_EQ(info.tensorsFetched, rank == 2 ? 1u : 0u);
    // Now the host member drifts and fetches from the device members.
    if (rank == 0) {  // (in place: t.data points into w)
      const std::vector<std::byte> drift = makeInput(2, 50000, ecclFloat32);
      std::memcpy(w.data(), drift.data(), w.size());
    }
    state.revision = 2;
    ASSERT_EQ(ecclSharedStateSync(comm, &state, ecclSyncEnforcePopular, &info), ecclSuccess)
        << ecclGetLastError(comm);
    EXPECT_TRUE((device ? d.bytes() : w) == popular) << "rank " << rank;
    EXPECT_EQ(info.tensorsFetched, rank == 0 ? 1u : 0u);
    if (rank == 0) {
      t.memType = ecclMemCuda;  // host memory
      EXPECT_EQ(ecclSharedStateSync(comm, &state, ecclSyncEnforcePopular, nullptr),
                ecclInvalidArgument);
    }
  });
}

// Without the test device the real plugin is looked up; one that cannot be
// loaded is ecclUnsupported with the paths tried. (The process remembers the
// first lookup: CTest runs each test alone, so that is this one's.)
TEST(CudaPlugin, MissingPluginIsUnsupportedWithTheReason) {
  setenv("ECCL_CUDA_PLUGIN", "/nonexistent/libeccl_cuda.so.0", 1);
  spawnPeers(1, [&](ecclComm_t comm) {
    std::vector<float> buf(4);
    ecclOpOptions_t opts = ECCL_OP_OPTIONS_INIT;
    opts.memType = ecclMemCuda;
    EXPECT_EQ(ecclAllReduce(buf.data(), buf.data(), 4, ecclFloat32, ecclSum, &opts, comm, nullptr),
              ecclUnsupported);
    const std::string why = ecclGetLastError(comm);
    EXPECT_NE(why.find("could not be loaded"), std::string::npos) << why;
    EXPECT_NE(why.find("libeccl_cuda.so.0"), std::string::npos) << why;
  });
  unsetenv("ECCL_CUDA_PLUGIN");
}

}  // namespace
}  // namespace eccl::test
