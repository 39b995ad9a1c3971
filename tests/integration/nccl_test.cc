// The NCCL backend's logic without a GPU: the backend (transport/nccl/) goes
// through its table of NCCL calls, here a stand-in whose "kernels" run on the
// test device's stream threads (support/host_device.h) and, like NCCL's,
// wait for every rank's contribution. The stand-in can hold an op forever
// or raise an asynchronous error, so these tests show that a blocked NCCL op
// is aborted (ncclCommAbort) and the user gets the group's verdict within
// the bound, with the input restored, and that the next op builds a fresh
// communicator. Real NCCL on a GPU runs in tests/gpu.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/dtype.h"
#include "reduce/reduce.h"
#include "support/host_device.h"
#include "support/peers.h"
#include "support/reference.h"
#include "transport/nccl/api.h"

namespace eccl::test {
namespace {

// ---- the stand-in ----------------------------------------------------------

struct Slot {  // one collective of a group: the ranks' inputs as they arrive
  std::vector<std::vector<std::byte>> inputs;
  int arrived = 0;
  size_t bytes = 0;
  bool mismatch = false;  // ranks gave different sizes: NCCL would hang
};

struct Group {
  int n = 0;
  int joined = 0;
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, Slot> ops;
};

struct FakeComm {
  std::shared_ptr<Group> group;
  int rank = 0;
  uint64_t nextOp = 0;
  std::atomic<bool> aborted{false};
  std::atomic<int> asyncError{ncclSuccess};
};

struct Fake {
  HostDevice* dev = nullptr;
  std::mutex mu;
  std::map<std::string, std::shared_ptr<Group>> groups;  // by unique id
  std::map<ncclComm_t, std::shared_ptr<FakeComm>> comms;
  uint64_t nextId = 1;
  std::atomic<int> inits{0}, aborts{0}, ops{0}, blockingInits{0};
  std::atomic<int> hangRank{-1};   // that rank's next op never arrives
  std::atomic<int> errorRank{-1};  // that rank's next op raises an async error
} fake;

std::shared_ptr<FakeComm> commOf(ncclComm_t c) {
  std::lock_guard<std::mutex> lock(fake.mu);
  auto it = fake.comms.find(c);
  return it == fake.comms.end() ? nullptr : it->second;
}

ecclDataType_t fromNccl(ncclDataType_t t) {
  for (int d = 0; d < ecclNumTypes; ++d) {
    ncclDataType_t n;
    if (transport::nccl::toNccl(static_cast<ecclDataType_t>(d), &n) && n == t) {
      return static_cast<ecclDataType_t>(d);
    }
  }
  return ecclNumTypes;
}

ncclResult_t getVersion(int* v) {
  *v = 22809;
  return ncclSuccess;
}

ncclResult_t getUniqueId(ncclUniqueId* id) {
  std::lock_guard<std::mutex> lock(fake.mu);
  std::memset(id, 0, sizeof *id);
  std::snprintf(id->internal, sizeof id->internal, "fake-%llu",
                static_cast<unsigned long long>(fake.nextId++));
  return ncclSuccess;
}

ncclResult_t initRank(ncclComm_t* out, int n, ncclUniqueId id, int rank, ncclConfig_t* config) {
  if (config->blocking != 0) ++fake.blockingInits;
  auto c = std::make_shared<FakeComm>();
  c->rank = rank;
  std::lock_guard<std::mutex> lock(fake.mu);
  std::shared_ptr<Group>& g = fake.groups[std::string(id.internal, sizeof id.internal)];
  if (!g) {
    g = std::make_shared<Group>();
    g->n = n;
  }
  c->group = g;
  {
    std::lock_guard<std::mutex> glock(g->mu);
    ++g->joined;
  }
  auto handle = reinterpret_cast<ncclComm_t>(c.get());
  fake.comms[handle] = c;
  *out = handle;
  ++fake.inits;
  return ncclInProgress;  // non-blocking: done once every rank joined
}

ncclResult_t getAsyncError(ncclComm_t comm, ncclResult_t* e) {
  auto c = commOf(comm);
  if (!c) return ncclInvalidArgument;
  if (c->asyncError != ncclSuccess) {
    *e = static_cast<ncclResult_t>(c->asyncError.load());
    return ncclSuccess;
  }
  std::lock_guard<std::mutex> lock(c->group->mu);
  *e = c->group->joined < c->group->n ? ncclInProgress : ncclSuccess;
  return ncclSuccess;
}

ncclResult_t commAbort(ncclComm_t comm) {
  std::shared_ptr<FakeComm> c;
  {
    std::lock_guard<std::mutex> lock(fake.mu);
    auto it = fake.comms.find(comm);
    if (it == fake.comms.end()) return ncclInvalidArgument;
    c = it->second;
    fake.comms.erase(it);
  }
  c->aborted = true;
  {
    std::lock_guard<std::mutex> lock(c->group->mu);  // wakes a "kernel" waiting for peers
  }
  c->group->cv.notify_all();
  ++fake.aborts;
  return ncclSuccess;
}

// A "kernel": contributes `in` (root only for a broadcast), waits for the
// others (or an abort), then writes the result in rank order.
void collective(std::shared_ptr<FakeComm> c, uint64_t index, const void* in, void* out,
                size_t bytes, ecclDataType_t dtype, ecclRedOp_t op, int root, bool hang) {
  Group& g = *c->group;
  std::unique_lock<std::mutex> lock(g.mu);
  Slot& s = g.ops[index];
  if (s.inputs.empty()) {
    s.inputs.resize(static_cast<size_t>(g.n));
    s.bytes = bytes;
  }
  if (s.bytes != bytes) s.mismatch = true;
  if (!hang) {
    if (root < 0 || root == c->rank) {
      const auto* b = static_cast<const std::byte*>(in);
      s.inputs[static_cast<size_t>(c->rank)].assign(b, b + bytes);
    }
    ++s.arrived;
  }
  g.cv.notify_all();
  g.cv.wait(lock, [&] { return c->aborted.load() || (s.arrived == g.n && !s.mismatch); });
  if (c->aborted) return;
  if (root >= 0) {
    std::memcpy(out, s.inputs[static_cast<size_t>(root)].data(), bytes);
    return;
  }
  const size_t count = bytes / dtypeSize(dtype);
  std::vector<std::byte> acc = s.inputs[0];
  for (int r = 1; r < g.n; ++r) {
    (void)reduce::reduce(dtype, op, acc.data(), acc.data(), s.inputs[static_cast<size_t>(r)].data(),
                         count);
  }
  std::memcpy(out, acc.data(), bytes);
}

ncclResult_t launch(ncclComm_t comm, cudaStream_t stream, const void* in, void* out, size_t count,
                    ncclDataType_t type, ecclRedOp_t op, int root) {
  auto c = commOf(comm);
  if (!c) return ncclInvalidArgument;
  const ecclDataType_t dtype = fromNccl(type);
  const uint64_t index = c->nextOp++;
  bool hang = fake.hangRank.load() == c->rank;
  if (fake.errorRank.load() == c->rank) {
    c->asyncError = ncclRemoteError;
    hang = true;
  }
  ++fake.ops;
  fake.dev->enqueue(static_cast<cuda::Stream>(stream), [=] {
    collective(c, index, in, out, count * dtypeSize(dtype), dtype, op, root, hang);
  });
  return ncclSuccess;
}

ncclResult_t allReduce(const void* in, void* out, size_t count, ncclDataType_t type,
                       ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  const ecclRedOp_t eop = op == ncclProd ? ecclProd : op == ncclMax ? ecclMax
                          : op == ncclMin ? ecclMin : ecclSum;
  return launch(comm, stream, in, out, count, type, eop, -1);
}

ncclResult_t broadcast(const void* in, void* out, size_t count, ncclDataType_t type, int root,
                       ncclComm_t comm, cudaStream_t stream) {
  return launch(comm, stream, in, out, count, type, ecclSum, root);
}

const char* errorString(ncclResult_t r) {
  return r == ncclRemoteError ? "remote process exited or there was a network error (stand-in)"
                              : "stand-in error";
}

const transport::nccl::Api kFakeApi = {getVersion, getUniqueId, initRank,  getAsyncError,
                                       commAbort,  allReduce,   broadcast, errorString};

// ---- tests -----------------------------------------------------------------

class NcclBackend : public ::testing::Test {
 protected:
  void SetUp() override {
    fake.dev = &dev_;
    fake.inits = fake.aborts = fake.ops = fake.blockingInits = 0;
    fake.hangRank = fake.errorRank = -1;
    cuda::setDeviceForTesting(&dev_);
    transport::nccl::setApiForTesting(&kFakeApi);
    options_.transport = "nccl";
  }
  void TearDown() override {
    transport::nccl::setApiForTesting(nullptr);
    cuda::setDeviceForTesting(nullptr);
    EXPECT_EQ(fake.blockingInits, 0) << "a communicator was made blocking";
    std::lock_guard<std::mutex> lock(fake.mu);
    EXPECT_TRUE(fake.comms.empty()) << "communicators outlived the ECCL communicators";
    fake.groups.clear();
  }

  // A device buffer with `bytes`, freed with the test's device.
  void* onDevice(const std::vector<std::byte>& bytes) {
    void* p = dev_.allocate(bytes.size());
    if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
    return p;
  }
  static std::vector<std::byte> read(const void* p, size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    return {b, b + n};
  }
  static ecclOpOptions_t cudaOpts() {
    ecclOpOptions_t o = ECCL_OP_OPTIONS_INIT;
    o.memType = ecclMemCuda;
    return o;
  }

  HostDevice dev_;
  PeerOptions options_;
};

TEST_F(NcclBackend, EveryDtypeAndOp) {
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm), world = worldOf(comm);
    for (int d = 0; d < ecclNumTypes; ++d) {
      for (int o = 0; o < ecclNumOps; ++o) {
        const auto dt = static_cast<ecclDataType_t>(d);
        const auto op = static_cast<ecclRedOp_t>(o);
        for (const size_t count : {size_t{0}, size_t{1}, size_t{1001}}) {
          const bool inPlace = count == 1;
          const std::vector<std::byte> input = makeInput(rank, count, dt);
          void* in = onDevice(input);
          void* out = inPlace ? in : onDevice(std::vector<std::byte>(input.size()));
          const ecclOpOptions_t opts = cudaOpts();
          ASSERT_EQ(ecclAllReduce(in, out, count, dt, op, &opts, comm, nullptr), ecclSuccess)
              << ecclGetLastError(comm);
          EXPECT_TRUE(read(out, input.size()) == expectedAllReduce(world, count, dt, op))
              << dtypeName(dt) << " " << opName(op) << " count " << count;
          if (!inPlace) {
            EXPECT_TRUE(read(in, input.size()) == input) << "sendbuf changed";
          }
          dev_.release(in);
          if (!inPlace) dev_.release(out);
        }
      }
    }
  }, options_);
  // Every op but int16's and uint16's (NCCL has neither: they take the
  // staging path) ran on NCCL, on one communicator per member.
  EXPECT_EQ(fake.ops, 3 * 10 * ecclNumOps * 2);  // (count 0 moves nothing)
  EXPECT_EQ(fake.inits, 3);
  EXPECT_EQ(fake.aborts, 3);  // each freed with its ECCL communicator, none before
}

TEST_F(NcclBackend, BroadcastFromEveryRoot) {
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    for (int root = 0; root < 3; ++root) {
      const std::vector<std::byte> mine = makeInput(rank, 5000, ecclFloat32);
      void* buf = onDevice(mine);
      const ecclOpOptions_t opts = cudaOpts();
      ASSERT_EQ(ecclBroadcast(buf, 5000, ecclFloat32, root, &opts, comm, nullptr), ecclSuccess)
          << ecclGetLastError(comm);
      EXPECT_TRUE(read(buf, mine.size()) == makeInput(root, 5000, ecclFloat32));
      dev_.release(buf);
    }
  }, options_);
  EXPECT_EQ(fake.ops, 9);
}

TEST_F(NcclBackend, WorldOfOneRunsOnNccl) {
  spawnPeers(1, [&](ecclComm_t comm) {
    const std::vector<std::byte> input = makeInput(0, 100, ecclFloat32);
    void* buf = onDevice(input);
    const ecclOpOptions_t opts = cudaOpts();
    ASSERT_EQ(ecclAllReduce(buf, buf, 100, ecclFloat32, ecclAvg, &opts, comm, nullptr), ecclSuccess)
        << ecclGetLastError(comm);
    EXPECT_TRUE(read(buf, input.size()) == input);
    dev_.release(buf);
  }, options_);
  EXPECT_EQ(fake.ops, 1);
}

// A member leaves while the others wait inside NCCL for its contribution
// (as NCCL kernels wait for a dead peer): the master's verdict cancels the op,
// the watchdog aborts the communicator, and the survivors get ecclPeerLost
// fast, input intact; after the update a fresh communicator works.
TEST_F(NcclBackend, BlockedOpIsAbortedWhenAPeerGoesAway) {
  std::atomic<int> lost{0};
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    const ecclOpOptions_t opts = cudaOpts();
    std::vector<std::byte> input = makeInput(rank, 4096, ecclFloat32);
    void* buf = onDevice(input);
    ASSERT_EQ(ecclAllReduce(buf, buf, 4096, ecclFloat32, ecclSum, &opts, comm, nullptr),
              ecclSuccess) << ecclGetLastError(comm);
    std::memcpy(buf, input.data(), input.size());
    if (rank == 2) {
      // Gone without a word, while the others are blocked in NCCL.
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      dev_.release(buf);
      return;  // spawnPeers destroys the communicator: it leaves the group
    }
    const auto t0 = std::chrono::steady_clock::now();
    const ecclResult_t rc = ecclAllReduce(buf, buf, 4096, ecclFloat32, ecclSum, &opts, comm, nullptr);
    const auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(rc, ecclPeerLost) << ecclGetLastError(comm);
    EXPECT_LT(waited, std::chrono::seconds(5)) << "the blocked NCCL op was not aborted in time";
    EXPECT_TRUE(read(buf, input.size()) == input) << "the input was not left in place";
    ++lost;
    // The next epoch, two members, a new communicator.
    ASSERT_EQ(ecclCommUpdateTopology(comm), ecclSuccess) << ecclGetLastError(comm);
    ASSERT_EQ(worldOf(comm), 2);
    ASSERT_EQ(ecclAllReduce(buf, buf, 4096, ecclFloat32, ecclSum, &opts, comm, nullptr),
              ecclSuccess) << ecclGetLastError(comm);
    const int newRank = rankOf(comm);
    (void)newRank;
    std::vector<float> got(4096);
    std::memcpy(got.data(), buf, sizeof(float) * 4096);
    std::vector<float> want(4096);
    const std::vector<std::byte> a = makeInput(0, 4096, ecclFloat32), b = makeInput(1, 4096, ecclFloat32);
    for (size_t i = 0; i < 4096; ++i) {
      float x, y;
      std::memcpy(&x, a.data() + 4 * i, 4);
      std::memcpy(&y, b.data() + 4 * i, 4);
      want[i] = x + y;
    }
    EXPECT_EQ(got, want);
    dev_.release(buf);
  }, options_);
  EXPECT_EQ(lost, 2);
  // The survivors' blocked communicators, then at destroy the leaver's and
  // the survivors' new ones.
  EXPECT_EQ(fake.aborts, 2 + 1 + 2);
  EXPECT_EQ(fake.inits, 3 + 2);
}

// An asynchronous NCCL error on one member (a remote peer's process or the
// network going away, as NCCL sees it): that member aborts, the op fails on
// every member, inputs intact, and the same epoch's next op rebuilds.
TEST_F(NcclBackend, AsyncErrorFailsTheOpEverywhereAndTheNextOpRebuilds) {
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    const ecclOpOptions_t opts = cudaOpts();
    const std::vector<std::byte> input = makeInput(rank, 1000, ecclInt32);
    void* buf = onDevice(input);
    ASSERT_EQ(ecclAllReduce(buf, buf, 1000, ecclInt32, ecclSum, &opts, comm, nullptr), ecclSuccess);
    std::memcpy(buf, input.data(), input.size());
    int32_t barrier = 0;  // the error is armed before anyone starts the next op
    if (rank == 0) fake.errorRank = 1;
    ASSERT_EQ(ecclAllReduce(&barrier, &barrier, 1, ecclInt32, ecclSum, nullptr, comm, nullptr),
              ecclSuccess);
    const auto t0 = std::chrono::steady_clock::now();
    const ecclResult_t rc = ecclAllReduce(buf, buf, 1000, ecclInt32, ecclSum, &opts, comm, nullptr);
    EXPECT_EQ(rc, ecclPeerLost) << ecclGetLastError(comm);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
    EXPECT_TRUE(read(buf, input.size()) == input);
    if (rank == 1) {
      EXPECT_NE(std::string(ecclGetLastError(comm)).find("remote process exited"), std::string::npos)
          << ecclGetLastError(comm);
    }
    ASSERT_EQ(ecclAllReduce(&barrier, &barrier, 1, ecclInt32, ecclSum, nullptr, comm, nullptr),
              ecclSuccess);
    if (rank == 0) fake.errorRank = -1;
    ASSERT_EQ(ecclAllReduce(&barrier, &barrier, 1, ecclInt32, ecclSum, nullptr, comm, nullptr),
              ecclSuccess);
    ASSERT_EQ(ecclAllReduce(buf, buf, 1000, ecclInt32, ecclSum, &opts, comm, nullptr), ecclSuccess)
        << ecclGetLastError(comm);
    EXPECT_TRUE(read(buf, input.size()) == expectedAllReduce(3, 1000, ecclInt32, ecclSum));
    dev_.release(buf);
  }, options_);
  EXPECT_EQ(fake.aborts, 3 + 3);  // every member's of the failed op, the new ones at destroy
  EXPECT_EQ(fake.inits, 3 + 3);   // and a new one each
}

// Members that disagree on the count would hang NCCL; the master's verdict
// (ecclInvalidUsage) aborts it instead.
TEST_F(NcclBackend, MismatchedCountsAbortInsteadOfHanging) {
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    const size_t n = rank == 2 ? 3000 : 2000;
    const std::vector<std::byte> input = makeInput(rank, n, ecclFloat32);
    void* in = onDevice(input);
    void* out = onDevice(std::vector<std::byte>(input.size(), std::byte{1}));
    const ecclOpOptions_t opts = cudaOpts();
    EXPECT_EQ(ecclAllReduce(in, out, n, ecclFloat32, ecclSum, &opts, comm, nullptr),
              ecclInvalidUsage);
    EXPECT_TRUE(read(out, input.size()) == input) << "recvbuf must hold the input";
    dev_.release(in);
    dev_.release(out);
  }, options_);
}

}  // namespace
}  // namespace eccl::test
