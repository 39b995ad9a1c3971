#include "fault/cluster.h"

#include <algorithm>
#include <cstdio>

namespace eccl::fault {

std::function<bool(const Line&)> event(std::string name) {
  return [name = std::move(name)](const Line& l) { return l.fields.event == name; };
}

Cluster::Cluster(std::string peerBinary, std::string masterAddress, PeerSpec spec)
    : binary_(std::move(peerBinary)), master_(std::move(masterAddress)), spec_(std::move(spec)) {}

Process* Cluster::spawn(const PeerSpec& s) {
  const std::string id = "peer" + std::to_string(next_++);
  std::vector<std::string> argv = {binary_, "--master", master_, "--id", id, "--mode", s.mode,
                                   "--count", std::to_string(s.count), "--tags",
                                   std::to_string(s.tags), "--failure-ms",
                                   std::to_string(s.failureMs), "--heartbeat-ms",
                                   std::to_string(s.heartbeatMs)};
  if (s.root >= 0) argv.insert(argv.end(), {"--root", std::to_string(s.root)});
  if (s.iters > 0) argv.insert(argv.end(), {"--iters", std::to_string(s.iters)});
  if (!s.bind.empty()) argv.insert(argv.end(), {"--bind", s.bind});
  if (s.quant != "none") argv.insert(argv.end(), {"--quant", s.quant});
  if (s.memory != "host") argv.insert(argv.end(), {"--memory", s.memory});
  if (s.transport != "tcp") argv.insert(argv.end(), {"--transport", s.transport});
  if (s.outOfPlace) argv.push_back("--out-of-place");
  if (s.noReconnect) argv.push_back("--no-reconnect");
  if (s.exitOnMasterLoss) argv.push_back("--exit-on-master-loss");
  if (s.optimize) argv.push_back("--optimize");
  auto p = std::make_unique<Process>(id, argv);
  if (!p->ok()) {
    std::fprintf(stderr, "spawning %s: %s\n", id.c_str(), p->startError().c_str());
    return nullptr;
  }
  peers_.push_back(std::move(p));
  specs_.push_back(s);
  return peers_.back().get();
}

std::vector<Process*> Cluster::alive() const {
  std::vector<Process*> v;
  for (const auto& p : peers_) {
    if (!p->reaped() && !p->stdoutClosed()) v.push_back(p.get());
  }
  return v;
}

std::vector<Process*> Cluster::all() const {
  std::vector<Process*> v;
  for (const auto& p : peers_) v.push_back(p.get());
  return v;
}

std::map<Process*, size_t> Cluster::linesNow(const Process* except) const {
  std::map<Process*, size_t> from;
  for (Process* p : alive()) {
    if (p != except) from[p] = p->lineCount();
  }
  return from;
}

const PeerSpec& Cluster::specOf(const Process* p) const {
  for (size_t i = 0; i < peers_.size(); ++i) {
    if (peers_[i].get() == p) return specs_[i];
  }
  return spec_;
}

std::optional<Line> Cluster::lastOp(const Process& p) {
  const std::vector<Line> lines = p.lines();
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
    if (isOp(*it)) return *it;
  }
  return std::nullopt;
}

bool Cluster::waitSteady(int world, Millis timeout) const {
  bool crashed = false;
  const bool steady = waitUntil([&] {
    for (const auto& p : peers_) crashed = crashed || (!p->reaped() && p->stdoutClosed());
    if (crashed) return true;
    const std::vector<Process*> a = alive();
    if (static_cast<int>(a.size()) != world) return false;
    int64_t epoch = -1;
    for (Process* p : a) {
      const std::optional<Line> l = lastOp(*p);
      if (!l || !opSucceeded(*l) || worldOf(*l) != world) return false;
      if (epoch >= 0 && l->fields.num("epoch") != epoch) return false;
      epoch = l->fields.num("epoch");
    }
    return true;
  }, timeout);
  return steady && !crashed;
}

Process* Cluster::byRank(int rank) const {
  for (Process* p : alive()) {
    const std::optional<Line> l = lastOp(*p);
    if (l && l->fields.num("rank") == rank) return p;
  }
  return nullptr;
}

std::string Cluster::transcripts() const {
  std::string s;
  for (const auto& p : peers_) s += p->transcript(25) + "  (" + p->describeExit() + ")\n";
  return s;
}

bool aimInsideNextOp(const Process& p, std::mt19937& rng, double lo, double hi) {
  const std::optional<size_t> first = p.waitLine(isOp, Millis(60000), p.lineCount());
  if (!first) return false;
  const std::optional<size_t> second = p.waitLine(isOp, Millis(60000), *first + 1);
  if (!second) return false;
  const Line prev = p.lineAt(*first), last = p.lineAt(*second);
  const int64_t gap = std::clamp<int64_t>(t0Of(last) - t1Of(prev), 0, 2000 * kMsNs);
  const int64_t duration = std::max<int64_t>(t1Of(last) - t0Of(last), kMsNs);
  std::uniform_real_distribution<double> u(lo, hi);
  sleepUntilNs(t1Of(last) + gap + static_cast<int64_t>(u(rng) * static_cast<double>(duration)));
  return true;
}

}  // namespace eccl::fault
