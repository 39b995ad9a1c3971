// Stateful libFuzzer target: the master's Membership driven by message
// sequences from several fake peers (registrations, votes, op begins and
// completions, stall reports, leaves, time passing). Invariants checked after
// every step:
//  - every message it emits encodes and decodes within the receiver's limits;
//  - each member gets at most one verdict per (epoch, tag, seq) of the
//    current epoch;
//  - no peer appears in two rings, nor twice in one;
//  - in every batch of probe plans, partners are mutual round by round.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <span>
#include <string>
#include <tuple>

#include "master/membership.h"

namespace {

using namespace eccl;
using master::Membership;

constexpr uint64_t kPeers = 6;

class Bytes {
 public:
  Bytes(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  bool empty() const { return pos_ >= n_; }
  uint8_t next() { return pos_ < n_ ? d_[pos_++] : 0; }

 private:
  const uint8_t* d_;
  size_t n_;
  size_t pos_ = 0;
};

struct Checker {
  std::set<std::tuple<uint64_t, uint64_t, uint32_t, uint64_t>> verdicts;  // peer, epoch, tag, seq
  std::map<uint64_t, wire::ProbePlan> lastPlan;  // each peer's newest, for reports

  void check(const std::vector<master::Outgoing>& out, uint64_t epoch) {
    std::map<uint64_t, uint32_t> ringOf;  // peer -> group, over this batch's Topologies
    std::map<uint64_t, const wire::ProbePlan*> plans;
    for (const master::Outgoing& o : out) {
      if (const auto* p = std::get_if<wire::ProbePlan>(&o.msg)) plans[o.peerId] = p;
    }
    for (const auto& [id, p] : plans) {
      for (size_t r = 0; r < p->rounds.size(); ++r) {
        const uint64_t other = p->rounds[r].peerId;
        if (other == 0) continue;
        auto it = plans.find(other);
        if (other == id || it == plans.end() || r >= it->second->rounds.size() ||
            it->second->rounds[r].peerId != id) {
          std::abort();  // a partner that does not probe back
        }
      }
      lastPlan[id] = *p;
    }
    for (const master::Outgoing& o : out) {
      std::vector<std::byte> bytes = wire::encodeControl(o.msg);
      Result<wire::ControlHeader> h =
          wire::decodeControlHeader(std::span(bytes).first(wire::kControlHeaderBytes));
      if (!h || !wire::decodeControl(h->type, std::span(bytes).subspan(wire::kControlHeaderBytes))) {
        std::abort();  // the master sent something its peers cannot read
      }
      if (const auto* v = std::get_if<wire::OpVerdict>(&o.msg); v != nullptr && v->epoch == epoch) {
        if (!verdicts.insert({o.peerId, v->epoch, v->tag, v->seq}).second) std::abort();
      }
      if (const auto* t = std::get_if<wire::Topology>(&o.msg)) {
        std::set<uint64_t> inRing;
        for (const wire::RingPeer& p : t->ring) {
          if (!inRing.insert(p.peerId).second) std::abort();  // twice in one ring
          auto [it, fresh] = ringOf.emplace(p.peerId, t->peerGroup);
          if (!fresh && it->second != t->peerGroup) std::abort();  // in two groups' rings
        }
      }
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Membership::Options o;
  o.heartbeatInterval = std::chrono::milliseconds(50);
  o.failureTimeout = std::chrono::milliseconds(400);
  o.voteTimeout = std::chrono::milliseconds(300);
  o.minOpTimeout = std::chrono::milliseconds(100);
  Membership m(o);
  Checker checker;
  Bytes in(data, size);
  auto now = Membership::Clock::now();
  std::set<uint64_t> registered;
  while (!in.empty()) {
    const uint8_t action = in.next();
    const uint64_t peer = 1 + in.next() % kPeers;
    const uint64_t epoch = m.epoch() - (in.next() % 2);  // now and then a stale one
    const uint32_t tag = in.next() % 3;
    const uint64_t seq = in.next() % 4;
    std::vector<master::Outgoing> out;
    switch (action % 10) {
      case 0:
        if (registered.insert(peer).second) {
          out = m.onRegister(peer, wire::Register{static_cast<uint32_t>(tag % 2),
                                                  (seq == 3 ? "198.18.0.1" : ""), 4000,
                                                  static_cast<uint32_t>(seq * 100)},
                             "127.0.0.1");
          if (!m.isRegistered(peer)) registered.erase(peer);
        }
        break;
      case 1: out = m.onMessage(peer, wire::Vote{epoch, (seq & 1) != 0}); break;
      case 9: {  // a probe report: of its newest plan, or a made-up one
        wire::ProbeReport r{epoch, 1 + seq, static_cast<uint32_t>(tag == 2 ? ecclPeerLost : ecclSuccess), {}};
        if (auto it = checker.lastPlan.find(peer); it != checker.lastPlan.end() && tag != 1) {
          r.epoch = it->second.epoch;
          r.session = it->second.session;
          for (const wire::RingPeer& p : it->second.rounds) {
            if (p.peerId != 0) r.rates.push_back({p.peerId, in.next() * 1000000ull});
          }
        }
        for (uint8_t k = in.next() % 3; k > 0; --k) r.rates.push_back({1 + in.next() % kPeers, in.next()});
        out = m.onMessage(peer, r);
        break;
      }
      case 2:
        out = m.onMessage(peer, wire::OpBegin{epoch, tag, seq,
                                              {static_cast<uint8_t>(1 + seq % 2), ecclFloat32,
                                               ecclSum, static_cast<uint64_t>(in.next() % 2), 0}});
        break;
      case 3:
        out = m.onMessage(peer, wire::OpDone{epoch, tag, seq,
                                             static_cast<uint32_t>(in.next() % 3 == 0 ? ecclPeerLost
                                                                                      : ecclSuccess),
                                             std::string(in.next() * 40u, 'm')});
        break;
      case 4:
        out = m.onMessage(peer, wire::Suspect{epoch, tag, seq, 1 + in.next() % kPeers,
                                              static_cast<uint32_t>(in.next()) * 10, (seq & 1) != 0});
        break;
      case 5: out = m.onMessage(peer, wire::PendingQuery{}); break;
      case 6:
        out = m.onDisconnect(peer);
        registered.erase(peer);
        break;
      case 7: out = m.onMessage(peer, wire::Heartbeat{}); break;
      case 8:
        now += std::chrono::milliseconds(in.next() * 4);
        out = m.tick(now);
        for (const master::Outgoing& k : out) {
          if (std::holds_alternative<wire::Kick>(k.msg)) registered.erase(k.peerId);
        }
        break;
    }
    checker.check(out, m.epoch());
  }
  return 0;
}
