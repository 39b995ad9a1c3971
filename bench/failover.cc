// failover: what the loss of one peer costs the survivors (DESIGN.md §9).
//
//   failover [--peers 4] [--mib 64] [--rounds 10] [--failure-ms 2000]
//            [--heartbeat-ms 500] [--signal kill|stop] [--seed N] [--memory host|cuda]
//
// An embedded master and --peers eccl-fault-peer processes loop
// update-topology -> in-place float32 sum all-reduce of --mib MiB -> verify.
// Each round SIGKILLs (or SIGSTOPs) a random peer at a random moment inside an
// all-reduce and measures, from the peers' own CLOCK_MONOTONIC stamps:
//
//   detect   the signal -> the last survivor's ecclPeerLost return
//   recover  that return -> the last survivor's next successful all-reduce
//            (update-topology with new links, then the whole op on one peer fewer)
//
// next to the steady step of the same run (one successful op's return to the
// next's at full world: verify, update-topology, the op) for scale. Then a
// replacement joins (a stopped peer is resumed, learns it was dropped and
// rejoins) and the world grows back before the next round. A round whose
// signal did not land inside every survivor's op (it fell between ops, or the
// op completed anyway) is a miss: listed, not measured.
//
// Exit status: 0 when --rounds rounds were measured, 1 when something broke
// (a survivor's op did not fail or did not hand back its input, a retry did
// not succeed, the world did not grow back), 2 on bad arguments.
#include <CLI/CLI.hpp>

#include <errno.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "fault/cluster.h"
#include "fault/harness.h"

namespace eccl::fault {
namespace {

struct Options {
  int peers = 4;
  double mib = 64;
  int rounds = 10;
  uint32_t failureMs = 2000;
  uint32_t heartbeatMs = 500;
  std::string signal = "kill";
  unsigned seed = 0;
  std::string memory = "host";
  std::string peerBinary = ECCL_FAULT_PEER_BIN;
};

struct Round {
  bool hit = false;
  std::string miss;  // why not, when !hit
  double detectMs = 0;
  double recoverMs = 0;
};

// Thrown when the run cannot go on; main prints it and exits 1.
struct Broken {
  std::string what;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

class Bench {
 public:
  Bench(const Options& o, const std::string& masterAddress)
      : o_(o), cluster_(o.peerBinary, masterAddress, spec(o)), rng_(o.seed),
        sig_(o.signal == "stop" ? SIGSTOP : SIGKILL) {}

  int run() {
    for (int i = 0; i < o_.peers; ++i) spawnOrThrow();
    waitSteady();
    std::printf("#%6s %8s %5s %11s %12s\n", "round", "victim", "rank", "detect(ms)", "recover(ms)");
    std::vector<double> detect, recover;
    const int maxAttempts = 3 * o_.rounds;
    int attempt = 0;
    for (; attempt < maxAttempts && static_cast<int>(detect.size()) < o_.rounds; ++attempt) {
      Process* victim = pickVictim();
      const std::optional<Line> last = Cluster::lastOp(*victim);
      const long long rank = last ? last->fields.num("rank") : -1;
      const size_t victimFrom = victim->lineCount();
      const Round r = round(victim);
      if (r.hit) {
        detect.push_back(r.detectMs);
        recover.push_back(r.recoverMs);
        std::printf(" %6d %8s %5lld %11.0f %12.0f\n", attempt, victim->name().c_str(), rank,
                    r.detectMs, r.recoverMs);
      } else {
        std::printf(" %6d %8s %5lld   miss: %s\n", attempt, victim->name().c_str(), rank,
                    r.miss.c_str());
      }
      std::fflush(stdout);
      regrow(victim, victimFrom);
    }
    summarize(detect, recover, attempt);
    return static_cast<int>(detect.size()) >= o_.rounds ? 0 : 1;
  }

 private:
  static PeerSpec spec(const Options& o) {
    PeerSpec s;
    s.count = static_cast<size_t>(o.mib * (1 << 20) / sizeof(float));
    s.failureMs = o.failureMs;
    s.heartbeatMs = o.heartbeatMs;
    s.memory = o.memory;
    return s;
  }

  void spawnOrThrow() {
    if (cluster_.spawn() == nullptr) throw Broken{"cannot start " + o_.peerBinary};
  }

  void waitSteady() {
    if (!cluster_.waitSteady(o_.peers, Millis(120000))) {
      throw Broken{"no steady world of " + std::to_string(o_.peers) + "\n" +
                   cluster_.transcripts()};
    }
  }

  Process* pickVictim() {
    const std::vector<Process*> a = cluster_.alive();
    return a[std::uniform_int_distribution<size_t>(0, a.size() - 1)(rng_)];
  }

  // One signal and what the survivors saw.
  Round round(Process* victim) {
    std::map<Process*, size_t> from = cluster_.linesNow(victim);
    std::vector<Process*> survivors;
    for (const auto& [p, line] : from) survivors.push_back(p);
    const int world = static_cast<int>(survivors.size()) + 1;
    if (!aimInsideNextOp(*victim, rng_)) {
      throw Broken{victim->name() + " stopped running ops\n" + victim->transcript()};
    }
    const int64_t tFault = nowNs();
    if (!victim->signal(sig_)) throw Broken{"kill(" + victim->name() + "): " + std::strerror(errno)};
    const bool fired = sig_ == SIGKILL
                           ? victim->waitExit(Millis(5000)) && victim->killedBySignal(SIGKILL)
                           : victim->waitStopped(Millis(5000));
    if (!fired) throw Broken{victim->name() + " did not take " + strsignal(sig_)};

    Round r;
    r.hit = true;
    int64_t lastFailed = 0, lastRetry = 0;
    const Millis wait(2 * o_.failureMs + 30000);
    for (Process* s : survivors) {
      const std::optional<size_t> i = s->waitLine(
          [&](const Line& l) { return isOp(l) && t1Of(l) >= tFault; }, wait, from[s]);
      if (!i) throw Broken{s->name() + " finished no op after the fault\n" + s->transcript()};
      const Line l = s->lineAt(*i);
      if (l.fields.num("ok") != 1) {
        throw Broken{s->name() + " did not hold the right bytes after its op: " + l.text};
      }
      if (t0Of(l) > tFault || rcOf(l) != ecclPeerLost) {
        if (r.hit) {
          r.hit = false;
          const char* what = t0Of(l) > tFault           ? " was between ops"
                             : rcOf(l) == ecclSuccess ? " completed its op"
                                                      : " failed with another result";
          r.miss = s->name() + what + " (rc=" + std::to_string(rcOf(l)) + ")";
        }
        continue;
      }
      const std::optional<size_t> next = s->waitLine(isOp, wait, *i + 1);
      if (!next) throw Broken{s->name() + " ran no op after its failed one\n" + s->transcript()};
      const Line retry = s->lineAt(*next);
      if (!opSucceeded(retry) || worldOf(retry) != world - 1) {
        throw Broken{s->name() + ": the retry at world " + std::to_string(world - 1) +
                     " did not succeed: " + retry.text};
      }
      lastFailed = std::max(lastFailed, t1Of(l));
      lastRetry = std::max(lastRetry, t1Of(retry));
    }
    if (r.hit) {
      r.detectMs = ms(lastFailed - tFault);
      r.recoverMs = ms(lastRetry - lastFailed);
    }
    return r;
  }

  // Back to --peers: a replacement for a killed peer; a stopped one resumes,
  // is told it was dropped (ecclKicked) and rejoins as a newcomer.
  void regrow(Process* victim, size_t victimFrom) {
    if (sig_ == SIGSTOP) {
      victim->signal(SIGCONT);
      if (!victim->waitLine(event("reconnected"), Millis(60000), victimFrom)) {
        throw Broken{victim->name() + " did not rejoin after SIGCONT\n" + victim->transcript()};
      }
    } else {
      spawnOrThrow();
    }
    waitSteady();
  }

  // The steady step and op time at full world over every peer's lines:
  // consecutive successful ops of one epoch.
  void steady(double* stepMs, double* opMs) const {
    std::vector<double> steps, ops;
    for (const Process* p : cluster_.all()) {
      std::optional<Line> prev;
      for (const Line& l : p->lines()) {
        if (!isOp(l)) continue;
        if (opSucceeded(l) && worldOf(l) == o_.peers) {
          ops.push_back(ms(t1Of(l) - t0Of(l)));
          if (prev && opSucceeded(*prev) && worldOf(*prev) == o_.peers &&
              prev->fields.num("epoch") == l.fields.num("epoch")) {
            steps.push_back(ms(t1Of(l) - t1Of(*prev)));
          }
        }
        prev = l;
      }
    }
    *stepMs = median(steps);
    *opMs = median(ops);
  }

  void summarize(const std::vector<double>& detect, const std::vector<double>& recover,
                 int attempts) const {
    double stepMs = 0, opMs = 0;
    steady(&stepMs, &opMs);
    const double detectBound = 2.0 * o_.failureMs, recoverBound = 1000;
    const auto maxOf = [](const std::vector<double>& v) {
      return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
    };
    std::printf("# %zu of %d rounds measured\n", detect.size(), attempts);
    std::printf("# steady step at world %d: median %.0f ms (the all-reduce alone %.0f ms)\n",
                o_.peers, stepMs, opMs);
    if (detect.empty()) return;
    std::printf("# detect:  %s -> last survivor's ecclPeerLost: median %.0f ms, max %.0f ms "
                "(target <= %.0f ms: %s)\n",
                sig_ == SIGKILL ? "SIGKILL" : "SIGSTOP", median(detect), maxOf(detect),
                detectBound, maxOf(detect) <= detectBound ? "met" : "NOT met");
    std::printf("# recover: -> next successful all-reduce on %d peers: median %.0f ms, max %.0f "
                "ms (target <= %.0f ms: %s)\n",
                o_.peers - 1, median(recover), maxOf(recover), recoverBound,
                maxOf(recover) <= recoverBound ? "met" : "NOT met");
  }

  const Options& o_;
  Cluster cluster_;
  std::mt19937 rng_;
  int sig_;
};

}  // namespace
}  // namespace eccl::fault

int main(int argc, char** argv) {
  using eccl::fault::Options;
  CLI::App app{"ECCL failover benchmark: the cost of one peer's death to the survivors"};
  Options o;
  o.seed = std::random_device{}();
  app.add_option("--peers", o.peers, "peer processes")->check(CLI::Range(2, 64))
      ->capture_default_str();
  app.add_option("--mib", o.mib, "all-reduce size in MiB (float32)")
      ->check(CLI::Range(0.001, 4096.0))->capture_default_str();
  app.add_option("--rounds", o.rounds, "faults to measure (at most 3x as many are tried)")
      ->check(CLI::Range(1, 1000))->capture_default_str();
  app.add_option("--failure-ms", o.failureMs, "failure timeout of master and peers")
      ->check(CLI::Range(100, 600000))->capture_default_str();
  app.add_option("--heartbeat-ms", o.heartbeatMs, "heartbeat interval of master and peers")
      ->check(CLI::Range(10, 60000))->capture_default_str();
  app.add_option("--signal", o.signal, "kill (SIGKILL) or stop (SIGSTOP, a hung peer)")
      ->check(CLI::IsMember({"kill", "stop"}))->capture_default_str();
  app.add_option("--seed", o.seed, "random seed (victims and moments); printed");
  app.add_option("--memory", o.memory, "all-reduce host or CUDA device buffers")
      ->check(CLI::IsMember({"host", "cuda"}));
  app.add_option("--peer-bin", o.peerBinary, "the eccl-fault-peer binary")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (o.heartbeatMs >= o.failureMs) {
    std::fprintf(stderr, "failover: --heartbeat-ms must be below --failure-ms\n");
    return 2;
  }
  std::printf("# failover: %d peers, %g MiB float32 sum all-reduce, failure timeout %u ms, "
              "heartbeat %u ms, SIG%s, seed %u\n",
              o.peers, o.mib, o.failureMs, o.heartbeatMs, o.signal == "stop" ? "STOP" : "KILL",
              o.seed);
  std::fflush(stdout);
  eccl::fault::InProcessMaster master(o.failureMs, o.heartbeatMs);
  if (!master.ok()) return 1;
  try {
    return eccl::fault::Bench(o, master.address()).run();
  } catch (const eccl::fault::Broken& b) {
    std::fprintf(stderr, "failover: %s\n", b.what.c_str());
    return 1;
  }
}
