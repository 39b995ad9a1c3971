// Striped shared-state transfers (state/transfer.h) over real TCP transfer
// channels on loopback: a receiver fetches from several sources at once,
// checks every tensor's hash, refetches a corrupted one, finishes the chunks
// of a source that dies, and fails with ecclPeerLost when none is left.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <random>
#include <thread>
#include <vector>

#include "state/hash.h"
#include "state/transfer.h"
#include "transport/transport.h"

namespace eccl::state {
namespace {

using transport::Clock;
using transport::Link;

constexpr uint64_t kEpoch = 3;
constexpr uint64_t kSeq = 5;
constexpr uint64_t kReceiver = 100;

transport::Deadline soon() { return Clock::now() + std::chrono::seconds(10); }

std::unique_ptr<transport::Transport> makeTransport() {
  transport::TransportOptions o;
  o.bindAddress = "127.0.0.1";
  o.streams = 2;
  return transport::createTransport("tcp", o).value();
}

// One source's side: its transport, its tensors and the two links.
struct Source {
  uint64_t peer = 0;
  std::unique_ptr<transport::Transport> t;
  std::unique_ptr<Link> requestsIn, dataOut;  // source side
  std::unique_ptr<Link> requestsOut, dataIn;  // receiver side
};

struct World {
  std::unique_ptr<transport::Transport> receiver = makeTransport();
  std::vector<Source> sources;
  std::vector<std::vector<std::byte>> content;  // the elected state, by tensor
  TransferContext ctx;
  transport::CancelFlag cancel{0};

  World(size_t nSources, std::vector<size_t> sizes) {
    std::mt19937 rng(11);
    for (size_t bytes : sizes) {
      std::vector<std::byte> v(bytes);
      for (auto& b : v) b = static_cast<std::byte>(rng());
      content.push_back(std::move(v));
    }
    ctx.epoch = kEpoch;
    ctx.group = 0;
    ctx.chunkBytes = 64 << 10;
    ctx.progressTimeout = std::chrono::seconds(5);
    ctx.stallReport = std::chrono::milliseconds(500);
    ctx.cancel = &cancel;
    const uint64_t req = wire::syncChannel(kSeq, wire::SyncDirection::kRequests);
    const uint64_t dat = wire::syncChannel(kSeq, wire::SyncDirection::kData);
    for (size_t i = 0; i < nSources; ++i) {
      Source s;
      s.peer = i + 1;
      s.t = makeTransport();
      auto dialData = std::async(std::launch::async, [&] {
        return s.t->connectChannel({kReceiver, "127.0.0.1", receiver->port()}, s.peer, kEpoch, dat,
                                   soon(), cancel);
      });
      auto dialReq = std::async(std::launch::async, [&] {
        return receiver->connectChannel({s.peer, "127.0.0.1", s.t->port()}, kReceiver, kEpoch, req,
                                        soon(), cancel);
      });
      s.requestsIn = s.t->acceptChannel(s.peer, kReceiver, kEpoch, req, soon(), cancel).value();
      s.dataIn = receiver->acceptChannel(kReceiver, s.peer, kEpoch, dat, soon(), cancel).value();
      s.dataOut = dialData.get().value();
      s.requestsOut = dialReq.get().value();
      sources.push_back(std::move(s));
    }
  }

  std::vector<Served> served() const {
    std::vector<Served> v;
    for (const auto& c : content) v.push_back({c.data(), c.size()});
    return v;
  }

  // Runs every source's serve() and the receiver's fetch() into `into`.
  // `stopAfter[i]` > 0: source i stops (its links go away) after that many chunks.
  Status run(std::vector<std::vector<std::byte>>& into, FetchStats* stats,
             std::vector<int> stopAfter = {}) {
    stopAfter.resize(sources.size(), 0);
    std::vector<Target> targets;
    for (uint32_t t = 0; t < content.size(); ++t) {
      into[t].resize(content[t].size());
      targets.push_back({t, into[t].data(), into[t].size(),
                         contentHash(content[t].data(), content[t].size())});
    }
    std::vector<SourceLinks> links;
    for (Source& s : sources) links.push_back({s.peer, s.requestsOut.get(), s.dataIn.get()});
    std::vector<std::thread> servers;
    const std::vector<Served> tensors = served();
    for (size_t i = 0; i < sources.size(); ++i) {
      servers.emplace_back([&, i] {
        Source& s = sources[i];
        if (stopAfter[i] == 0) {
          (void)serve(ctx, kReceiver, tensors, *s.requestsIn, *s.dataOut);
          return;
        }
        // A source that dies: serves some chunks, then its links and
        // transport go away as a killed process's would.
        for (int k = 0; k < stopAfter[i]; ++k) {
          Result<transport::Frame> f = s.requestsIn->recv({wire::kSyncTag, 0, static_cast<uint32_t>(k), 0},
                                                          soon(), cancel);
          if (!f) break;
          auto q = wire::decodeSyncRequest(f->bytes());
          if (!q || q->done) break;
          wire::DataHeader h;
          h.kind = static_cast<uint8_t>(wire::OpKind::kSync);
          h.dtype = ecclUint8;
          h.tag = wire::kSyncTag;
          h.epoch = kEpoch;
          h.step = static_cast<uint32_t>(k);
          h.count = h.payloadBytes = static_cast<uint32_t>(q->length);
          (void)s.dataOut->send(h, tensors[q->tensor].data + q->offset, soon(), cancel, nullptr);
        }
        s.dataOut.reset();
        s.requestsIn.reset();
        s.t.reset();
      });
    }
    Status st = fetch(ctx, targets, links, stats);
    for (auto& th : servers) th.join();
    return st;
  }
};

TEST(StateTransfer, StripesAcrossThreeSourcesAndVerifies) {
  World w(3, {3 << 20, 100, 0, (1 << 20) + 7});
  std::vector<std::vector<std::byte>> got(w.content.size());
  FetchStats stats;
  ASSERT_TRUE(w.run(got, &stats).isOk());
  EXPECT_EQ(got, w.content);
  EXPECT_EQ(stats.refetches, 0u);
  uint64_t total = 0;
  for (const auto& c : w.content) total += c.size();
  EXPECT_EQ(stats.bytesReceived, total);
  ASSERT_EQ(stats.bytesFrom.size(), 3u) << "every source carried a share";
  for (const auto& [peer, bytes] : stats.bytesFrom) EXPECT_GT(bytes, 0u) << peer;
}

TEST(StateTransfer, CorruptedChunkIsCaughtAndRefetched) {
  World w(2, {1 << 20, 4096});
  std::atomic<int> flips{0};
  setChunkHookForTesting([&](uint32_t tensor, uint64_t offset, std::span<std::byte> bytes) {
    if (tensor == 0 && offset == 0 && flips.fetch_add(1) == 0) bytes[17] ^= std::byte{0x40};
  });
  std::vector<std::vector<std::byte>> got(w.content.size());
  FetchStats stats;
  const Status st = w.run(got, &stats);
  setChunkHookForTesting(nullptr);
  ASSERT_TRUE(st.isOk()) << st.message();
  EXPECT_GE(flips.load(), 2) << "the corrupted chunk was sent, and then again";
  EXPECT_EQ(stats.refetches, 1u);
  EXPECT_EQ(got, w.content) << "the corrupted bytes were never accepted";
}

TEST(StateTransfer, PersistentCorruptionIsAStateMismatch) {
  World w(2, {200000});
  setChunkHookForTesting([](uint32_t, uint64_t offset, std::span<std::byte> bytes) {
    if (offset == 0) bytes[0] ^= std::byte{1};
  });
  std::vector<std::vector<std::byte>> got(w.content.size());
  const Status st = w.run(got, nullptr);
  setChunkHookForTesting(nullptr);
  EXPECT_EQ(st.code(), ecclStateMismatch) << st.message();
}

TEST(StateTransfer, OtherSourcesFinishADeadSourcesChunks) {
  World w(3, {4 << 20});
  std::vector<std::vector<std::byte>> got(w.content.size());
  FetchStats stats;
  const Status st = w.run(got, &stats, {3, 0, 0});  // source 1 dies after 3 chunks
  ASSERT_TRUE(st.isOk()) << st.message();
  EXPECT_EQ(got, w.content);
  // The fault fired: the dead source delivered some chunks, not its share.
  EXPECT_LE(stats.bytesFrom[1], 3u * w.ctx.chunkBytes);
  EXPECT_GT(stats.bytesFrom[2] + stats.bytesFrom[3], 3u << 20);
}

TEST(StateTransfer, NoSourceLeftIsPeerLost) {
  World w(2, {4 << 20});
  std::vector<std::vector<std::byte>> got(w.content.size());
  const Status st = w.run(got, nullptr, {2, 2});
  EXPECT_EQ(st.code(), ecclPeerLost) << st.message();
  EXPECT_NE(st.message().find("every source"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace eccl::state
