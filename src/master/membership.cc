#include "master/membership.h"

#include <fmt/format.h>

#include <algorithm>

#include "collectives/schedule.h"
#include "common/dtype.h"
#include "common/log.h"

namespace eccl::master {
namespace {


}  // namespace

size_t Membership::memberCount() const {
  return static_cast<size_t>(std::count_if(peers_.begin(), peers_.end(), [](const auto& kv) {
    return kv.second.state == State::kMember;
  }));
}

size_t Membership::pendingCount() const { return peers_.size() - memberCount(); }

std::vector<Outgoing> Membership::onRegister(uint64_t peerId, const wire::Register& reg,
                                             const std::string& observedHost) {
  std::vector<Outgoing> out;
  auto refuse = [&](ecclResult_t r, std::string msg) {
    ECCL_LOG(kWarn, kMaster, "refused peer {} ({}): {}", peerId, observedHost, msg);
    out.push_back({peerId, wire::RegisterReply{static_cast<uint32_t>(r), 0, std::move(msg)}, true});
  };
  if (peers_.count(peerId) != 0) {
    refuse(ecclInvalidUsage, "registered twice on one connection");
    return out;
  }
  if (reg.dataPort == 0) {
    refuse(ecclInvalidArgument, "register without a data port");
    return out;
  }
  if (!reg.dataHost.empty() && reg.dataHost != observedHost && !options_.trustAdvertisedAddresses) {
    // Otherwise a member could point its neighbours' data links anywhere.
    refuse(ecclInvalidArgument,
           fmt::format("advertised data address '{}' is not the address the master sees this "
                       "peer at ({}); leave it unset, or start the master with advertised "
                       "addresses trusted (NAT)", reg.dataHost, observedHost));
    return out;
  }
  if (const size_t n = std::count_if(peers_.begin(), peers_.end(), [&](const auto& kv) {
        return kv.second.group == reg.peerGroup;
      });
      n >= wire::kMaxRingPeers) {
    refuse(ecclInvalidUsage, fmt::format("peer group {} is full ({} peers)", reg.peerGroup, n));
    return out;
  }
  Peer p;
  p.group = reg.peerGroup;
  p.host = reg.dataHost.empty() ? observedHost : reg.dataHost;
  p.port = reg.dataPort;
  p.lastSeen = Clock::now();
  p.segmentBytes = reg.segmentBytes;
  p.opTimeout = std::chrono::milliseconds(reg.opTimeoutMs);
  if (p.opTimeout.count() > 0 && p.opTimeout < options_.minOpTimeout) {
    // One member's tiny timeout would fail every op of its group.
    ECCL_LOG(kInfo, kMaster, "peer {} announced an op timeout of {} ms; raised to the floor of {} ms",
             peerId, p.opTimeout.count(), options_.minOpTimeout.count());
    p.opTimeout = options_.minOpTimeout;
  }
  peers_.emplace(peerId, p);
  ECCL_LOG(kInfo, kMaster, "peer {} registered (group {}, data {}:{}), pending", peerId, p.group,
           p.host, p.port);
  out.push_back({peerId, wire::RegisterReply{ecclSuccess, peerId, ""}});
  if (memberCount() == 0) update(out);  // the first peer is admitted at once
  return out;
}

std::vector<Outgoing> Membership::onMessage(uint64_t peerId, const wire::ControlMessage& msg) {
  std::vector<Outgoing> out;
  auto it = peers_.find(peerId);
  if (it == peers_.end()) return out;
  it->second.lastSeen = Clock::now();
  const bool member = it->second.state == State::kMember;
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, wire::Vote>) {
          if (member) onVote(peerId, m, out);
        } else if constexpr (std::is_same_v<T, wire::PendingQuery>) {
          out.push_back({peerId, wire::PendingReply{static_cast<uint32_t>(pendingCount())}});
        } else if constexpr (std::is_same_v<T, wire::OpBegin>) {
          if (member) onOpBegin(peerId, m, out);
        } else if constexpr (std::is_same_v<T, wire::OpDone>) {
          if (member) onOpDone(peerId, m, out);
        } else if constexpr (std::is_same_v<T, wire::Leave>) {
          ECCL_LOG(kInfo, kMaster, "peer {} leaves", peerId);
          remove(peerId, out);
        } else if constexpr (std::is_same_v<T, wire::Heartbeat>) {
          out.push_back({peerId, wire::Heartbeat{}});  // lastSeen was refreshed above
        } else if constexpr (std::is_same_v<T, wire::Suspect>) {
          if (member) onSuspect(peerId, m, out);
        } else if constexpr (std::is_same_v<T, wire::SyncManifest>) {
          if (member) onSyncManifest(peerId, m, out);
        } else if constexpr (std::is_same_v<T, wire::ProbeReport>) {
          if (member) onProbeReport(peerId, m, out);
        } else {
          ECCL_LOG(kWarn, kMaster, "peer {} sent unexpected {}", peerId,
                   wire::typeName(wire::typeOf(msg)));
        }
      },
      msg);
  return out;
}

std::vector<Outgoing> Membership::onDisconnect(uint64_t peerId) {
  std::vector<Outgoing> out;
  if (peers_.count(peerId) != 0) {
    ECCL_LOG(kInfo, kMaster, "peer {} disconnected", peerId);
    remove(peerId, out);
  }
  return out;
}

void Membership::kick(uint64_t peerId, const std::string& why, std::vector<Outgoing>& out) {
  ECCL_LOG(kWarn, kMaster, "peer {} is removed: {}", peerId, why);
  out.push_back({peerId, wire::Kick{why}, true});
  remove(peerId, out);
}

void Membership::remove(uint64_t peerId, std::vector<Outgoing>& out) {
  auto it = peers_.find(peerId);
  if (it == peers_.end()) return;
  const bool wasMember = it->second.state == State::kMember;
  const uint32_t group = it->second.group;
  peers_.erase(it);
  votes_.erase(peerId);
  if (!wasMember) return;
  changedSinceEpoch_ = true;
  if (probe_) {
    failProbe(fmt::format("peer {} left during bandwidth probing; call "
                          "ecclCommOptimizeTopology again", peerId), ecclPeerLost, out);
  }
  brokenGroups_.insert(group);
  for (uint64_t id : groupMembers(group)) out.push_back({id, wire::MemberLost{epoch_, peerId}});
  // The ring lost a link: no op of the group without a verdict can finish.
  // A sync goes on without the member (its receivers use the other sources).
  for (auto op = ops_.begin(); op != ops_.end();) {
    const OpKey key = op->first;
    OpEntry& e = op->second;
    ++op;
    e.done.erase(peerId);
    if (key.group == group && key.tag == wire::kSyncTag && !e.verdictSent) {
      e.manifests.erase(peerId);
      e.manifestParts.erase(peerId);
      e.results.erase(peerId);
      advanceSync(key, e, out);
      continue;
    }
    if (key.group == group && !e.verdictSent) {
      sendVerdict(key, e, ecclPeerLost, fmt::format("peer {} left the group during the op", peerId),
                  out);
    }
    if (allDone(key, e)) finish(key);
  }
  if (memberCount() == 0) {
    if (pendingCount() > 0) update(out);  // nobody is left to vote
  } else {
    maybeCompleteVote(out);
  }
}

std::vector<Outgoing> Membership::tick(Clock::time_point now) {
  std::vector<Outgoing> out;
  std::vector<uint64_t> silent;
  for (const auto& [id, p] : peers_) {
    if (now - p.lastSeen > options_.failureTimeout) silent.push_back(id);
  }
  for (uint64_t id : silent) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - peers_.at(id).lastSeen);
    kick(id, fmt::format("no heartbeat for {} ms (failure timeout {} ms)", ms.count(),
                         options_.failureTimeout.count()), out);
  }
  std::vector<OpKey> due;
  for (const auto& [key, e] : ops_) {
    if (!e.verdictSent && e.decideAt && now >= *e.decideAt) due.push_back(key);
  }
  for (const OpKey& key : due) {
    auto op = ops_.find(key);  // an earlier decision may have ended it
    if (op != ops_.end() && !op->second.verdictSent) decideSilence(key, op->second, now, out);
  }
  expireOps(now, out);
  expireVote(now, out);
  expireProbe(now, out);
  return out;
}

void Membership::expireOps(Clock::time_point now, std::vector<Outgoing>& out) {
  for (auto& [key, e] : ops_) {
    if (e.verdictSent || !e.deadline || now < *e.deadline) continue;
    // Name a few; a group of thousands must not make a message of thousands.
    constexpr size_t kNamed = 8;
    std::string missing;
    size_t count = 0;
    for (uint64_t id : groupMembers(key.group)) {
      if (e.done.count(id) != 0) continue;
      if (count++ < kNamed) {
        missing += fmt::format("{}peer {} ({})", missing.empty() ? "" : ", ", id,
                               e.began.count(id) != 0 ? "still in it" : "never began it");
      }
    }
    if (count > kNamed) missing += fmt::format(" and {} more", count - kNamed);
    const auto limit = groupOpTimeout(key.group).value_or(std::chrono::milliseconds(0));
    sendVerdict(key, e, ecclTimeout,
                fmt::format("tag {} op #{}: {} did not finish within the op timeout ({} ms) "
                            "after the others", key.tag, key.seq, missing, limit.count()),
                out);
    // As after a data-path timeout: the next update opens fresh links.
    changedSinceEpoch_ = true;
  }
}

std::optional<std::chrono::milliseconds> Membership::groupOpTimeout(uint32_t group) const {
  std::optional<std::chrono::milliseconds> limit;
  for (uint64_t id : groupMembers(group)) {
    const auto t = peers_.at(id).opTimeout;
    if (t.count() > 0 && (!limit || t < *limit)) limit = t;
  }
  return limit;
}

void Membership::onSuspect(uint64_t peerId, const wire::Suspect& m, std::vector<Outgoing>& out) {
  (void)out;
  if (m.epoch != epoch_) return;
  auto suspect = peers_.find(m.suspect);
  if (suspect == peers_.end() || suspect->second.state != State::kMember) return;  // already gone
  // Evidence counts only about the reporter's own neighbour in its own ring,
  // or in a shared-state sync (whose transfers run between any two members)
  // about a member of its own group: no member can get a peer of another
  // group (or, in a collective, a far one) removed.
  if (m.tag == wire::kSyncTag) {
    if (m.suspect == peerId || suspect->second.group != peers_.at(peerId).group) {
      ECCL_LOG(kInfo, kMaster, "peer {} reported peer {} in a sync, not a member of its group; "
               "ignored", peerId, m.suspect);
      return;
    }
  } else if (neighbour(peerId, m.sending) != m.suspect) {
    // A small op (collectives/small.h) also runs on links to the members 2^k
    // places on and back.
    const auto op = ops_.find(OpKey{peers_.at(peerId).group, m.tag, m.seq});
    const std::vector<uint64_t> ring = ringOrder(peers_.at(peerId).group);
    const bool small = op != ops_.end() && op->second.desc &&
                       collectives::smallPath(op->second.desc->count * dtypeSize(static_cast<ecclDataType_t>(
                                                  op->second.desc->dtype)),
                                              ring.size(), op->second.desc->codec != 0);
    if (!small || !hopPeer(ring, peerId, m.suspect, m.sending)) {
      ECCL_LOG(kInfo, kMaster, "peer {} reported peer {}, which is not its {} neighbour; ignored",
               peerId, m.suspect, m.sending ? "right" : "left");
      return;
    }
  }
  const OpKey key{peers_.at(peerId).group, m.tag, m.seq};
  auto op = ops_.find(key);
  // A report that crossed the op's end must not bring the op back; one about
  // an op the reporter never began is no evidence either.
  if (op == ops_.end() || op->second.verdictSent || op->second.began.count(peerId) == 0) return;
  OpEntry& e = op->second;
  const auto now = Clock::now();
  // The newest report describes the reporter's current stall.
  // The reporter's own figure orders the stalls: an insider can lie about it
  // and so get a neighbour of its own group removed (docs/security.md), never
  // anyone else.
  e.silences[peerId] = Silence{m.suspect, now - std::chrono::milliseconds(m.silentMs), now};
  if (!e.decideAt) {
    // Give heartbeats the time to name a dead or stopped peer first: its
    // silence began before the reporter's, so it is due by then.
    e.decideAt = now + stallGrace();
    ECCL_LOG(kInfo, kMaster, "peer {} is stuck {} peer {} for {} ms (tag {} op #{})", peerId,
             m.sending ? "sending to" : "waiting for", m.suspect, m.silentMs, m.tag, m.seq);
  }
}

void Membership::decideSilence(const OpKey& key, OpEntry& e, Clock::time_point now,
                               std::vector<Outgoing>& out) {
  e.decideAt.reset();
  const std::vector<uint64_t> members = groupMembers(key.group);
  for (uint64_t id : members) {
    if (e.began.count(id) == 0) {
      // Someone has not reached the op yet: the others wait for it, which is
      // no fault. Fresh reports start a new decision.
      ECCL_LOG(kInfo, kMaster, "tag {} op #{}: peer {} has not begun it; waiting", key.tag,
               key.seq, id);
      e.silences.clear();
      return;
    }
  }
  // Reports repeat every half failure timeout while a stall lasts: one that
  // missed two repeats describes a stall that ended.
  std::erase_if(e.silences, [&](const auto& kv) {
    return now - kv.second.lastReport > options_.failureTimeout ||
           peers_.count(kv.second.suspect) == 0;
  });
  for (uint64_t id : members) {
    if (e.silences.count(id) == 0 && e.done.count(id) == 0) {
      // Still working on the op, only slowly: nothing is broken. Watch on.
      if (!e.silences.empty()) e.decideAt = now + stallGrace();
      return;
    }
  }
  // Everyone is stuck (or done) and alive: the data path is broken. In a
  // ring starvation spreads downstream, so the oldest stall is nearest the break.
  const std::pair<const uint64_t, Silence>* first = nullptr;
  for (const auto& s : e.silences) {
    if (first == nullptr || s.second.since < first->second.since) first = &s;
  }
  if (first == nullptr) return;
  const uint64_t reporter = first->first, suspect = first->second.suspect;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - first->second.since);
  const std::string why = fmt::format("peer {} exchanged no data with peer {} for {} ms during tag "
                                      "{} op #{} while every member was alive and stuck (cut "
                                      "link?)", reporter, suspect, ms.count(), key.tag, key.seq);
  // A sync goes on without the removed member (its receivers fetch from the
  // other sources); any other op has lost a ring link and fails.
  if (key.tag != wire::kSyncTag) sendVerdict(key, e, ecclPeerLost, why, out);
  kick(suspect, why, out);
}

void Membership::onVote(uint64_t peerId, const wire::Vote& m, std::vector<Outgoing>& out) {
  if (votes_.empty()) voteDeadline_ = Clock::now() + options_.voteTimeout;
  votes_.insert(peerId);
  optimizeAsked_ = optimizeAsked_ || m.optimize;
  maybeCompleteVote(out);
}

void Membership::expireVote(Clock::time_point now, std::vector<Outgoing>& out) {
  if (probe_ || votes_.empty() || !voteDeadline_ || now < *voteDeadline_) return;
  std::vector<uint64_t> silent;
  for (const auto& [id, p] : peers_) {
    if (p.state == State::kMember && votes_.count(id) == 0) silent.push_back(id);
  }
  for (uint64_t id : silent) {
    // Removing the last holdout completes the update for everyone else.
    kick(id, fmt::format("did not call ecclCommUpdateTopology within {} ms of the first member",
                         options_.voteTimeout.count()),
         out);
  }
}

std::optional<uint64_t> Membership::neighbour(uint64_t peerId, bool right) const {
  auto it = peers_.find(peerId);
  if (it == peers_.end() || it->second.state != State::kMember) return std::nullopt;
  const std::vector<uint64_t> ring = ringOrder(it->second.group);
  if (ring.size() < 2) return std::nullopt;
  const size_t pos = static_cast<size_t>(std::find(ring.begin(), ring.end(), peerId) - ring.begin());
  return ring[(pos + (right ? 1 : ring.size() - 1)) % ring.size()];
}

bool Membership::hopPeer(const std::vector<uint64_t>& ring, uint64_t peerId, uint64_t other,
                         bool right) {
  const size_t n = ring.size();
  const size_t pos = static_cast<size_t>(std::find(ring.begin(), ring.end(), peerId) - ring.begin());
  if (pos == n) return false;
  for (size_t d = 2; d < n; d *= 2) {
    if (ring[(pos + (right ? d : n - d)) % n] == other) return true;
  }
  return false;
}

void Membership::maybeCompleteVote(std::vector<Outgoing>& out) {
  if (votes_.empty() || probe_) return;
  for (const auto& [id, p] : peers_) {
    if (p.state == State::kMember && votes_.count(id) == 0) return;
  }
  if (optimizeAsked_) {
    startProbe(out);
  } else {
    update(out);
  }
}

void Membership::update(std::vector<Outgoing>& out) {
  const bool changed = changedSinceEpoch_ || pendingCount() > 0;
  if (changed) {
    // An op of the old epoch without a verdict (a group that ran one while
    // another group's votes completed the update) can never finish: its
    // members wait for a verdict, so fail it before its bookkeeping goes.
    for (auto& [key, e] : ops_) {
      if (!e.verdictSent) {
        sendVerdict(key, e, ecclPeerLost,
                    fmt::format("the membership changed during the op (epoch {} ended); call "
                                "ecclCommUpdateTopology", epoch_),
                    out);
      }
    }
  }
  for (auto& [id, p] : peers_) {  // map order: peers admitted together go by id
    if (p.state == State::kPending) {
      p.state = State::kMember;
      p.admitted = nextAdmission_++;
    }
  }
  if (changed) {
    ++epoch_;
    ops_.clear();
    finished_.clear();
    brokenGroups_.clear();
    changedSinceEpoch_ = false;
    ECCL_LOG(kInfo, kMaster, "epoch {}: {} members", epoch_, memberCount());
  }
  std::map<uint32_t, std::map<uint64_t, wire::RingPeer>> byAdmission;
  for (const auto& [id, p] : peers_) byAdmission[p.group][p.admitted] = {id, p.host, p.port};
  std::map<uint32_t, std::vector<wire::RingPeer>> rings;
  for (const auto& [group, members] : byAdmission) {
    for (const auto& [order, peer] : members) rings[group].push_back(peer);
  }
  for (auto& [group, ring] : rings) {
    // The smallest segment any member announced: frames fit every member's limit.
    uint32_t segment = wire::kMaxSegmentBytes;
    for (const wire::RingPeer& r : ring) segment = std::min(segment, peers_.at(r.peerId).segmentBytes);
    for (uint32_t rank = 0; rank < ring.size(); ++rank) {
      wire::Topology t;
      t.result = ecclSuccess;
      t.epoch = epoch_;
      t.peerGroup = group;
      t.rank = rank;
      t.ring = ring;
      t.segmentBytes = segment;
      out.push_back({ring[rank].peerId, std::move(t)});
    }
  }
  votes_.clear();
  voteDeadline_.reset();
  optimizeAsked_ = false;
}

std::vector<uint64_t> Membership::groupMembers(uint32_t group) const {
  std::vector<uint64_t> ids;
  for (const auto& [id, p] : peers_) {
    if (p.state == State::kMember && p.group == group) ids.push_back(id);
  }
  return ids;
}

bool Membership::allDone(const OpKey& key, const OpEntry& entry) const {
  for (uint64_t id : groupMembers(key.group)) {
    if (entry.done.count(id) == 0) return false;
  }
  return true;
}

void Membership::sendVerdict(const OpKey& key, OpEntry& entry, ecclResult_t result,
                             const std::string& message, std::vector<Outgoing>& out) {
  entry.verdictSent = true;
  if (result != ecclSuccess) {
    ECCL_LOG(kWarn, kMaster, "group {} tag {} op {} fails: {}", key.group, key.tag, key.seq,
             message);
  }
  for (uint64_t id : groupMembers(key.group)) {
    out.push_back({id, wire::OpVerdict{epoch_, key.tag, key.seq,
                                       static_cast<uint32_t>(result), message}});
  }
}

Membership::OpEntry* Membership::opFor(uint64_t peerId, const OpKey& key,
                                       std::vector<Outgoing>& out) {
  if (auto it = ops_.find(key); it != ops_.end()) return &it->second;
  if (auto f = finished_.find({key.group, key.tag}); f != finished_.end() && key.seq <= f->second) {
    return nullptr;  // a report of an op that already ended everywhere
  }
  // Full: the member that opened the most ops nobody else joined is removed
  // (an honest member's next op must not pay for someone else's flood).
  std::map<uint64_t, size_t> lonely;  // opener -> ops only it reported
  size_t open = 0;
  for (const auto& [k, e] : ops_) {
    if (k.group != key.group) continue;
    ++open;
    std::set<uint64_t> who = e.began;
    who.insert(e.done.begin(), e.done.end());
    if (who.size() == 1 && who.count(e.openedBy) != 0) ++lonely[e.openedBy];
  }
  if (open >= kMaxOpenOpsPerGroup) {
    auto worst = std::max_element(lonely.begin(), lonely.end(),
                                  [](const auto& a, const auto& b) { return a.second < b.second; });
    const uint64_t culprit = worst != lonely.end() ? worst->first : peerId;
    kick(culprit, fmt::format("opened {} ops of group {} that no other member runs (at most {} "
                              "ops may be open at once)",
                              worst != lonely.end() ? worst->second : open, key.group,
                              kMaxOpenOpsPerGroup),
         out);
    if (culprit == peerId || peers_.count(peerId) == 0) return nullptr;
  }
  OpEntry& e = ops_[key];
  e.openedBy = peerId;
  return &e;
}

void Membership::finish(const OpKey& key) {
  uint64_t& mark = finished_[{key.group, key.tag}];
  mark = std::max(mark, key.seq);
  ops_.erase(key);
}

void Membership::onOpBegin(uint64_t peerId, const wire::OpBegin& m, std::vector<Outgoing>& out) {
  if (m.epoch != epoch_) return;  // a straggler of an old epoch; its op is gone
  const OpKey key{peers_.at(peerId).group, m.tag, m.seq};
  OpEntry* entry = opFor(peerId, key, out);
  if (entry == nullptr) return;
  OpEntry& e = *entry;
  e.began.insert(peerId);
  if (brokenGroups_.count(key.group) != 0 && !e.verdictSent) {
    sendVerdict(key, e, ecclPeerLost,
                "the group lost a member in this epoch; call ecclCommUpdateTopology", out);
    return;
  }
  const bool syncKind = m.desc.kind == static_cast<uint8_t>(wire::OpKind::kSync);
  if (syncKind != (m.tag == wire::kSyncTag) && !e.verdictSent) {
    sendVerdict(key, e, ecclInvalidUsage,
                fmt::format("peer {} began a {} on tag {}: syncs, and only syncs, use tag {}",
                            peerId, wire::describe(m.desc), m.tag, wire::kSyncTag),
                out);
    return;
  }
  if (!e.desc) {
    e.desc = m.desc;
    e.descFrom = peerId;
  } else if (!(*e.desc == m.desc) && !e.verdictSent) {
    sendVerdict(key, e, ecclInvalidUsage,
                fmt::format("peers disagree on tag {} op #{}: peer {} called {} but peer {} called {}",
                            m.tag, m.seq, e.descFrom, wire::describe(*e.desc), peerId, wire::describe(m.desc)),
                out);
  }
}

void Membership::onOpDone(uint64_t peerId, const wire::OpDone& m, std::vector<Outgoing>& out) {
  if (m.epoch != epoch_) {
    // The peer missed a topology update; tell it rather than let it wait.
    out.push_back({peerId, wire::OpVerdict{m.epoch, m.tag, m.seq, ecclPeerLost,
                                           fmt::format("the op belongs to epoch {} but the group "
                                                       "is at epoch {}; call "
                                                       "ecclCommUpdateTopology", m.epoch, epoch_)}});
    return;
  }
  const OpKey key{peers_.at(peerId).group, m.tag, m.seq};
  OpEntry* entry = opFor(peerId, key, out);
  if (entry == nullptr) return;
  OpEntry& e = *entry;
  e.done.insert(peerId);
  if (key.tag == wire::kSyncTag) {
    e.results[peerId] = {m.result, m.message};
    if (!e.verdictSent && !e.deadline) {
      if (const auto limit = groupOpTimeout(key.group)) e.deadline = Clock::now() + *limit;
    }
    advanceSync(key, e, out);
    return;
  }
  if (m.result == ecclPeerLost || m.result == ecclTimeout) {
    // A data link broke or stalled: even with everyone still alive, the next
    // update must open fresh links, so it starts a new epoch.
    changedSinceEpoch_ = true;
  }
  if (m.result != ecclSuccess && !e.verdictSent) {
    sendVerdict(key, e, static_cast<ecclResult_t>(m.result),
                fmt::format("peer {}: {}", peerId, m.message), out);
  }
  if (allDone(key, e)) {
    if (!e.verdictSent) sendVerdict(key, e, ecclSuccess, "", out);
    finish(key);
  } else if (!e.verdictSent) {
    if (const auto limit = groupOpTimeout(key.group)) e.deadline = Clock::now() + *limit;
  }
}

void Membership::onSyncManifest(uint64_t peerId, const wire::SyncManifest& m,
                                std::vector<Outgoing>& out) {
  if (m.epoch != epoch_) return;  // a straggler of an old epoch
  const OpKey key{peers_.at(peerId).group, wire::kSyncTag, m.seq};
  OpEntry* entry = opFor(peerId, key, out);
  if (entry == nullptr || entry->verdictSent || entry->planned) return;
  OpEntry& e = *entry;
  uint32_t& parts = e.manifestParts[peerId];
  state::Manifest& man = e.manifests[peerId];
  const bool first = parts == 0;
  std::string bad;
  if (e.began.count(peerId) == 0) {
    bad = "a manifest before its OpBegin";
  } else if (m.part != parts) {
    bad = fmt::format("manifest part {} where part {} was due", m.part, parts);
  } else if (!first && (m.revision != man.revision || m.strategy != man.strategy)) {
    bad = "manifest parts that disagree on the revision or strategy";
  } else if (man.entries.size() + m.entries.size() > m.totalEntries) {
    bad = fmt::format("more than the {} tensors its manifest announced", m.totalEntries);
  }
  if (!bad.empty()) {
    sendVerdict(key, e, ecclInvalidUsage, fmt::format("peer {} sent {}", peerId, bad), out);
    return;
  }
  if (first) {
    man.peerId = peerId;
    man.lastRevision = peers_.at(peerId).syncedRevision;
    man.revision = m.revision;
    man.strategy = static_cast<ecclSyncStrategy_t>(m.strategy);
    man.entries.reserve(m.totalEntries);
  }
  man.entries.insert(man.entries.end(), m.entries.begin(), m.entries.end());
  ++parts;
  if (parts == m.parts && man.entries.size() != m.totalEntries) {
    sendVerdict(key, e, ecclInvalidUsage,
                fmt::format("peer {} announced {} tensors and sent {}", peerId, m.totalEntries,
                            man.entries.size()),
                out);
    return;
  }
  if (parts == m.parts) parts = UINT32_MAX;  // complete
  advanceSync(key, e, out);
}

void Membership::advanceSync(const OpKey& key, OpEntry& e, std::vector<Outgoing>& out) {
  if (e.verdictSent) {  // failed as a whole (disagreement, deadline): forget it once all are done
    if (allDone(key, e)) finish(key);
    return;
  }
  const std::vector<uint64_t> members = groupMembers(key.group);
  if (!e.planned) {
    for (uint64_t id : members) {
      auto p = e.manifestParts.find(id);
      if (p == e.manifestParts.end() || p->second != UINT32_MAX) return;  // still coming
    }
    std::vector<state::Manifest> manifests;
    for (uint64_t id : members) manifests.push_back(std::move(e.manifests.at(id)));
    e.manifests.clear();
    const state::Election el = state::elect(manifests, options_.syncSources);
    e.planned = true;
    e.revision = el.revision;
    size_t receivers = 0;
    for (const auto& [id, a] : el.byPeer) {
      wire::SyncPlan plan;
      plan.epoch = epoch_;
      plan.seq = key.seq;
      plan.result = static_cast<uint32_t>(a.status.code());
      plan.message = a.status.message();
      plan.revision = el.revision;
      plan.sources = a.sources;
      plan.receivers = a.receivers;
      plan.fetch = a.fetch;
      receivers += a.fetch.empty() ? 0 : 1;
      for (wire::SyncPlan& part : wire::splitPlan(plan)) out.push_back({id, std::move(part)});
    }
    ECCL_LOG(kInfo, kMaster, "group {} sync #{}: revision {}, {} of {} members fetch", key.group,
             key.seq, el.revision, receivers, members.size());
  }
  for (uint64_t id : members) {
    if (e.done.count(id) == 0) return;
  }
  // Every member is done: each gets its own result.
  e.verdictSent = true;
  for (uint64_t id : members) {
    const auto& [result, message] = e.results.at(id);
    if (result == ecclSuccess) peers_.at(id).syncedRevision = e.revision;
    out.push_back({id, wire::OpVerdict{epoch_, key.tag, key.seq, result, message}});
  }
  finish(key);
}

}  // namespace eccl::master
