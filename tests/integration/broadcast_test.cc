// Pipelined ring broadcast from every root.
#include <gtest/gtest.h>

#include <vector>

#include "support/peers.h"

namespace eccl::test {
namespace {

TEST(Broadcast, FromEveryRootAllSizes) {
  const int n = 4;
  spawnPeers(n, [n](ecclComm_t comm) {
    const int rank = rankOf(comm);
    for (int root = 0; root < n; ++root) {
      for (size_t count : {size_t{0}, size_t{1}, size_t{1001}, size_t{3u << 20}}) {
        std::vector<uint8_t> buf(count);
        for (size_t i = 0; i < count; ++i) {
          buf[i] = rank == root ? static_cast<uint8_t>(i * 7 + root) : 0xEE;
        }
        ecclOpInfo_t info = ECCL_OP_INFO_INIT;
        ASSERT_EQ(ecclBroadcast(buf.data(), count, ecclUint8, root, nullptr, comm, &info),
                  ecclSuccess) << ecclGetLastError(comm);
        for (size_t i = 0; i < count; ++i) {
          if (buf[i] != static_cast<uint8_t>(i * 7 + root)) {
            ADD_FAILURE() << "root " << root << " count " << count << " rank " << rank
                          << " differs at " << i;
            break;
          }
        }
        // The last rank of the chain only receives; the root only sends.
        if (count > 0 && rank == root) {
          EXPECT_EQ(info.bytesReceived, 0u);
        }
      }
    }
  });
}

TEST(Broadcast, AsyncOnSeveralTags) {
  spawnPeers(3, [](ecclComm_t comm) {
    const int rank = rankOf(comm);
    std::vector<std::vector<double>> bufs(4, std::vector<double>(50000));
    std::vector<ecclRequest_t> reqs(4);
    for (int t = 0; t < 4; ++t) {
      const int root = t % 3;
      for (double& x : bufs[t]) x = rank == root ? t + 0.5 : -1;
      ecclOpOptions_t opts = ECCL_OP_OPTIONS_INIT;
      opts.tag = static_cast<uint32_t>(t);
      ASSERT_EQ(ecclBroadcastAsync(bufs[t].data(), bufs[t].size(), ecclFloat64, root, &opts, comm,
                                   &reqs[t]), ecclSuccess);
    }
    for (int t = 3; t >= 0; --t) {
      ASSERT_EQ(ecclWait(reqs[t], nullptr), ecclSuccess);
      EXPECT_EQ(bufs[t].front(), t + 0.5);
      EXPECT_EQ(bufs[t].back(), t + 0.5);
    }
  });
}

TEST(Broadcast, RootOutOfRangeIsInvalidArgument) {
  spawnPeers(2, [](ecclComm_t comm) {
    int x = 0;
    EXPECT_EQ(ecclBroadcast(&x, 1, ecclInt32, 2, nullptr, comm, nullptr), ecclInvalidArgument);
    EXPECT_NE(std::string(ecclGetLastError(comm)).find("root"), std::string::npos);
    EXPECT_EQ(ecclBroadcast(&x, 1, ecclInt32, -1, nullptr, comm, nullptr), ecclInvalidArgument);
  });
}

}  // namespace
}  // namespace eccl::test
