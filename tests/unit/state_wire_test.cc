// The shared-state sync messages (wire/control.h): round trips, the split of
// manifests and plans of thousands of tensors into bounded parts, and strict
// decoding.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "wire/control.h"

namespace eccl::wire {
namespace {

template <typename T>
T roundTrip(const T& m) {
  const std::vector<std::byte> bytes = encodeControl(m);
  Result<ControlHeader> h = decodeControlHeader(std::span(bytes).first(kControlHeaderBytes));
  EXPECT_TRUE(h.hasValue());
  EXPECT_LE(h->payloadBytes, kMaxPeerPayload);
  Result<ControlMessage> back = decodeControl(h->type, std::span(bytes).subspan(kControlHeaderBytes));
  EXPECT_TRUE(back.hasValue()) << (back ? "" : back.status().message());
  return std::get<T>(*back);
}

std::vector<SyncEntry> manyEntries(size_t n) {
  std::vector<SyncEntry> v;
  for (size_t i = 0; i < n; ++i) {
    // Names up to the limit, so parts hold the fewest entries.
    v.push_back({std::string(i % 7 == 0 ? kMaxTensorNameBytes : 20, 'a' + i % 26) + std::to_string(i),
                 static_cast<uint8_t>(i % ecclNumTypes), i * 1000 + 1, i * 0x9e3779b97f4a7c15ull,
                 i % 5 == 0});
    v.back().name.resize(std::min(v.back().name.size(), kMaxTensorNameBytes));
  }
  return v;
}

TEST(StateWire, ManifestSplitsIntoBoundedPartsAndRoundTrips) {
  const auto entries = manyEntries(5000);
  const auto parts = splitManifest(3, 7, 42, ecclSyncReceiveOnly, entries);
  ASSERT_GT(parts.size(), 10u);
  std::vector<SyncEntry> joined;
  for (size_t i = 0; i < parts.size(); ++i) {
    EXPECT_LE(encodeControl(parts[i]).size() - kControlHeaderBytes, kMaxSyncPartBytes);
    const SyncManifest back = roundTrip(parts[i]);
    EXPECT_EQ(back.part, i);
    EXPECT_EQ(back.parts, parts.size());
    EXPECT_EQ(back.totalEntries, entries.size());
    EXPECT_EQ(back.revision, 42u);
    EXPECT_EQ(back.strategy, ecclSyncReceiveOnly);
    joined.insert(joined.end(), back.entries.begin(), back.entries.end());
  }
  EXPECT_EQ(joined, entries);
  // An empty state is one part with no entries.
  const auto empty = splitManifest(1, 1, 0, 0, {});
  ASSERT_EQ(empty.size(), 1u);
  EXPECT_TRUE(roundTrip(empty[0]).entries.empty());
}

TEST(StateWire, PlanSplitsIntoBoundedParts) {
  SyncPlan whole;
  whole.epoch = 2;
  whole.seq = 9;
  whole.revision = 5;
  whole.message = "ok";
  whole.sources = {11, 12, 13};
  whole.receivers = {14};
  for (uint32_t i = 0; i < 20000; ++i) whole.fetch.push_back({i, i * 31ull});
  const auto parts = splitPlan(whole);
  ASSERT_GT(parts.size(), 10u);
  std::vector<SyncFetch> joined;
  for (size_t i = 0; i < parts.size(); ++i) {
    const SyncPlan back = roundTrip(parts[i]);
    EXPECT_EQ(back.part, i);
    EXPECT_EQ(back.revision, 5u);
    EXPECT_EQ(back.sources, i == 0 ? whole.sources : std::vector<uint64_t>{});
    joined.insert(joined.end(), back.fetch.begin(), back.fetch.end());
  }
  EXPECT_EQ(joined, whole.fetch);
  whole.fetch.clear();
  EXPECT_EQ(splitPlan(whole).size(), 1u);
}

TEST(StateWire, DecodersAreStrict) {
  SyncManifest m = splitManifest(1, 1, 0, 0, manyEntries(3))[0];
  m.strategy = ecclNumSyncStrategies;
  auto bytes = encodeControl(m);
  EXPECT_FALSE(decodeControl(MsgType::kSyncManifest, std::span(bytes).subspan(kControlHeaderBytes))
                   .hasValue());
  m.strategy = 0;
  m.part = 1;  // part >= parts
  bytes = encodeControl(m);
  EXPECT_FALSE(decodeControl(MsgType::kSyncManifest, std::span(bytes).subspan(kControlHeaderBytes))
                   .hasValue());
  m.part = 0;
  m.entries[0].name = std::string(kMaxTensorNameBytes + 1, 'x');
  bytes = encodeControl(m);
  EXPECT_FALSE(decodeControl(MsgType::kSyncManifest, std::span(bytes).subspan(kControlHeaderBytes))
                   .hasValue());
  m.entries[0].name = "w";
  m.entries[0].dtype = ecclNumTypes;
  bytes = encodeControl(m);
  EXPECT_FALSE(decodeControl(MsgType::kSyncManifest, std::span(bytes).subspan(kControlHeaderBytes))
                   .hasValue());
  // A count of entries larger than the bytes that follow is refused before any allocation.
  m = splitManifest(1, 1, 0, 0, {})[0];
  m.totalEntries = 1000;
  bytes = encodeControl(m);
  bytes[kControlHeaderBytes + 41 - 4] = std::byte{0xe8};  // entries.size() = 1000, no entries
  bytes[kControlHeaderBytes + 41 - 3] = std::byte{0x03};
  EXPECT_FALSE(decodeControl(MsgType::kSyncManifest, std::span(bytes).subspan(kControlHeaderBytes))
                   .hasValue());
}

}  // namespace
}  // namespace eccl::wire
