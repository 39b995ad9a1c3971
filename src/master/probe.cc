// The master's side of ecclCommOptimizeTopology (docs/topology.md): the
// probe schedule, the bandwidth matrix and the ring it picks.
#include <fmt/format.h>

#include <algorithm>

#include "common/log.h"
#include "master/membership.h"
#include "topology/ring_order.h"

namespace eccl::master {
namespace {

// Round-robin tournament (the circle method): n players meet pairwise in
// n - 1 rounds (n rounds when n is odd, each sitting out once). Entry
// [round][player] is the partner, or -1 for a round off.
std::vector<std::vector<int>> roundRobin(int n) {
  const int m = n % 2 == 0 ? n : n + 1;  // player n, if any, is "sits out"
  std::vector<int> seat(m);
  for (int i = 0; i < m; ++i) seat[i] = i;
  std::vector<std::vector<int>> rounds;
  for (int r = 0; r + 1 < m; ++r) {
    std::vector<int> partner(n, -1);
    for (int i = 0; i < m / 2; ++i) {
      const int a = seat[i], b = seat[m - 1 - i];
      if (a < n && b < n) {
        partner[a] = b;
        partner[b] = a;
      }
    }
    rounds.push_back(std::move(partner));
    std::rotate(seat.begin() + 1, seat.end() - 1, seat.end());  // seat 0 stays
  }
  return rounds;
}

std::string megabytes(double bytesPerSecond) { return fmt::format("{:.1f}", bytesPerSecond / 1e6); }

}  // namespace

std::map<uint64_t, std::string> Membership::addressKeys(const std::vector<uint64_t>& members) const {
  std::map<std::string, int> perHost;
  for (uint64_t id : members) ++perHost[peers_.at(id).host];
  std::map<uint64_t, std::string> keys;
  for (uint64_t id : members) {
    const Peer& p = peers_.at(id);
    if (perHost[p.host] == 1) {
      keys[id] = p.host;
    } else {
      keys[id] = p.host.find(':') != std::string::npos ? fmt::format("[{}]:{}", p.host, p.port)
                                                        : fmt::format("{}:{}", p.host, p.port);
    }
  }
  return keys;
}

std::set<uint32_t> Membership::memberGroups() const {
  std::set<uint32_t> groups;
  for (const auto& [id, p] : peers_) {
    if (p.state == State::kMember) groups.insert(p.group);
  }
  return groups;
}

std::vector<uint64_t> Membership::ringOrder(uint32_t group) const {
  std::vector<uint64_t> ids = groupMembers(group);
  std::sort(ids.begin(), ids.end(),
            [&](uint64_t a, uint64_t b) { return peers_.at(a).admitted < peers_.at(b).admitted; });
  return ids;
}

void Membership::startProbe(std::vector<Outgoing>& out) {
  const auto now = Clock::now();
  const std::set<uint32_t> groups = memberGroups();
  for (uint32_t g : groups) {
    if (const size_t n = groupMembers(g).size(); n > wire::kMaxProbeMembers) {
      failProbe(fmt::format("peer group {} has {} members; ecclCommOptimizeTopology probes groups "
                            "of at most {}", g, n, wire::kMaxProbeMembers),
                ecclInvalidUsage, out);
      return;
    }
  }
  Probe probe;
  probe.session = nextProbeSession_++;
  probe.started = now;
  std::map<uint64_t, std::vector<wire::RingPeer>> plans;
  size_t maxRounds = 0;
  for (uint32_t g : groups) {
    const std::vector<uint64_t> members = ringOrder(g);
    const std::map<uint64_t, std::string> keys = addressKeys(members);
    probe.keys.insert(keys.begin(), keys.end());
    const auto known = [&](uint64_t a, uint64_t b) {
      return bandwidth_.count({keys.at(a), keys.at(b)}) != 0 &&
             bandwidth_.count({keys.at(b), keys.at(a)}) != 0;
    };
    size_t rounds = 0;
    for (const std::vector<int>& partner : roundRobin(static_cast<int>(members.size()))) {
      bool any = false;
      for (size_t i = 0; i < members.size(); ++i) {
        any = any || (partner[i] >= 0 && !known(members[i], members[partner[i]]));
      }
      if (!any) continue;  // every pair of this round was measured before
      ++rounds;
      for (size_t i = 0; i < members.size(); ++i) {
        wire::RingPeer to;  // peerId 0: sits out this round
        if (partner[i] >= 0 && !known(members[i], members[partner[i]])) {
          const uint64_t other = members[partner[i]];
          to = {other, peers_.at(other).host, peers_.at(other).port};
          probe.partners[members[i]].insert(other);
        }
        plans[members[i]].push_back(std::move(to));
      }
    }
    for (uint64_t id : members) plans[id];  // members with nothing to measure report at once
    maxRounds = std::max(maxRounds, rounds);
  }
  probe.deadline = now +
                   maxRounds * (options_.probeTime + std::chrono::milliseconds(wire::kProbeRoundSlackMs)) +
                   kProbeReportGrace;
  for (auto& [id, rounds] : plans) {
    probe.awaiting.insert(id);
    out.push_back({id, wire::ProbePlan{epoch_, probe.session,
                                       static_cast<uint32_t>(options_.probeTime.count()),
                                       std::move(rounds)}});
  }
  ECCL_LOG(kInfo, kMaster, "bandwidth probe #{}: {} members, {} rounds of {} ms", probe.session,
           probe.awaiting.size(), maxRounds, options_.probeTime.count());
  probe_ = std::move(probe);
  if (probe_->awaiting.empty()) finishProbe(out);
}

void Membership::onProbeReport(uint64_t peerId, const wire::ProbeReport& m,
                               std::vector<Outgoing>& out) {
  if (!probe_ || m.epoch != epoch_ || m.session != probe_->session ||
      probe_->awaiting.count(peerId) == 0) {
    return;  // a report of a probe that already ended
  }
  if (m.result != ecclSuccess) {
    failProbe(fmt::format("peer {} could not finish its bandwidth probes (result {}, see its "
                          "log); call ecclCommOptimizeTopology again", peerId, m.result),
              static_cast<ecclResult_t>(m.result), out);
    return;
  }
  // A member reports only what it received from its own partners.
  const std::set<uint64_t>& partners = probe_->partners[peerId];
  for (const wire::ProbeRate& r : m.rates) {
    if (partners.count(r.from) == 0) continue;
    bandwidth_[{probe_->keys.at(r.from), probe_->keys.at(peerId)}] =
        static_cast<double>(r.bytesPerSecond);
  }
  probe_->awaiting.erase(peerId);
  if (probe_->awaiting.empty()) finishProbe(out);
}

void Membership::finishProbe(std::vector<Outgoing>& out) {
  const Probe probe = std::move(*probe_);
  probe_.reset();
  const std::set<uint32_t> groups = memberGroups();
  // The search runs on the master's thread, which also reads heartbeats:
  // all groups' searches together take at most a quarter failure timeout.
  size_t searched = 0;
  for (uint32_t g : groups) searched += groupMembers(g).size() > topology::kExactUpTo ? 1 : 0;
  topology::SolveOptions solve;
  if (searched > 0) {
    solve.budget = std::clamp(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  options_.failureTimeout / 4) / static_cast<int64_t>(searched),
                              std::chrono::milliseconds(5), solve.budget);
  }
  bool reordered = false;
  for (uint32_t g : groups) {
    const std::vector<uint64_t> members = ringOrder(g);
    const size_t n = members.size();
    topology::Matrix bw(n, std::vector<double>(n, 0.0));
    std::string table = fmt::format("group {} bandwidth (MB/s, row sends to column):", g);
    for (size_t i = 0; i < n; ++i) {
      table += fmt::format("\n  peer {:<5} {:>21}", members[i], probe.keys.at(members[i]));
      for (size_t j = 0; j < n; ++j) {
        if (i == j) {
          table += fmt::format(" {:>8}", "-");
          continue;
        }
        auto it = bandwidth_.find({probe.keys.at(members[i]), probe.keys.at(members[j])});
        bw[i][j] = it != bandwidth_.end() ? it->second : 0.0;
        table += fmt::format(" {:>8}", megabytes(bw[i][j]));
      }
    }
    ECCL_LOG(kInfo, kMaster, "{}", table);
    std::vector<int> identity(n);
    for (size_t i = 0; i < n; ++i) identity[i] = static_cast<int>(i);
    const std::vector<int> order = topology::bestRing(bw, solve);
    const topology::RingScore before = topology::score(bw, identity);
    const topology::RingScore after = topology::score(bw, order);
    std::string ring;
    for (int k : order) ring += fmt::format("{}{}", ring.empty() ? "" : " -> ", members[k]);
    ECCL_LOG(kInfo, kMaster, "group {} ring: {} (slowest hop {} MB/s; admission order's {} MB/s)",
             g, ring, megabytes(after.bottleneck), megabytes(before.bottleneck));
    if (before < after) {  // a ring no better is not worth rewiring the links
      reordered = true;
      for (int k : order) peers_.at(members[k]).admitted = nextAdmission_++;
    }
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - probe.started);
  ECCL_LOG(kInfo, kMaster, "bandwidth probe #{} took {} ms", probe.session, ms.count());
  if (reordered) changedSinceEpoch_ = true;  // new rings: a new epoch rewires the links
  // Bounded: addresses no member has any more go first.
  if (bandwidth_.size() > kMaxBandwidthEntries) {
    std::set<std::string> present;
    for (const auto& [id, key] : probe.keys) present.insert(key);
    std::erase_if(bandwidth_, [&](const auto& kv) {
      return present.count(kv.first.first) == 0 || present.count(kv.first.second) == 0;
    });
    if (bandwidth_.size() > kMaxBandwidthEntries) bandwidth_.clear();
  }
  update(out);
}

void Membership::failProbe(const std::string& why, ecclResult_t result,
                           std::vector<Outgoing>& out) {
  ECCL_LOG(kWarn, kMaster, "ecclCommOptimizeTopology fails: {}", why);
  for (const auto& [id, p] : peers_) {
    if (p.state != State::kMember) continue;
    wire::Topology t;
    t.result = static_cast<uint32_t>(result);
    t.epoch = epoch_;
    t.peerGroup = p.group;
    t.message = why;
    out.push_back({id, std::move(t)});
  }
  probe_.reset();
  votes_.clear();
  voteDeadline_.reset();
  optimizeAsked_ = false;
}

void Membership::expireProbe(Clock::time_point now, std::vector<Outgoing>& out) {
  if (!probe_ || now < probe_->deadline) return;
  const auto limit =
      std::chrono::duration_cast<std::chrono::milliseconds>(probe_->deadline - probe_->started);
  const std::set<uint64_t> late = probe_->awaiting;
  for (uint64_t id : late) {
    // The first removal fails the probe; the others were as late.
    kick(id, fmt::format("did not report its bandwidth probes within {} ms", limit.count()), out);
  }
}

}  // namespace eccl::master
