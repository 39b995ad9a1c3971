// Membership: the master's state machine, free of sockets so it can be unit
// tested. The server feeds it events (register, message, disconnect) and
// delivers the messages it returns.
//
// Rules (DESIGN.md §2, §8):
//  - The first peer of an empty world is admitted at once; later ones stay
//    pending until every member has voted (ecclCommUpdateTopology).
//  - The epoch is global and only moves when the membership changed. Each
//    peer group gets its own ring, ordered by admission, so members keep
//    their ranks when newcomers join (peers admitted together: by peer id).
//  - For each (group, tag, seq) the master compares the members' op
//    descriptors and collects their completions: it answers every member
//    with one verdict, success only when all of them finished successfully,
//    and a failure verdict at once when any member failed or disagreed.
//  - Failure detection (tick): a peer silent for the failure timeout is
//    kicked (told, disconnected, removed). Removing a member fails every op
//    of its group without a verdict, and every op its group begins until the
//    next epoch, with ecclPeerLost.
//  - Suspect reports (a member stuck in an op: nothing from its left
//    neighbour, or its right one takes nothing) are evidence, not verdicts.
//    The master waits half a failure timeout plus a heartbeat for heartbeats
//    to name a dead peer first. Then: a member that has not begun the op is
//    merely late, so the reports are dropped. A member that is neither stuck
//    (no fresh report) nor done is still working, i.e. slow: the master
//    keeps watching. Only when every member is stuck or done, all alive, is
//    the data path itself broken (a cut link): the suspect of the oldest
//    stall, nearest the break, is kicked.
//  - Insiders (docs/security.md): a Suspect counts only from a member about
//    its own ring neighbour (left when receiving, right when sending) in an
//    op it began (in a small op, collectives/small.h, also about the members
//    2^k places on or back, whom it has links with), or in a sync about another member of its group (transfers
//    run between any two; a sync goes on without the member removed); an announced op timeout below minOpTimeout is raised to
//    it; a member that has not voted voteTimeout after the first vote of an
//    update is removed, so no member blocks every group's epochs; a peer
//    may advertise only the address the master sees it at (unless
//    trustAdvertisedAddresses: NAT); a group holds at most kMaxRingPeers.
//  - Shared-state syncs (docs/state.md) are ops on wire::kSyncTag: members
//    send their manifests in parts; once every member's is complete the
//    master elects (state/elect) and sends each member its plan. A sync's
//    verdicts are per member: each gets the result it reported, once every
//    member is done; a member lost during a sync leaves the others to finish
//    (its receivers fetch from the other sources). A member's revision is
//    remembered after each successful sync.
//  - ecclCommOptimizeTopology (docs/topology.md) is an update whose vote asks
//    to optimize: once every member voted, the master first has each group
//    of at most wire::kMaxProbeMembers measure the bandwidths its matrix
//    lacks, in rounds of disjoint pairs (a round-robin schedule: n members,
//    at most n rounds). The matrix is keyed by address (host, or host:port
//    where members share a host), so a peer that rejoins from the same host
//    reuses its rows. With every report in, each group's ring is solved for
//    the best bottleneck (topology/ring_order.h), logged with the matrix,
//    and applied as an update. A member lost while probing fails the call
//    with ecclPeerLost on every member; the next call retries (measured
//    pairs are kept). A member that has not reported by the probe deadline
//    (rounds x (probe time + slack) + kProbeReportGrace) is removed.
//  - Op deadline: once a member has finished an op, the others must finish
//    (or fail) it within the smallest op timeout of the group, counted from
//    the latest member's finish; otherwise the op fails with ecclTimeout on
//    every member. Peers never give up on a verdict by themselves, so no
//    member can time out an op that the others complete.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "state/election.h"
#include "wire/control.h"

namespace eccl::master {

struct Outgoing {
  uint64_t peerId = 0;
  wire::ControlMessage msg;
  bool closeAfter = false;  // close the connection once the message is written
};

// Ops of one group the master tracks at once; a member that opens more (an
// honest one has at most a few per tag in flight) is removed.
inline constexpr size_t kMaxOpenOpsPerGroup = 4096;

class Membership {
 public:
  using Clock = std::chrono::steady_clock;

  struct Options {
    std::chrono::milliseconds heartbeatInterval{500};
    std::chrono::milliseconds failureTimeout{2000};
    std::chrono::milliseconds voteTimeout{60000};
    std::chrono::milliseconds minOpTimeout{1000};
    bool trustAdvertisedAddresses = false;
    size_t syncSources = 4;  // most sources a sync's receiver fetches from at once
    std::chrono::milliseconds probeTime{1000};  // each bandwidth probe round sends this long
  };
  // A probe's members must report within its rounds (each its probe time
  // plus wire::kProbeRoundSlackMs) and this.
  static constexpr std::chrono::seconds kProbeReportGrace{5};
  // Bandwidth entries kept; beyond it those of absent addresses are dropped.
  static constexpr size_t kMaxBandwidthEntries = 1u << 16;

  explicit Membership(Options options) : options_(std::move(options)) {}

  // A peer's Register, once its connection proved the token. observedHost
  // is the address the master sees it from, used when the peer advertises none.
  std::vector<Outgoing> onRegister(uint64_t peerId, const wire::Register& reg,
                                   const std::string& observedHost);
  // Any later message of a registered peer.
  std::vector<Outgoing> onMessage(uint64_t peerId, const wire::ControlMessage& msg);
  // The connection closed (graceful leave or death).
  std::vector<Outgoing> onDisconnect(uint64_t peerId);
  // Called periodically: heartbeat deaths and due Suspect decisions.
  std::vector<Outgoing> tick(Clock::time_point now);

  uint64_t epoch() const { return epoch_; }
  size_t memberCount() const;
  size_t pendingCount() const;
  bool isRegistered(uint64_t peerId) const { return peers_.count(peerId) != 0; }

 private:
  enum class State { kPending, kMember };
  struct Peer {
    State state = State::kPending;
    uint32_t group = 0;
    std::string host;
    uint16_t port = 0;
    uint64_t admitted = 0;  // admission order: ring position, so members keep their ranks
    Clock::time_point lastSeen{};
    std::chrono::milliseconds opTimeout{0};  // 0: none
    uint32_t segmentBytes = wire::kDefaultSegmentBytes;
    std::optional<uint64_t> syncedRevision;  // of its last successful sync
  };
  struct OpKey {
    uint32_t group;
    uint32_t tag;
    uint64_t seq;
    auto operator<=>(const OpKey&) const = default;
  };
  struct Silence {
    uint64_t suspect = 0;
    Clock::time_point since{};       // when the reporter's stall began
    Clock::time_point lastReport{};  // reports repeat while the stall lasts
  };
  struct OpEntry {
    std::optional<wire::OpDescriptor> desc;
    uint64_t descFrom = 0;
    std::set<uint64_t> began;
    std::set<uint64_t> done;
    bool verdictSent = false;
    std::map<uint64_t, Silence> silences;  // by reporter
    std::optional<Clock::time_point> decideAt;
    std::optional<Clock::time_point> deadline;  // set once a member finished it
    uint64_t openedBy = 0;                      // who reported it first
    // Syncs only: manifests as they arrive, then each member's reported result.
    std::map<uint64_t, state::Manifest> manifests;
    std::map<uint64_t, uint32_t> manifestParts;  // parts received, by member
    bool planned = false;
    uint64_t revision = 0;  // elected
    std::map<uint64_t, std::pair<uint32_t, std::string>> results;
  };

  void onVote(uint64_t peerId, const wire::Vote& m, std::vector<Outgoing>& out);
  // Bandwidth probing before an optimizing update.
  void startProbe(std::vector<Outgoing>& out);
  void onProbeReport(uint64_t peerId, const wire::ProbeReport& m, std::vector<Outgoing>& out);
  void finishProbe(std::vector<Outgoing>& out);
  void failProbe(const std::string& why, ecclResult_t result, std::vector<Outgoing>& out);
  void expireProbe(Clock::time_point now, std::vector<Outgoing>& out);
  // Matrix keys of a group's members (host, or host:port where they share one).
  std::map<uint64_t, std::string> addressKeys(const std::vector<uint64_t>& members) const;
  void expireVote(Clock::time_point now, std::vector<Outgoing>& out);
  // The member before (left) or after (right) peerId in its group's ring.
  std::optional<uint64_t> neighbour(uint64_t peerId, bool right) const;
  // Whether `other` is 2^k (k >= 1) places after (right) or before peerId in
  // `ring`: the far links of small ops.
  static bool hopPeer(const std::vector<uint64_t>& ring, uint64_t peerId, uint64_t other, bool right);
  void onOpBegin(uint64_t peerId, const wire::OpBegin& m, std::vector<Outgoing>& out);
  void onOpDone(uint64_t peerId, const wire::OpDone& m, std::vector<Outgoing>& out);
  void onSuspect(uint64_t peerId, const wire::Suspect& m, std::vector<Outgoing>& out);
  void onSyncManifest(uint64_t peerId, const wire::SyncManifest& m, std::vector<Outgoing>& out);
  // Elects once every member's manifest is in; per-member verdicts once all are done.
  void advanceSync(const OpKey& key, OpEntry& entry, std::vector<Outgoing>& out);
  void decideSilence(const OpKey& key, OpEntry& entry, Clock::time_point now,
                     std::vector<Outgoing>& out);
  Clock::duration stallGrace() const {
    return options_.failureTimeout / 2 + options_.heartbeatInterval;
  }
  void kick(uint64_t peerId, const std::string& why, std::vector<Outgoing>& out);
  void remove(uint64_t peerId, std::vector<Outgoing>& out);
  void expireOps(Clock::time_point now, std::vector<Outgoing>& out);
  std::optional<std::chrono::milliseconds> groupOpTimeout(uint32_t group) const;
  void maybeCompleteVote(std::vector<Outgoing>& out);
  void update(std::vector<Outgoing>& out);
  std::vector<uint64_t> groupMembers(uint32_t group) const;
  std::vector<uint64_t> ringOrder(uint32_t group) const;  // members by admission: ring order
  std::set<uint32_t> memberGroups() const;                // groups with at least one member
  // The op's entry, or null when the report is stale or the reporter opened
  // more ops than any honest member could (it is then removed).
  OpEntry* opFor(uint64_t peerId, const OpKey& key, std::vector<Outgoing>& out);
  void finish(const OpKey& key);  // every member is done: forget it, remember the seq
  void sendVerdict(const OpKey& key, OpEntry& entry, ecclResult_t result,
                   const std::string& message, std::vector<Outgoing>& out);
  bool allDone(const OpKey& key, const OpEntry& entry) const;

  Options options_;
  std::map<uint64_t, Peer> peers_;
  std::set<uint64_t> votes_;
  bool optimizeAsked_ = false;  // some vote of this update asked to optimize
  struct Probe {
    uint64_t session = 0;
    Clock::time_point deadline{};
    std::map<uint64_t, std::set<uint64_t>> partners;  // whose rates each member reports
    std::map<uint64_t, std::string> keys;             // matrix key of every probed member
    std::set<uint64_t> awaiting;                      // members yet to report
    Clock::time_point started{};
  };
  std::optional<Probe> probe_;
  uint64_t nextProbeSession_ = 1;
  // Measured bytes/s from one address to another (0: could not reach it).
  std::map<std::pair<std::string, std::string>, double> bandwidth_;
  std::optional<Clock::time_point> voteDeadline_;  // set by the first vote of an update
  std::map<OpKey, OpEntry> ops_;
  uint64_t epoch_ = 0;
  uint64_t nextAdmission_ = 1;
  bool changedSinceEpoch_ = false;
  std::set<uint32_t> brokenGroups_;  // lost a member this epoch: their ops fail at once
  // Per (group, tag): the newest seq every member finished (ops of a tag end
  // in order). Later reports of such an op are stale, never a new op.
  std::map<std::pair<uint32_t, uint32_t>, uint64_t> finished_;
};

}  // namespace eccl::master
