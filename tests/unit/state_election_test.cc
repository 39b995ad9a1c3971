// The master's shared-state election (state/election.h), rule by rule.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "state/election.h"

namespace eccl::state {
namespace {

wire::SyncEntry entry(const std::string& name, uint64_t hash, uint64_t count = 10,
                      ecclDataType_t dtype = ecclFloat32, bool divergent = false) {
  return {name, static_cast<uint8_t>(dtype), count, hash, divergent};
}

Manifest member(uint64_t id, uint64_t revision, std::vector<wire::SyncEntry> entries,
                std::optional<uint64_t> last = std::nullopt,
                ecclSyncStrategy_t strategy = ecclSyncEnforcePopular) {
  return {id, last, revision, strategy, std::move(entries)};
}

std::vector<uint32_t> fetched(const Election& e, uint64_t peer) {
  std::vector<uint32_t> v;
  for (const auto& f : e.byPeer.at(peer).fetch) v.push_back(f.index);
  return v;
}

TEST(StateElection, IdenticalStateFetchesNothing) {
  const std::vector<wire::SyncEntry> s = {entry("a", 1), entry("b", 2)};
  const Election e = elect({member(1, 5, s, 4), member(2, 5, s, 4), member(3, 5, s, 4)}, 4);
  EXPECT_EQ(e.revision, 5u);
  for (uint64_t p : {1, 2, 3}) {
    EXPECT_TRUE(e.byPeer.at(p).status.isOk());
    EXPECT_TRUE(e.byPeer.at(p).fetch.empty());
    EXPECT_TRUE(e.byPeer.at(p).sources.empty());
    EXPECT_TRUE(e.byPeer.at(p).receivers.empty());
  }
}

TEST(StateElection, OutdatedPeerFetchesOnlyDirtyTensorsFromUpToDatePeers) {
  const std::vector<wire::SyncEntry> good = {entry("a", 1), entry("b", 2), entry("c", 3)};
  const std::vector<wire::SyncEntry> stale = {entry("c", 3), entry("b", 99), entry("a", 1)};
  const Election e = elect({member(1, 5, good, 4), member(2, 5, good, 4), member(3, 5, stale, 4)}, 4);
  EXPECT_EQ(fetched(e, 3), std::vector<uint32_t>{1});  // "b", at its own index
  EXPECT_EQ(e.byPeer.at(3).fetch[0].hash, 2u);
  EXPECT_EQ(e.byPeer.at(3).sources, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(e.byPeer.at(1).receivers, std::vector<uint64_t>{3});
  EXPECT_EQ(e.byPeer.at(2).receivers, std::vector<uint64_t>{3});
}

TEST(StateElection, PopularContentBeatsTheFirstArriver) {
  const std::vector<wire::SyncEntry> x = {entry("w", 7)}, y = {entry("w", 8)};
  const Election e = elect({member(1, 1, x), member(2, 1, y), member(3, 1, y)}, 4);
  EXPECT_EQ(fetched(e, 1), std::vector<uint32_t>{0});
  EXPECT_EQ(e.byPeer.at(1).fetch[0].hash, 8u);
  EXPECT_TRUE(fetched(e, 2).empty());
}

TEST(StateElection, TieIsResolvedTheSameWayWhateverTheOrder) {
  const std::vector<wire::SyncEntry> x = {entry("w", 7)}, y = {entry("w", 3)};
  const Election e1 = elect({member(1, 1, x), member(2, 1, y)}, 4);
  const Election e2 = elect({member(2, 1, y), member(1, 1, x)}, 4);
  // The smaller content wins both times: peer 1 (hash 7) fetches hash 3.
  EXPECT_EQ(fetched(e1, 1), std::vector<uint32_t>{0});
  EXPECT_EQ(fetched(e2, 1), std::vector<uint32_t>{0});
  EXPECT_EQ(e1.byPeer.at(1).fetch[0].hash, 3u);
  EXPECT_TRUE(fetched(e1, 2).empty());
}

TEST(StateElection, RevisionMustAdvanceByExactlyOne) {
  const std::vector<wire::SyncEntry> s = {entry("a", 1)};
  const Election skip = elect({member(1, 7, s, 5), member(2, 6, s, 5)}, 4);
  EXPECT_EQ(skip.byPeer.at(1).status.code(), ecclStateMismatch);
  EXPECT_NE(skip.byPeer.at(1).status.message().find("revision 7"), std::string::npos)
      << skip.byPeer.at(1).status.message();
  EXPECT_TRUE(skip.byPeer.at(2).status.isOk());
  const Election back = elect({member(1, 4, s, 5), member(2, 6, s, 5)}, 4);
  EXPECT_EQ(back.byPeer.at(1).status.code(), ecclStateMismatch);
  const Election same = elect({member(1, 5, s, 5)}, 4);
  EXPECT_EQ(same.byPeer.at(1).status.code(), ecclStateMismatch);
}

TEST(StateElection, FirstSyncMayStartAnywhereAndBehindReceives) {
  const std::vector<wire::SyncEntry> s = {entry("a", 1)}, fresh = {entry("a", 0)};
  // Resume from a checkpoint: no history, any revision.
  const Election resume = elect({member(1, 1000, s), member(2, 1000, s)}, 4);
  EXPECT_EQ(resume.revision, 1000u);
  EXPECT_TRUE(resume.byPeer.at(1).status.isOk());
  // A newcomer at revision 0 joins a group at 12: it receives, whatever it holds.
  const Election join = elect({member(1, 12, s, 11), member(2, 12, s, 11), member(3, 0, fresh)}, 4);
  EXPECT_EQ(join.revision, 12u);
  EXPECT_EQ(fetched(join, 3), std::vector<uint32_t>{0});
  // A member whose last sync failed while the others' succeeded is behind by
  // one: it receives and catches up instead of being refused.
  const Election behind = elect({member(1, 12, s, 11), member(2, 12, s, 11), member(3, 11, fresh, 10)}, 4);
  EXPECT_TRUE(behind.byPeer.at(3).status.isOk()) << behind.byPeer.at(3).status.message();
  EXPECT_EQ(fetched(behind, 3), std::vector<uint32_t>{0});
  EXPECT_EQ(behind.revision, 12u);
  // Its content does not vote, even when it would outnumber.
  const Election outvoted = elect({member(1, 12, s, 11), member(2, 0, fresh), member(3, 0, fresh)}, 4);
  EXPECT_EQ(fetched(outvoted, 2), std::vector<uint32_t>{0});
  EXPECT_TRUE(fetched(outvoted, 1).empty());
}

TEST(StateElection, ShapeMismatchesNameTheTensor) {
  const std::vector<wire::SyncEntry> s = {entry("a", 1), entry("b", 2)};
  const Election keys = elect({member(1, 1, s), member(2, 1, s), member(3, 1, {entry("a", 1)})}, 4);
  EXPECT_EQ(keys.byPeer.at(3).status.code(), ecclStateMismatch);
  EXPECT_NE(keys.byPeer.at(3).status.message().find("\"b\""), std::string::npos);
  EXPECT_TRUE(keys.byPeer.at(3).fetch.empty()) << "never overwritten with another shape";
  const Election extra = elect({member(1, 1, s), member(2, 1, s),
                                member(3, 1, {entry("a", 1), entry("b", 2), entry("z", 0)})}, 4);
  EXPECT_NE(extra.byPeer.at(3).status.message().find("\"z\""), std::string::npos);
  const Election dtype = elect({member(1, 1, s), member(2, 1, s),
                                member(3, 1, {entry("a", 1), entry("b", 2, 10, ecclFloat64)})}, 4);
  EXPECT_NE(dtype.byPeer.at(3).status.message().find("float64"), std::string::npos);
  const Election count = elect({member(1, 1, s), member(2, 1, s),
                                member(3, 1, {entry("a", 1, 11), entry("b", 2)})}, 4);
  EXPECT_EQ(count.byPeer.at(3).status.code(), ecclStateMismatch);
  EXPECT_NE(count.byPeer.at(3).status.message().find("\"a\""), std::string::npos);
  EXPECT_TRUE(count.byPeer.at(1).status.isOk());
}

TEST(StateElection, StrategyRules) {
  const std::vector<wire::SyncEntry> x = {entry("w", 7)}, y = {entry("w", 8)};
  // Send-only with the losing content is refused; with the winning one it serves.
  Election e = elect({member(1, 1, x, {}, ecclSyncSendOnly), member(2, 1, y), member(3, 1, y)}, 4);
  EXPECT_EQ(e.byPeer.at(1).status.code(), ecclStateMismatch);
  EXPECT_NE(e.byPeer.at(1).status.message().find("send-only"), std::string::npos);
  e = elect({member(1, 1, y, {}, ecclSyncSendOnly), member(2, 1, x, {}, ecclSyncReceiveOnly)}, 4);
  EXPECT_EQ(e.byPeer.at(2).sources, std::vector<uint64_t>{1});
  // Receive-only members neither vote nor serve, even when they are many.
  e = elect({member(1, 1, y), member(2, 1, x, {}, ecclSyncReceiveOnly),
             member(3, 1, x, {}, ecclSyncReceiveOnly)}, 4);
  EXPECT_EQ(fetched(e, 2), std::vector<uint32_t>{0});
  EXPECT_EQ(e.byPeer.at(2).fetch[0].hash, 8u);
  for (const auto& [peer, a] : e.byPeer) {
    if (peer != 1) {
      EXPECT_TRUE(a.receivers.empty()) << peer;
    }
  }
  // Nobody who could serve: everyone is refused.
  e = elect({member(1, 1, x, {}, ecclSyncReceiveOnly), member(2, 1, y, {}, ecclSyncReceiveOnly)}, 4);
  EXPECT_EQ(e.byPeer.at(1).status.code(), ecclStateMismatch);
  EXPECT_EQ(e.byPeer.at(2).status.code(), ecclStateMismatch);
}

TEST(StateElection, DivergentTensorsAreNeverComparedOrFetched) {
  const Election e = elect({member(1, 1, {entry("w", 1), entry("rng", 5, 4, ecclUint64, true)}),
                            member(2, 1, {entry("w", 1), entry("rng", 6, 4, ecclUint64, true)}),
                            member(3, 1, {entry("rng", 7, 99, ecclInt8, true), entry("w", 1)})},
                           4);
  for (uint64_t p : {1, 2, 3}) {
    EXPECT_TRUE(e.byPeer.at(p).status.isOk()) << e.byPeer.at(p).status.message();
    EXPECT_TRUE(e.byPeer.at(p).fetch.empty());
  }
}

TEST(StateElection, SourcesAreCappedAndRotated) {
  const std::vector<wire::SyncEntry> good = {entry("w", 1)}, bad = {entry("w", 2)};
  std::vector<Manifest> m;
  for (uint64_t p = 1; p <= 6; ++p) m.push_back(member(p, 3, good, 2));
  for (uint64_t p = 7; p <= 9; ++p) m.push_back(member(p, 3, bad, 2, ecclSyncReceiveOnly));
  const Election e = elect(m, 4);
  EXPECT_EQ(e.byPeer.at(7).sources, (std::vector<uint64_t>{1, 2, 3, 4}));
  EXPECT_EQ(e.byPeer.at(8).sources, (std::vector<uint64_t>{2, 3, 4, 5}));
  EXPECT_EQ(e.byPeer.at(9).sources, (std::vector<uint64_t>{3, 4, 5, 6}));
  size_t served = 0;
  for (uint64_t p = 1; p <= 6; ++p) served += e.byPeer.at(p).receivers.size();
  EXPECT_EQ(served, 12u);
  EXPECT_EQ(e.byPeer.at(1).receivers, std::vector<uint64_t>{7});
  EXPECT_EQ(e.byPeer.at(4).receivers, (std::vector<uint64_t>{7, 8, 9}));
}

TEST(StateElection, DuplicateNamesAreRefused) {
  const Election e = elect({member(1, 1, {entry("w", 1), entry("w", 2)}), member(2, 1, {entry("w", 1)})}, 4);
  EXPECT_EQ(e.byPeer.at(1).status.code(), ecclInvalidArgument);
  EXPECT_TRUE(e.byPeer.at(2).status.isOk());
}

}  // namespace
}  // namespace eccl::state
