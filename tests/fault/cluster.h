// A group of eccl-fault-peer processes and what their lines say: the part of
// the fault tests that the failover benchmark (bench/failover.cc) shares.
//
// Each peer loops update-topology -> collective -> verify and prints one
// `op t0=.. t1=.. world=.. rank=.. epoch=.. n=.. rc=.. ok=.. hash=..` line per
// op (fault_peer.cc documents every event). Nothing here asserts: callers
// decide what a line means for them.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "fault/harness.h"

namespace eccl::fault {

constexpr int64_t kMsNs = 1000000;

inline double ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

// ---- line fields ---------------------------------------------------------------

inline bool isOp(const Line& l) { return l.fields.event == "op"; }
inline int64_t rcOf(const Line& l) { return l.fields.num("rc"); }
inline int64_t t0Of(const Line& l) { return l.fields.num("t0"); }
inline int64_t t1Of(const Line& l) { return l.fields.num("t1"); }
inline int64_t worldOf(const Line& l) { return l.fields.num("world"); }
// rc=ecclSuccess and the buffer held the right result.
inline bool opSucceeded(const Line& l) {
  return isOp(l) && rcOf(l) == ecclSuccess && l.fields.num("ok") == 1;
}
// A predicate for lines of one event.
std::function<bool(const Line&)> event(std::string name);

// ---- peers ---------------------------------------------------------------------

// eccl-fault-peer's command line (its --help tells each flag).
struct PeerSpec {
  std::string mode = "allreduce";
  size_t count = size_t{16} << 20;  // float32 elements: 64 MiB
  int tags = 8;
  int root = -1;
  long iters = 0;
  uint32_t failureMs = 2000;
  uint32_t heartbeatMs = 500;
  std::string bind;
  bool outOfPlace = false;
  bool noReconnect = false;
  bool exitOnMasterLoss = false;
  bool optimize = false;       // --optimize
  std::string quant = "none";  // --quant
  std::string memory = "host"; // --memory (cuda: device buffers, allreduce mode)
  std::string transport = "tcp";  // --transport
};

// The peers of one run: spawned from one spec (overridable per peer), all
// killed and reaped when the cluster goes out of scope. Create it, and spawn,
// on the main thread (see Process).
class Cluster {
 public:
  Cluster(std::string peerBinary, std::string masterAddress, PeerSpec spec);

  // Starts peer<k>; nullptr when it cannot start (the reason goes to stderr).
  Process* spawn() { return spawn(spec_); }
  Process* spawn(const PeerSpec& s);

  // Spawned and still running (not reaped, stdout open).
  std::vector<Process*> alive() const;
  std::vector<Process*> all() const;
  const PeerSpec& specOf(const Process* p) const;
  // Where each running peer other than `except` stands in its output (its
  // line count): where to look for what it does after an event. The keys are
  // the peers that should survive that event.
  std::map<Process*, size_t> linesNow(const Process* except = nullptr) const;

  static std::optional<Line> lastOp(const Process& p);

  // Until exactly `world` peers run and the last op of each succeeded at
  // that world size in one common epoch: the group is steady. Gives up early
  // (false) when a peer that nobody reaped exits.
  bool waitSteady(int world, Millis timeout) const;

  // The peer whose last op ran as `rank`, if any.
  Process* byRank(int rank) const;

  // The last lines of every peer, for failure messages.
  std::string transcripts() const;

 private:
  std::string binary_;
  std::string master_;
  PeerSpec spec_;
  int next_ = 0;
  std::vector<std::unique_ptr<Process>> peers_;
  std::vector<PeerSpec> specs_;
};

// Sleeps until a random moment (lo..hi of the way) inside `p`'s next op,
// predicted from its next two op lines: the gap between ops (verify, update,
// refill) and the op's duration. False if `p` runs no ops for 60 s.
bool aimInsideNextOp(const Process& p, std::mt19937& rng, double lo = 0.1, double hi = 0.9);

}  // namespace eccl::fault
