// Multi-process fault injection (DESIGN.md §2.2-2.4, §8): a master and peer
// processes (eccl-fault-peer) that loop update-topology -> collective ->
// verify, while the test SIGKILLs, SIGSTOPs and cuts them off mid-collective.
//
// Every test first proves that its fault fired: the victim died by the
// signal (or was seen stopped), the iptables rules went in, and the
// survivors' op that was in flight at the fault is the one that failed.
// Peers check their own buffers (ok=1: the right result, or their input again
// after a failure); the test checks the lines they print.
#include <gtest/gtest.h>

#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "fault/cluster.h"
#include "fault/harness.h"

namespace eccl::fault {
namespace {

constexpr uint32_t kFailureMs = 2000;  // master and peers alike
constexpr size_t kFullCount = size_t{16} << 20;  // 64 MiB of float32, as in DESIGN.md §9
constexpr size_t kMidCount = size_t{4} << 20;    // 16 MiB: where size is not the point

// A kill in the last instants of an op may legitimately let it complete on
// every member (the victim had already delivered everything): such an op
// returns success shortly after the kill. Rounds like that are allowed but
// are not counted as hits.
constexpr int64_t kTailNs = 100 * kMsNs;

// "6,6,0" -> {6, 6, 0}
std::vector<int64_t> parseList(const std::string& text) {
  std::vector<int64_t> v;
  std::istringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    v.push_back(std::strtoll(item.c_str(), nullptr, 10));
  }
  return v;
}

std::mt19937 seededRng(const char* test) {
  const char* env = std::getenv("ECCL_FAULT_SEED");
  const unsigned seed = env != nullptr ? static_cast<unsigned>(std::strtoul(env, nullptr, 10))
                                       : std::random_device{}();
  std::printf("[%s] seed %u (set ECCL_FAULT_SEED to replay)\n", test, seed);
  std::fflush(stdout);
  return std::mt19937(seed);
}

// A cluster of eccl-fault-peer processes, all with failure timeout kFailureMs.
Cluster makeCluster(std::string masterAddress, PeerSpec spec) {
  spec.failureMs = kFailureMs;
  return Cluster(ECCL_FAULT_PEER_BIN, std::move(masterAddress), std::move(spec));
}

// ---- checks over every peer's lines ---------------------------------------------

// Every op any peer ran left its buffer right: the result, or its input again
// after a failure (DESIGN.md §2.2).
void expectEveryBufferChecked(const Cluster& c) {
  for (const Process* p : c.all()) {
    for (const Line& l : p->lines()) {
      if (isOp(l)) {
        EXPECT_EQ(l.fields.num("ok"), 1) << p->name() << ": " << l.text;
      }
    }
  }
}

// One (epoch, n) is one collective (n counts a peer's ops in the epoch, and
// members run them in lockstep): every member that reports it must report the
// same outcome (all or nothing, per tag in async mode), and where it
// succeeded the same world size and result bits.
class Agreement {
 public:
  void add(const std::string& peer, const Line& l) {
    const auto key = std::make_pair(l.fields.num("epoch"), l.fields.num("n"));
    Entry e{outcomeOf(l), rcOf(l) == ecclSuccess ? l.fields.str("hash") : "", worldOf(l), peer,
            l.text};
    auto [it, inserted] = seen_.emplace(key, e);
    if (inserted) return;
    const Entry& first = it->second;
    EXPECT_EQ(first.outcome, e.outcome)
        << "epoch " << key.first << " op " << key.second << ": " << first.peer << " and " << peer
        << " disagree on the outcome\n  " << first.text << "\n  " << l.text;
    EXPECT_EQ(first.world, e.world)
        << "epoch " << key.first << " op " << key.second << ": different world sizes";
    if (!first.hash.empty() && !e.hash.empty()) {
      EXPECT_EQ(first.hash, e.hash) << "epoch " << key.first << " op " << key.second << ": "
                                    << first.peer << " and " << peer
                                    << " finished with different bits";
    }
  }

 private:
  struct Entry {
    std::string outcome, hash;
    int64_t world;
    std::string peer, text;
  };
  // "ok"/"failed", or in async mode one 1/0 per tag.
  static std::string outcomeOf(const Line& l) {
    if (!l.fields.has("rcs")) return rcOf(l) == ecclSuccess ? "ok" : "failed";
    std::string s;
    for (int64_t rc : parseList(l.fields.str("rcs"))) s += rc == ecclSuccess ? '1' : '0';
    return s;
  }
  std::map<std::pair<int64_t, int64_t>, Entry> seen_;
};

void expectNoDivergence(const Cluster& c) {
  Agreement agreement;
  for (const Process* p : c.all()) {
    for (const Line& l : p->lines()) {
      if (isOp(l)) agreement.add(p->name(), l);
    }
  }
}

// What one survivor's first op ending after a fault looked like.
struct Outcome {
  Process* peer = nullptr;
  size_t index = 0;  // of that op line
  Line line;
  bool spanning = false;  // t0 <= fault time: the op was in flight at the fault
};

// The first op line of each survivor ending after tFault (lines from
// `from[p]` on). Fails the test for a survivor that prints none in time.
std::vector<Outcome> firstOpsAfter(const std::vector<Process*>& survivors,
                                   const std::map<Process*, size_t>& from, int64_t tFault,
                                   Millis timeout) {
  std::vector<Outcome> out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (Process* s : survivors) {
    const auto left = std::max(Millis(0), std::chrono::duration_cast<Millis>(
                                              deadline - std::chrono::steady_clock::now()));
    const std::optional<size_t> i = s->waitLine(
        [&](const Line& l) { return isOp(l) && t1Of(l) >= tFault; }, left, from.at(s));
    if (!i) {
      ADD_FAILURE() << s->name() << " finished no op within " << timeout.count()
                    << " ms of the fault\n" << s->transcript();
      continue;
    }
    Outcome o;
    o.peer = s;
    o.index = *i;
    o.line = s->lineAt(*i);
    o.spanning = t0Of(o.line) <= tFault;
    out.push_back(o);
  }
  return out;
}

// After a failed op, the survivor's very next op runs on the survivors and
// succeeds. Returns the recovery time: from the failed op's return to the
// retry's (update-topology, new links, the whole retried op), in ms.
double expectNextOpSucceeds(const Outcome& o, int world) {
  const std::optional<size_t> next =
      o.peer->waitLine(isOp, Millis(4 * kFailureMs + 30000), o.index + 1);
  if (!next) {
    ADD_FAILURE() << o.peer->name() << " ran no op after its failed one\n" << o.peer->transcript();
    return 0;
  }
  const Line l = o.peer->lineAt(*next);
  EXPECT_TRUE(opSucceeded(l) && worldOf(l) == world)
      << o.peer->name() << ": the retry at world " << world << " did not succeed: " << l.text
      << "\n" << o.peer->transcript();
  return ms(t1Of(l) - t1Of(o.line));
}

struct RoundResult {
  bool hit = false;               // every survivor had an op in flight at the fault
  std::vector<double> latencyMs;  // t1 - fault of those ops
  std::vector<double> retryMs;    // failed op's return -> successful retry's return
};

// Signals `victim` at a random moment inside one of its ops and checks what
// the survivors saw: all-or-nothing within 2x the failure timeout, buffers
// restored, and a successful retry on the survivors. `asyncTags` > 0: each op
// line covers that many concurrent ops; a hit needs all of them failed (a tag
// that finished on every member before the fault makes the round a miss).
RoundResult faultRound(Cluster& c, Process* victim, int sig, std::mt19937& rng, int asyncTags,
                       int round) {
  RoundResult res;
  const std::map<Process*, size_t> from = c.linesNow(victim);
  std::vector<Process*> survivors;
  for (const auto& [p, line] : from) survivors.push_back(p);
  const int world = static_cast<int>(survivors.size()) + 1;
  const std::optional<Line> victimOp = Cluster::lastOp(*victim);

  // Concurrent ops on several tags do not all end together: aim early so
  // that every tag is still in flight.
  if (!aimInsideNextOp(*victim, rng, 0.1, asyncTags > 0 ? 0.5 : 0.9)) {
    ADD_FAILURE() << victim->name() << " stopped running ops\n" << victim->transcript();
    return res;
  }
  const int64_t tFault = nowNs();
  if (!victim->signal(sig)) {
    ADD_FAILURE() << "kill(" << victim->pid() << ", " << strsignal(sig)
                  << "): " << std::strerror(errno);
    return res;
  }
  // The fault fired.
  if (sig == SIGKILL) {
    EXPECT_TRUE(victim->waitExit(Millis(5000))) << victim->name() << " survived SIGKILL";
    EXPECT_TRUE(victim->killedBySignal(SIGKILL)) << victim->name() << " " << victim->describeExit();
  } else {
    EXPECT_TRUE(victim->waitStopped(Millis(5000))) << victim->name() << " was not seen stopped";
  }

  const int64_t bound = 2 * int64_t{kFailureMs} * kMsNs;
  std::vector<Outcome> outs =
      firstOpsAfter(survivors, from, tFault, Millis(2 * kFailureMs + 15000));
  if (outs.size() != survivors.size()) return res;
  const auto failedAsExpected = [&](const Line& l) {
    return rcOf(l) == ecclPeerLost && (asyncTags == 0 || l.fields.num("failed") == asyncTags);
  };
  bool allSpanning = true, allFailed = true, allSucceeded = true;
  int64_t latest = 0;
  for (const Outcome& o : outs) {
    allSpanning = allSpanning && o.spanning;
    allFailed = allFailed && failedAsExpected(o.line);
    allSucceeded = allSucceeded && rcOf(o.line) == ecclSuccess;
    latest = std::max(latest, t1Of(o.line) - tFault);
    EXPECT_EQ(o.line.fields.num("ok"), 1) << o.peer->name() << " did not get its input back: "
                                          << o.line.text;
  }

  std::string summary;
  for (const Outcome& o : outs) {
    std::string tags;
    if (asyncTags > 0) {
      tags = "[" + o.line.fields.str("failed") + "/" + std::to_string(asyncTags) + " tags]";
    }
    char buf[160];
    std::snprintf(buf, sizeof(buf), " %s:rc=%lld%s%s/+%.0fms", o.peer->name().c_str(),
                  static_cast<long long>(rcOf(o.line)), tags.c_str(),
                  o.spanning ? "" : "(between ops)", ms(t1Of(o.line) - tFault));
    summary += buf;
  }
  const long long victimRank = victimOp ? victimOp->fields.num("rank") : -1;
  std::printf("[round %d] %s %s (rank %lld) at world %d;%s\n", round, strsignal(sig),
              victim->name().c_str(), victimRank, world, summary.c_str());
  std::fflush(stdout);

  if (allSpanning && allFailed) {
    res.hit = true;
    for (const Outcome& o : outs) {
      const int64_t latency = t1Of(o.line) - tFault;
      res.latencyMs.push_back(ms(latency));
      EXPECT_LE(latency, bound) << o.peer->name() << " returned " << ms(latency)
                                << " ms after the fault, over 2x the failure timeout";
    }
    for (const Outcome& o : outs) res.retryMs.push_back(expectNextOpSucceeds(o, world - 1));
    return res;
  }
  // Async: the same per-tag outcome on every survivor, each tag's op either
  // done before the fault or failed by it.
  bool sameTagOutcomes = asyncTags > 0;
  for (const Outcome& o : outs) {
    const std::vector<int64_t> rcs = parseList(o.line.fields.str("rcs"));
    sameTagOutcomes = sameTagOutcomes && static_cast<int>(rcs.size()) == asyncTags &&
                      o.line.fields.str("rcs") == outs[0].line.fields.str("rcs");
    for (int64_t rc : rcs) {
      sameTagOutcomes = sameTagOutcomes && (rc == ecclSuccess || rc == ecclPeerLost);
    }
  }
  if (allSpanning && allSucceeded && latest <= kTailNs) {
    // The victim died as the op completed: fine if every member agrees.
    for (const Outcome& o : outs) {
      EXPECT_EQ(o.line.fields.str("hash"), outs[0].line.fields.str("hash")) << o.peer->name();
    }
  } else if (allSpanning && sameTagOutcomes) {
    // Some tags had finished on every member before the fault.
    for (const Outcome& o : outs) {
      EXPECT_LE(t1Of(o.line) - tFault, bound) << o.peer->name();
    }
  } else {
    // Some survivors were between ops. Each op in flight at the fault
    // failed; an op started after it either failed fast or already ran on
    // the survivors.
    for (const Outcome& o : outs) {
      if (o.spanning) {
        EXPECT_TRUE(failedAsExpected(o.line) ||
                    (rcOf(o.line) == ecclSuccess && t1Of(o.line) - tFault <= kTailNs))
            << o.peer->name() << ": op in flight at the fault: " << o.line.text;
        if (rcOf(o.line) != 0) {
          EXPECT_LE(t1Of(o.line) - tFault, bound) << o.peer->name();
        }
      } else {
        EXPECT_TRUE(failedAsExpected(o.line) ||
                    (rcOf(o.line) == ecclSuccess && worldOf(o.line) == world - 1))
            << o.peer->name() << ": op started after the fault: " << o.line.text;
      }
    }
  }
  // Either way the survivors carry on at world - 1.
  for (const Outcome& o : outs) {
    const auto carriesOn = [&](const Line& l) { return opSucceeded(l) && worldOf(l) == world - 1; };
    EXPECT_TRUE(o.peer->waitLine(carriesOn, Millis(4 * kFailureMs + 30000), o.index))
        << o.peer->name() << " never succeeded at world " << world - 1 << "\n"
        << o.peer->transcript();
  }
  return res;
}

void printLatencies(const char* test, std::vector<double> v, std::vector<double> retry) {
  if (v.empty()) return;
  std::sort(v.begin(), v.end());
  std::printf("[%s] return latency after the fault over %zu survivor ops: median %.0f ms, "
              "max %.0f ms (bound %u ms)\n",
              test, v.size(), v[v.size() / 2], v.back(), 2 * kFailureMs);
  if (!retry.empty()) {
    std::sort(retry.begin(), retry.end());
    std::printf("[%s] recovery (failed return -> retried op done on the survivors): median "
                "%.0f ms, max %.0f ms\n", test, retry[retry.size() / 2], retry.back());
  }
  std::fflush(stdout);
}

// Starts `n` peers and waits until they run steadily as one world.
void startPeers(Cluster& c, int n) {
  for (int i = 0; i < n; ++i) ASSERT_NE(c.spawn(), nullptr);
  ASSERT_TRUE(c.waitSteady(n, Millis(120000)))
      << "no steady world of " << n << "\n" << c.transcripts();
}

// SIGKILL (or SIGSTOP) rounds until `wantHits` rounds hit ops in flight on
// every survivor, at most `maxRounds`. `pickVictim` chooses among the live peers.
void killRounds(const char* test, Cluster& c, int world, int sig, int asyncTags, int wantHits,
                int maxRounds, const std::function<Process*(std::mt19937&)>& pickVictim) {
  std::mt19937 rng = seededRng(test);
  std::vector<double> latencies, retries;
  int hits = 0, rounds = 0;
  while (rounds < maxRounds && hits < wantHits && !::testing::Test::HasFailure()) {
    Process* victim = pickVictim(rng);
    ASSERT_NE(victim, nullptr) << c.transcripts();
    const size_t victimFrom = victim->lineCount();
    const RoundResult r = faultRound(c, victim, sig, rng, asyncTags, rounds++);
    hits += r.hit ? 1 : 0;
    latencies.insert(latencies.end(), r.latencyMs.begin(), r.latencyMs.end());
    retries.insert(retries.end(), r.retryMs.begin(), r.retryMs.end());
    if (::testing::Test::HasFailure()) break;
    if (sig == SIGSTOP) {
      // Declared dead while alive: resumed, it is told so, rejoins as a
      // newcomer, and the world grows back.
      ASSERT_TRUE(victim->signal(SIGCONT));
      const auto kicked = victim->waitLine(event("kicked"), Millis(10000), victimFrom);
      ASSERT_TRUE(kicked) << victim->name() << " resumed without being told it was dropped\n"
                          << victim->transcript();
      ASSERT_TRUE(victim->waitLine(event("reconnected"), Millis(30000), *kicked))
          << victim->name() << " did not reconnect\n" << victim->transcript();
    } else {
      ASSERT_NE(c.spawn(), nullptr);  // a replacement
    }
    ASSERT_TRUE(c.waitSteady(world, Millis(120000)))
        << "the world did not grow back to " << world << "\n" << c.transcripts();
  }
  printLatencies(test, latencies, retries);
  std::printf("[%s] %d of %d rounds hit ops in flight on every survivor\n", test, hits, rounds);
  expectEveryBufferChecked(c);
  expectNoDivergence(c);
  if (!::testing::Test::HasFailure()) {
    EXPECT_GE(hits, wantHits) << "too few faults landed inside a collective";
  }
}

Process* randomPeer(const Cluster& c, std::mt19937& rng) {
  const std::vector<Process*> a = c.alive();
  if (a.empty()) return nullptr;
  return a[std::uniform_int_distribution<size_t>(0, a.size() - 1)(rng)];
}

// ---- tests --------------------------------------------------------------------

// SIGKILL of one of 4 peers mid all-reduce (64 MiB float32 sum): every
// survivor's op returns ecclPeerLost within 2x the failure timeout with its
// input restored; the retry on 3 succeeds; a replacement brings the world
// back to 4. 12 rounds that hit (of at most 24).
// Whether the peers' completed all-reduces at a world of 2 or more moved
// their bytes through shared memory (ecclOpInfo_t.sharedMemory): all of them
// when `want`, none otherwise; and there were some.
void expectSharedMemory(const Cluster& c, bool want) {
  size_t ops = 0;
  for (const Process* p : c.all()) {
    for (const Line& l : p->lines()) {
      if (l.fields.event != "op" || rcOf(l) != 0 || worldOf(l) < 2 || !l.fields.has("shm")) continue;
      ++ops;
      EXPECT_EQ(l.fields.num("shm"), want ? 1 : 0) << p->name() << ": " << l.text;
    }
  }
  EXPECT_GT(ops, 0u) << "no completed all-reduce to check";
}

std::set<std::string> devShmEntries() {
  std::set<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm", ec)) names.insert(e.path().filename());
  return names;
}

// Peers on one host, so their links run through shared memory (and that is
// checked): a SIGKILLed peer is still found within the bound, every survivor
// gets ecclPeerLost with its input restored, and nothing is left in /dev/shm.
TEST(Fault, KillDuringAllReduce) {
  const std::set<std::string> shmBefore = devShmEntries();
  {
    InProcessMaster master(kFailureMs);
    ASSERT_TRUE(master.ok());
    Cluster c = makeCluster(master.address(), PeerSpec{});
    startPeers(c, 4);
    if (HasFatalFailure()) return;
    killRounds("KillDuringAllReduce", c, 4, SIGKILL, 0, 12, 24,
               [&](std::mt19937& rng) { return randomPeer(c, rng); });
    expectSharedMemory(c, true);
  }
  std::vector<std::string> leaked;
  for (const std::string& n : devShmEntries()) {
    if (shmBefore.count(n) == 0) leaked.push_back(n);
  }
  EXPECT_TRUE(leaked.empty()) << "left in /dev/shm: " << leaked.front();
}

// Small ops (collectives/small.h: an all-gather over links 2^k places on,
// then a local reduction): a kill mid-op fails it on every survivor with the
// input restored, within the same bound.
TEST(Fault, KillDuringSmallAllReduce) {
  InProcessMaster master(kFailureMs);
  ASSERT_TRUE(master.ok());
  PeerSpec spec;
  spec.count = 1000;  // 4000 bytes: the small path at 4 members (and 3)
  Cluster c = makeCluster(master.address(), spec);
  startPeers(c, 4);
  if (HasFatalFailure()) return;
  // A small op lasts well under a millisecond, so most kills land between
  // ops (every round still checks all-or-nothing and the retry): up to 100
  // rounds (tens of ms each) for one that lands inside an op on every
  // survivor. In a loaded CI run 1 round in 12 did.
  killRounds("KillDuringSmallAllReduce", c, 4, SIGKILL, 0, 1, 100,
             [&](std::mt19937& rng) { return randomPeer(c, rng); });
}

// The same over loopback TCP (ECCL_SHM=0 in every peer): the TCP path keeps
// its own fault coverage.
TEST(Fault, KillDuringAllReduceOverTcp) {
  ::setenv("ECCL_SHM", "0", 1);
  {
    InProcessMaster master(kFailureMs);
    ASSERT_TRUE(master.ok());
    Cluster c = makeCluster(master.address(), PeerSpec{});
    startPeers(c, 4);
    if (!HasFatalFailure()) {
      killRounds("KillDuringAllReduceOverTcp", c, 4, SIGKILL, 0, 4, 10,
                 [&](std::mt19937& rng) { return randomPeer(c, rng); });
      expectSharedMemory(c, false);
    }
  }
  ::unsetenv("ECCL_SHM");
}

// The same over RDMA on a real device (transport "ibverbs"): a SIGKILLed
// peer's queue pairs vanish and its set-up stream closes; the bound and the
// recovery are TCP's. Skips where there is no RDMA device (docs/ibverbs.md).
TEST(Fault, KillDuringAllReduceOverIbverbs) {
  ecclCommConfig_t probe = ECCL_COMM_CONFIG_INIT;
  probe.masterAddress = "127.0.0.1:1";  // ecclCommCreate checks the transport, dials nothing
  probe.transport = "ibverbs";
  ecclComm_t comm = nullptr;
  if (ecclCommCreate(&probe, &comm) != ecclSuccess) {
    GTEST_SKIP() << "no RDMA device: " << ecclGetLastError(nullptr);
  }
  ecclCommDestroy(comm);
  InProcessMaster master(kFailureMs);
  ASSERT_TRUE(master.ok());
  PeerSpec spec;
  spec.transport = "ibverbs";
  Cluster c = makeCluster(master.address(), spec);
  startPeers(c, 4);
  if (HasFatalFailure()) return;
  killRounds("KillDuringAllReduceOverIbverbs", c, 4, SIGKILL, 0, 4, 10,
             [&](std::mt19937& rng) { return randomPeer(c, rng); });
  expectSharedMemory(c, false);
}

// The same over TLS (psk), through the environment every process inherits:
// encryption changes neither the bound nor the recovery.
TEST(Fault, KillDuringAllReduceOverTls) {
  ::setenv("ECCL_TLS", "psk", 1);
  ::setenv("ECCL_AUTH_TOKEN", "fault-tls-token", 1);
  {
    InProcessMaster master(kFailureMs);
    ASSERT_TRUE(master.ok());
    Cluster c = makeCluster(master.address(), PeerSpec{});
    startPeers(c, 4);
    if (!HasFatalFailure()) {
      killRounds("KillDuringAllReduceOverTls", c, 4, SIGKILL, 0, 5, 12,
                 [&](std::mt19937& rng) { return randomPeer(c, rng); });
      expectSharedMemory(c, false);  // TLS links stay on TCP
    }
  }
  ::unsetenv("ECCL_TLS");
  ::unsetenv("ECCL_AUTH_TOKEN");
}

// With a codec (bfloat16; the pattern's sums stay exact in it): a kill mid-op
// still fails it on every survivor with its input restored, out of place too.
TEST(Fault, KillDuringQuantizedAllReduce) {
  InProcessMaster master(kFailureMs);
  ASSERT_TRUE(master.ok());
  PeerSpec spec;
  spec.quant = "bf16";
  spec.outOfPlace = true;
  Cluster c = makeCluster(master.address(), spec);
  startPeers(c, 4);
  if (HasFatalFailure()) return;
  killRounds("KillDuringQuantizedAllReduce", c, 4, SIGKILL, 0, 3, 8,
             [&](std::mt19937& rng) { return randomPeer(c, rng); });
}

// SIGSTOP: a hung peer is found by silence, not by a closed connection. Once
// resumed it learns it was dropped (ecclKicked), reconnects and is admitted.
TEST(Fault, StopDuringAllReduce) {
  InProcessMaster master(kFailureMs);
  ASSERT_TRUE(master.ok());
  Cluster c = makeCluster(master.address(), PeerSpec{});
  startPeers(c, 4);
  if (HasFatalFailure()) return;
  killRounds("StopDuringAllReduce", c, 4, SIGSTOP, 0, 2, 4,
             [&](std::mt19937& rng) { return randomPeer(c, rng); });
  expectSharedMemory(c, true);
}

// The root of a pipelined broadcast dies: non-roots get back what they held
// before the call.
TEST(Fault, KillBroadcastRoot) {
  InProcessMaster master(kFailureMs);
  ASSERT_TRUE(master.ok());
  PeerSpec spec;
  spec.mode = "broadcast";
  spec.root = 0;
  Cluster c = makeCluster(master.address(), spec);
  startPeers(c, 4);
  if (HasFatalFailure()) return;
  // The root's part of a broadcast ends before the others' do: a kill after it
  // sent everything lets the op succeed (a miss), so allow more rounds.
  killRounds("KillBroadcastRoot", c, 4, SIGKILL, 0, 3, 12,
             [&](std::mt19937&) { return c.byRank(0); });
}

// Eight all-reduces in flight on eight tags: all of them fail on every survivor.
TEST(Fault, KillDuringConcurrentAsyncOps) {
  InProcessMaster master(kFailureMs);
  ASSERT_TRUE(master.ok());
  PeerSpec spec;
  spec.mode = "async";
  spec.tags = 8;
  Cluster c = makeCluster(master.address(), spec);
  startPeers(c, 4);
  if (HasFatalFailure()) return;
  killRounds("KillDuringConcurrentAsyncOps", c, 4, SIGKILL, spec.tags, 3, 6,
             [&](std::mt19937& rng) { return randomPeer(c, rng); });
}

// A newcomer registering while members run async ops is pending and
// disturbs nothing; it is admitted at their next update.
TEST(Fault, NewcomerDuringAsyncOps) {
  InProcessMaster master(kFailureMs);
  ASSERT_TRUE(master.ok());
  PeerSpec spec;
  spec.mode = "async";
  spec.tags = 8;
  spec.count = kMidCount;
  Cluster c = makeCluster(master.address(), spec);
  startPeers(c, 3);
  if (HasFatalFailure()) return;
  std::vector<Process*> members = c.alive();
  ASSERT_TRUE(members[0]->waitLine(isOp, Millis(30000), members[0]->lineCount()));
  const int64_t tSpawn = nowNs();
  Process* newcomer = c.spawn();
  ASSERT_NE(newcomer, nullptr);
  const auto admitted = newcomer->waitLine(event("admitted"), Millis(60000));
  ASSERT_TRUE(admitted) << newcomer->transcript();
  const int64_t tAdmitted = newcomer->lineAt(*admitted).fields.num("t");
  EXPECT_EQ(newcomer->lineAt(*admitted).fields.num("world"), 4);
  ASSERT_TRUE(c.waitSteady(4, Millis(60000))) << c.transcripts();
  // A few more rounds at world 4 on everyone.
  for (Process* p : c.alive()) {
    size_t from = p->lineCount();
    for (int k = 0; k < 3; ++k) {
      const auto i = p->waitLine(isOp, Millis(30000), from);
      ASSERT_TRUE(i) << p->transcript();
      from = *i + 1;
    }
  }
  // The fault fired: members ran ops while the newcomer started and waited.
  for (Process* m : members) {
    bool overlapped = false;
    for (const Line& l : m->lines()) {
      overlapped = overlapped || (isOp(l) && t1Of(l) > tSpawn && t0Of(l) < tAdmitted);
    }
    EXPECT_TRUE(overlapped) << m->name() << " ran no op while the newcomer was pending";
  }
  for (Process* p : c.all()) {
    for (const Line& l : p->lines()) {
      if (isOp(l)) {
        EXPECT_TRUE(opSucceeded(l)) << p->name() << ": " << l.text;
      }
      EXPECT_NE(l.fields.event, "error") << p->name() << ": " << l.text;
    }
  }
  expectNoDivergence(c);
}

// SIGKILL of a member while ecclCommOptimizeTopology probes bandwidths: a
// newcomer joined a steady world of 3 with --optimize, so the next call
// probes its 3 pairs (3 rounds of ECCL_PROBE_MS = 1500 ms); a member killed
// 1 s in fails that call on every survivor with ecclPeerLost, within the
// failure detection bound, and the retry completes at world 3 (only the
// pairs still missing are probed) with exact ops afterwards.
TEST(Fault, KillDuringOptimizeTopology) {
  ::setenv("ECCL_PROBE_MS", "1500", 1);  // read by the in-process master
  InProcessMaster master(kFailureMs);
  ::unsetenv("ECCL_PROBE_MS");
  ASSERT_TRUE(master.ok());
  PeerSpec spec;
  spec.count = size_t{1} << 18;  // 1 MiB: the probes are the point
  spec.optimize = true;
  Cluster c = makeCluster(master.address(), spec);
  startPeers(c, 3);
  if (HasFatalFailure()) return;
  Process* newcomer = c.spawn();
  ASSERT_NE(newcomer, nullptr);
  const auto admitted = newcomer->waitLine(event("admitted"), Millis(60000));
  ASSERT_TRUE(admitted) << newcomer->transcript();
  // The members' next call after admission probes the newcomer's pairs.
  const int64_t tAdmitted = newcomer->lineAt(*admitted).fields.num("t");
  sleepUntilNs(tAdmitted + 1000 * kMsNs);
  Process* victim = nullptr;
  for (Process* p : c.alive()) {
    if (p != newcomer) victim = p;
  }
  ASSERT_NE(victim, nullptr);
  const std::map<Process*, size_t> from = c.linesNow(victim);
  const int64_t tKill = nowNs();
  ASSERT_TRUE(victim->signal(SIGKILL));
  for (const auto& [p, start] : from) {
    const auto failed = p->waitLine(
        [](const Line& l) { return l.fields.event == "error" && l.fields.str("what") == "optimize"; },
        Millis(30000), start);
    ASSERT_TRUE(failed) << p->name() << ": the kill did not fail its optimize call\n"
                        << p->transcript();
    const Line& l = p->lineAt(*failed);
    EXPECT_EQ(l.fields.num("rc"), ecclPeerLost) << p->name() << ": " << l.text;
    EXPECT_LE(l.fields.num("t0"), tKill) << p->name() << ": the call began after the kill";
    EXPECT_LE(l.fields.num("t") - tKill, int64_t{2} * kFailureMs * kMsNs + 3000 * kMsNs)
        << p->name() << ": " << l.text;
    const auto retried = p->waitLine(
        [](const Line& l) { return l.fields.event == "optimized" && worldOf(l) == 3; },
        Millis(30000), *failed);
    ASSERT_TRUE(retried) << p->name() << ": the retry did not complete at world 3\n"
                         << p->transcript();
    const auto op = p->waitLine(
        [](const Line& l) { return opSucceeded(l) && worldOf(l) == 3; }, Millis(30000), *retried);
    ASSERT_TRUE(op) << p->name() << ": no exact op after the retry\n" << p->transcript();
  }
  victim->waitExit(Millis(5000));
  expectEveryBufferChecked(c);
  expectNoDivergence(c);
}

// ecclCommDestroy is a graceful leave: nobody's op fails, the world shrinks
// to 3 at the next update and the survivors carry on.
TEST(Fault, GracefulLeave) {
  InProcessMaster master(kFailureMs);
  ASSERT_TRUE(master.ok());
  PeerSpec spec;
  spec.count = kMidCount;
  Cluster c = makeCluster(master.address(), spec);
  startPeers(c, 3);
  if (HasFatalFailure()) return;
  // The leaver joins a steady world of 3, runs 5 ops at world 4, and leaves.
  PeerSpec leaverSpec = spec;
  leaverSpec.iters = 5;
  Process* leaver = c.spawn(leaverSpec);
  ASSERT_NE(leaver, nullptr);
  ASSERT_TRUE(leaver->waitExit(Millis(90000))) << leaver->transcript();
  EXPECT_EQ(leaver->exitCode(), 0) << leaver->describeExit() << "\n" << leaver->transcript();
  const auto left = leaver->waitLine(event("leave"), Millis(1000));
  ASSERT_TRUE(left) << leaver->transcript();
  const int64_t tLeave = leaver->lineAt(*left).fields.num("t");
  int leaverOps = 0;
  for (const Line& l : leaver->lines()) {
    if (isOp(l) && opSucceeded(l) && worldOf(l) == 4) ++leaverOps;
  }
  EXPECT_EQ(leaverOps, 5) << leaver->transcript();
  // Survivors: back to 3, and three more ops succeed there.
  for (Process* p : c.alive()) {
    size_t from = 0;
    for (int k = 0; k < 3; ++k) {
      const auto i = p->waitLine(
          [&](const Line& l) { return opSucceeded(l) && worldOf(l) == 3 && t0Of(l) > tLeave; },
          Millis(60000), from);
      ASSERT_TRUE(i) << p->name() << " did not carry on at world 3\n" << p->transcript();
      from = *i + 1;
    }
  }
  for (Process* p : c.all()) {
    for (const Line& l : p->lines()) {
      if (isOp(l)) {
        EXPECT_TRUE(opSucceeded(l)) << p->name() << ": " << l.text;
      }
      EXPECT_NE(l.fields.event, "error") << p->name() << ": " << l.text;
    }
  }
  expectNoDivergence(c);
}

// Sets IFF_UP on lo of the current network namespace.
bool bringLoopbackUp(std::string* why) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *why = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  bool ok = ioctl(fd, SIOCGIFFLAGS, &ifr) == 0;
  if (ok) {
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    ok = ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
  }
  if (!ok) *why = std::string("bringing lo up: ") + std::strerror(errno);
  close(fd);
  return ok;
}

// iptables rules appended for the test and deleted again at scope exit.
class IptablesRules {
 public:
  explicit IptablesRules(std::string iptables) : iptables_(std::move(iptables)) {}
  ~IptablesRules() { clear(); }

  bool add(const std::vector<std::string>& rule) {
    std::vector<std::string> argv = {iptables_, "-w", "-A", "OUTPUT"};
    argv.insert(argv.end(), rule.begin(), rule.end());
    if (runCommand(argv, Millis(20000)) != 0) return false;
    rules_.push_back(rule);
    return true;
  }

  void clear() {
    for (const auto& rule : rules_) {
      std::vector<std::string> argv = {iptables_, "-w", "-D", "OUTPUT"};
      argv.insert(argv.end(), rule.begin(), rule.end());
      runCommand(argv, Millis(20000));
    }
    rules_.clear();
  }

 private:
  std::string iptables_;
  std::vector<std::vector<std::string>> rules_;
};

// A cut data link between two live ring neighbours: the master removes one of
// them (ecclKicked; with --no-reconnect it exits 3), the others' op returns
// ecclPeerLost and the survivors carry on at world 3.
//
// Runs in a fresh network namespace, peers bound to 127.0.0.2.. so their
// traffic can be told apart: data links listen on and dial from the bind
// address, so two address rules drop both directions between the pair (and
// nothing else, the master being on 127.0.0.1). They stand for peers on
// different hosts, so their links are TCP (ECCL_SHM=0): a ring in shared
// memory has no network path to cut.
TEST(Fault, LinkCut) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: a network namespace and iptables rules";
  const std::string iptables = findProgram("iptables");
  if (iptables.empty()) GTEST_SKIP() << "needs the iptables command";
  // Affects this thread (the test's) and what it starts from now on; CTest
  // runs each test in its own process.
  if (unshare(CLONE_NEWNET) != 0) {
    GTEST_SKIP() << "unshare(CLONE_NEWNET): " << std::strerror(errno);
  }
  std::string why;
  if (!bringLoopbackUp(&why)) GTEST_SKIP() << why;
  if (runCommand({iptables, "-w", "-S", "OUTPUT"}, Millis(20000)) != 0) {
    GTEST_SKIP() << "iptables does not work in a fresh network namespace";
  }

  ::setenv("ECCL_SHM", "0", 1);  // this test's process only (CTest runs each in its own)
  InProcessMaster master(kFailureMs);
  ASSERT_TRUE(master.ok());
  PeerSpec spec;
  spec.count = kFullCount;  // ops long enough for the iptables runs to land inside one
  spec.noReconnect = true;
  Cluster c = makeCluster(master.address(), spec);
  int host = 2;
  const auto spawnBound = [&] {
    PeerSpec s = spec;
    s.bind = "127.0.0." + std::to_string(host);
    ++host;
    return c.spawn(s);
  };
  for (int i = 0; i < 4; ++i) ASSERT_NE(spawnBound(), nullptr);
  ASSERT_TRUE(c.waitSteady(4, Millis(120000))) << c.transcripts();

  std::mt19937 rng = seededRng("LinkCut");
  const int64_t bound = (2 * int64_t{kFailureMs} + 500) * kMsNs;  // 500 ms slack: iptables runs
  bool hit = false;
  for (int round = 0; round < 3 && !hit && !HasFailure(); ++round) {
    // Ranks 1 and 2 are ring neighbours (rings follow rank order).
    Process* a = c.byRank(1);
    Process* b = c.byRank(2);
    ASSERT_TRUE(a != nullptr && b != nullptr) << c.transcripts();
    const PeerSpec sa = c.specOf(a), sb = c.specOf(b);
    std::map<Process*, size_t> from = c.linesNow();
    std::vector<Process*> others;
    for (const auto& [p, line] : from) {
      if (p != a && p != b) others.push_back(p);
    }
    IptablesRules rules(iptables);
    // Two iptables runs take tens of ms: aim early in the op.
    ASSERT_TRUE(aimInsideNextOp(*a, rng, 0.1, 0.6)) << a->transcript();
    const int64_t tCut = nowNs();
    ASSERT_TRUE(rules.add({"-p", "tcp", "-s", sa.bind, "-d", sb.bind, "-j", "DROP"}));
    ASSERT_TRUE(rules.add({"-p", "tcp", "-s", sb.bind, "-d", sa.bind, "-j", "DROP"}));
    const int64_t tCutDone = nowNs();
    std::printf("[LinkCut] round %d: cut %s (%s) <-> %s (%s) in %.0f ms\n", round,
                a->name().c_str(), sa.bind.c_str(), b->name().c_str(), sb.bind.c_str(),
                ms(tCutDone - tCut));

    // One of the two is removed and, kicked, exits 3.
    Process* kicked = nullptr;
    ASSERT_TRUE(waitUntil([&] {
      if (a->waitExit(Millis(0))) kicked = a;
      else if (b->waitExit(Millis(0))) kicked = b;
      return kicked != nullptr;
    }, Millis(4 * kFailureMs + 20000)))
        << "neither end of the cut link was removed\n" << c.transcripts();
    EXPECT_EQ(kicked->exitCode(), 3) << kicked->describeExit() << "\n" << kicked->transcript();
    Process* kept = kicked == a ? b : a;
    EXPECT_TRUE(kicked->waitLine(event("kicked"), Millis(0), from[kicked])) << kicked->transcript();

    // Each survivor's first failing op after the cut. Ops whose data had all
    // crossed before the rules went in may still succeed right after them.
    std::vector<Process*> survivors = others;
    survivors.push_back(kept);
    std::vector<Outcome> outs;
    bool allSpanning = true;
    for (Process* s : survivors) {
      const auto failing = s->waitLine(
          [&](const Line& l) { return isOp(l) && t1Of(l) >= tCutDone && rcOf(l) != ecclSuccess; },
          Millis(4 * kFailureMs + 20000), from[s]);
      ASSERT_TRUE(failing) << s->name() << " never failed an op after the cut\n" << s->transcript();
      Outcome o{s, *failing, s->lineAt(*failing), false};
      o.spanning = t0Of(o.line) <= tCut;
      allSpanning = allSpanning && o.spanning;
      for (const Line& l : s->linesFrom(from[s])) {
        if (isOp(l) && rcOf(l) == ecclSuccess && t1Of(l) >= tCutDone && t1Of(l) <= t1Of(o.line)) {
          EXPECT_LE(t1Of(l) - tCutDone, kTailNs)
              << s->name() << " completed an op well after the cut, before failing: " << l.text;
        }
      }
      EXPECT_EQ(rcOf(o.line), ecclPeerLost) << s->name() << ": " << o.line.text;
      EXPECT_EQ(o.line.fields.num("ok"), 1) << s->name() << ": " << o.line.text;
      EXPECT_LE(t1Of(o.line) - tCut, bound)
          << s->name() << " returned " << ms(t1Of(o.line) - tCut) << " ms after the cut";
      std::printf("[LinkCut]   %s rc=%lld after %.0f ms%s\n", s->name().c_str(),
                  static_cast<long long>(rcOf(o.line)), ms(t1Of(o.line) - tCut),
                  o.spanning ? "" : " (op started after the cut)");
      outs.push_back(o);
    }
    for (const Outcome& o : outs) expectNextOpSucceeds(o, 3);
    hit = allSpanning;
    rules.clear();
    if (!hit && !HasFailure()) {
      // The cut fell between ops somewhere: again, with a replacement.
      ASSERT_NE(spawnBound(), nullptr);
      ASSERT_TRUE(c.waitSteady(4, Millis(120000))) << c.transcripts();
    }
  }
  expectEveryBufferChecked(c);
  expectNoDivergence(c);
  if (!HasFailure()) {
    EXPECT_TRUE(hit) << "in 3 rounds the cut never fell inside a collective";
  }
}

// A lost master: every pending and later call returns ecclMasterUnreachable
// within the failure timeout (plus 1 s slack), never hangs. One attempt with
// an eccl-master process and 3 peers; *hit tells whether some peer had an op
// in flight at the fault.
void masterLossAttempt(const char* test, int sig, std::mt19937& rng, bool* hit) {
  Process master("master", {ECCL_MASTER_BIN, "--listen", "127.0.0.1:0", "--heartbeat-ms", "500",
                            "--failure-timeout-ms", std::to_string(kFailureMs)});
  ASSERT_TRUE(master.ok()) << master.startError();
  const std::string prefix = "eccl-master listening on ";
  const auto li = master.waitLine(
      [&](const Line& l) { return l.text.rfind(prefix, 0) == 0; }, Millis(10000));
  ASSERT_TRUE(li) << master.transcript();
  const std::string address = master.lineAt(*li).text.substr(prefix.size());

  PeerSpec spec;
  spec.exitOnMasterLoss = true;
  Cluster c = makeCluster(address, spec);
  startPeers(c, 3);
  if (::testing::Test::HasFatalFailure()) return;
  std::map<Process*, size_t> from = c.linesNow();

  ASSERT_TRUE(aimInsideNextOp(*c.alive()[0], rng)) << c.transcripts();
  const int64_t tFault = nowNs();
  ASSERT_TRUE(master.signal(sig));
  if (sig == SIGKILL) {
    ASSERT_TRUE(master.waitExit(Millis(5000)));
    EXPECT_TRUE(master.killedBySignal(SIGKILL)) << master.describeExit();
  } else {
    ASSERT_TRUE(master.waitStopped(Millis(5000))) << "the master was not seen stopped";
  }

  const int64_t bound = (int64_t{kFailureMs} + 1000) * kMsNs;
  int spanning = 0;
  for (Process* p : c.all()) {
    // An op or update line reporting the loss.
    const auto i = p->waitLine(
        [](const Line& l) {
          return (isOp(l) || l.fields.str("what") == "update") && rcOf(l) == ecclMasterUnreachable;
        },
        Millis(kFailureMs + 15000), from[p]);
    ASSERT_TRUE(i) << p->name() << " never reported ecclMasterUnreachable\n" << p->transcript();
    const Line l = p->lineAt(*i);
    const int64_t t = isOp(l) ? t1Of(l) : l.fields.num("t");
    EXPECT_LE(t - tFault, bound) << p->name() << " reported the loss " << ms(t - tFault)
                                 << " ms after the fault: " << l.text;
    const bool inFlight = isOp(l) && t0Of(l) <= tFault;
    spanning += inFlight ? 1 : 0;
    std::printf("[%s] %s: %s rc=%lld after %.0f ms%s\n", test, p->name().c_str(),
                l.fields.event.c_str(), static_cast<long long>(rcOf(l)), ms(t - tFault),
                inFlight ? " (op in flight at the fault)" : "");
    EXPECT_TRUE(p->waitExit(Millis(kFailureMs + 15000))) << p->name() << " did not exit";
    EXPECT_EQ(p->exitCode(), 4) << p->name() << " " << p->describeExit() << "\n" << p->transcript();
  }
  expectEveryBufferChecked(c);
  *hit = spanning > 0;
}

// Up to 3 attempts until the fault lands inside a collective.
void masterLoss(const char* test, int sig) {
  std::mt19937 rng = seededRng(test);
  bool hit = false;
  for (int attempt = 0; attempt < 3 && !hit && !::testing::Test::HasFailure(); ++attempt) {
    masterLossAttempt(test, sig, rng, &hit);
  }
  if (!::testing::Test::HasFailure()) {
    EXPECT_TRUE(hit) << "in 3 attempts the master was always lost between ops";
  }
}

// SIGKILL: the master's connections close at once.
TEST(Fault, MasterKilled) { masterLoss("MasterKilled", SIGKILL); }

// SIGSTOP: a hung master's connections stay open and silent, so only the
// peers' own failure timeout can notice.
TEST(Fault, MasterStopped) { masterLoss("MasterStopped", SIGSTOP); }

// Random joins and SIGKILLs for ECCL_CHURN_SECONDS (default 180): nothing
// hangs, no buffer is ever wrong, and no two members disagree on an op.
TEST(Fault, Churn) {
  const char* env = std::getenv("ECCL_CHURN_SECONDS");
  const double seconds = env != nullptr ? std::atof(env) : 180.0;
  ASSERT_GT(seconds, 0.0);
  InProcessMaster master(kFailureMs);
  ASSERT_TRUE(master.ok());
  PeerSpec spec;
  spec.count = size_t{256} << 10;
  Cluster c = makeCluster(master.address(), spec);
  std::mt19937 rng = seededRng("Churn");
  constexpr size_t kMaxAlive = 8;

  // Line bookkeeping, incremental over every peer ever spawned.
  std::map<Process*, size_t> cursor;
  Agreement agreement;
  long opsCompleted = 0, opsFailed = 0, joins = 0, faults = 0;
  int64_t lastProgress = nowNs();
  const auto scan = [&] {
    for (Process* p : c.all()) {
      const std::vector<Line> fresh = p->linesFrom(cursor[p]);
      cursor[p] += fresh.size();
      for (const Line& l : fresh) {
        if (l.fields.event == "admitted" || l.fields.event == "reconnected") ++joins;
        if (!isOp(l)) continue;
        EXPECT_EQ(l.fields.num("ok"), 1) << p->name() << ": wrong buffer: " << l.text;
        agreement.add(p->name(), l);
        if (rcOf(l) != ecclSuccess) {
          ++opsFailed;
          continue;
        }
        ++opsCompleted;
        lastProgress = std::max(lastProgress, l.arrivalNs);
      }
    }
  };

  std::uniform_real_distribution<double> pause(0.3, 2.0), coin(0.0, 1.0);
  // Half the peers all-reduce out of place: a failed op must copy their
  // input into a receive buffer that never held it.
  const auto spawnOne = [&] {
    PeerSpec s = spec;
    s.outOfPlace = coin(rng) < 0.5;
    return c.spawn(s);
  };
  for (int i = 0; i < 3; ++i) ASSERT_NE(spawnOne(), nullptr);
  const int64_t end = nowNs() + static_cast<int64_t>(seconds * 1e9);
  while (nowNs() < end && !HasFailure()) {
    const int64_t next = nowNs() + static_cast<int64_t>(pause(rng) * 1e9);
    while (nowNs() < next && !HasFailure()) {
      std::this_thread::sleep_for(Millis(50));
      scan();
      if (nowNs() - lastProgress > 30000 * kMsNs) {
        ADD_FAILURE() << "no op completed anywhere for 30 s\n" << c.transcripts();
      }
    }
    for (Process* p : c.all()) {
      // Victims are reaped as they are killed: anyone else exited by itself.
      if (!p->reaped() && p->waitExit(Millis(0))) {
        ADD_FAILURE() << p->name() << " exited by itself: " << p->describeExit() << "\n"
                      << p->transcript();
      }
    }
    const std::vector<Process*> a = c.alive();
    if (a.size() < kMaxAlive && (a.size() <= 1 || coin(rng) < 0.5)) {
      ASSERT_NE(spawnOne(), nullptr);
    } else {
      Process* victim = a[std::uniform_int_distribution<size_t>(0, a.size() - 1)(rng)];
      ASSERT_TRUE(victim->signal(SIGKILL));
      ASSERT_TRUE(victim->waitExit(Millis(5000)));
      EXPECT_TRUE(victim->killedBySignal(SIGKILL)) << victim->describeExit();
      ++faults;
    }
  }
  scan();
  std::printf("[Churn] %.0f s: %ld ops completed (%ld failed and retried), %ld faults injected, "
              "%ld joins, %zu peers spawned, %zu alive at the end\n",
              seconds, opsCompleted, opsFailed, faults, joins, c.all().size(), c.alive().size());
  EXPECT_GT(opsCompleted, 0);
  EXPECT_GT(faults, 0);
}

}  // namespace
}  // namespace eccl::fault
