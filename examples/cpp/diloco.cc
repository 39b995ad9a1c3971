// eccl-diloco: DiLoCo-style training on one machine, with peers joining and
// dying (docs/state.md).
//
// The model is least-squares regression y = X w on generated data. Every
// outer step each peer: syncs the shared state (weights and the outer
// optimizer's momentum) with ecclSharedStateSync, so a newcomer receives it
// and every member provably holds the same bits; runs H inner SGD steps on
// its own minibatches; all-reduces the pseudo-gradient (weights before minus
// after, averaged, optionally through a codec); and applies Nesterov momentum
// to the shared weights. Each peer prints the state hash and the loss on a
// fixed evaluation set after every outer step: every member prints the same
// hash for the same revision.
//
// The launcher runs an embedded master and N peers; one more joins after
// --join-after seconds, and the second peer is SIGKILLed after --kill-after.
//
//   eccl-diloco [--peers 3] [--steps 20] [--inner 8] [--step-ms 60]
//               [--join-after 0.5] [--kill-after 1.2] [--quant none|bf16|uint8|...]
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "eccl/eccl.h"

extern char** environ;

namespace {

constexpr int kDim = 64;
constexpr int kEval = 512;
constexpr int kBatch = 32;

struct Args {
  int peers = 3;
  int steps = 20;  // outer steps (shared-state revisions) to run
  int inner = 8;
  int stepMs = 60;
  double joinAfter = 0.5;
  double killAfter = 1.2;  // < 0: nobody is killed
  std::string quant = "none";
  std::string join;  // internal: run as a peer of this master
};

[[noreturn]] void die(const char* what, ecclComm_t comm) {
  std::fprintf(stderr, "eccl-diloco: %s: %s\n", what, ecclGetLastError(comm));
  std::exit(1);
}

// The true weights and one sample (x, y) of the generated data.
float trueWeight(int j) { return std::sin(0.3f * static_cast<float>(j)) + 0.5f; }
void sample(std::mt19937& rng, float* x, float* y) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  float dot = 0;
  for (int j = 0; j < kDim; ++j) {
    x[j] = n(rng);
    dot += x[j] * trueWeight(j);
  }
  *y = dot + 0.01f * n(rng);
}

// Mean squared error on a fixed evaluation set (the same on every peer).
double evalLoss(const std::vector<float>& w) {
  std::mt19937 rng(12345);
  double loss = 0;
  float x[kDim], y;
  for (int i = 0; i < kEval; ++i) {
    sample(rng, x, &y);
    float p = 0;
    for (int j = 0; j < kDim; ++j) p += x[j] * w[j];
    loss += (p - y) * (p - y);
  }
  return loss / kEval;
}

uint64_t fnv1a(const std::vector<float>& a, const std::vector<float>& b) {
  uint64_t h = 14695981039346656037ull;
  for (const auto* v : {&a, &b}) {
    const auto* p = reinterpret_cast<const unsigned char*>(v->data());
    for (size_t i = 0; i < v->size() * sizeof(float); ++i) h = (h ^ p[i]) * 1099511628211ull;
  }
  return h;
}

ecclQuantization_t quantOf(const std::string& name) {
  const char* names[] = {"none", "fp16", "bf16", "uint8", "uint4"};
  for (int i = 0; i < 5; ++i) {
    if (name == names[i]) return static_cast<ecclQuantization_t>(i);
  }
  std::fprintf(stderr, "eccl-diloco: unknown --quant %s\n", name.c_str());
  std::exit(2);
}

int peerMain(const Args& a) {
  ecclCommConfig_t cfg = ECCL_COMM_CONFIG_INIT;
  cfg.masterAddress = a.join.c_str();
  ecclComm_t comm = nullptr;
  if (ecclCommCreate(&cfg, &comm) != ecclSuccess) die("ecclCommCreate", nullptr);
  if (ecclCommConnect(comm) != ecclSuccess) die("ecclCommConnect", comm);

  // The shared state: weights and outer momentum. A newcomer's zeros are
  // replaced by the group's at its first sync.
  std::vector<float> w(kDim, 0.0f), m(kDim, 0.0f), local(kDim), delta(kDim);
  ecclTensorInfo_t tensors[] = {{"weights", w.data(), w.size(), ecclFloat32, ecclMemHost, 0},
                                {"momentum", m.data(), m.size(), ecclFloat32, ecclMemHost, 0}};
  ecclSharedState_t state = ECCL_SHARED_STATE_INIT;
  state.tensors = tensors;
  state.tensorCount = 2;
  bool synced = false;  // a first sync may give any revision: ours is 0
  uint64_t lastRevision = 0;
  std::mt19937 rng(static_cast<uint32_t>(getpid()));  // each peer its own minibatches
  ecclOpOptions_t opts = ECCL_OP_OPTIONS_INIT;
  opts.quantization = quantOf(a.quant);
  const float innerLr = 0.02f, outerLr = 0.7f, mu = 0.9f;

  bool justAdmitted = true, lost = false;
  for (;;) {
    if (lost) {
      if (ecclCommUpdateTopology(comm) != ecclSuccess) die("ecclCommUpdateTopology", comm);
      lost = false;
    } else if (!justAdmitted) {
      int rank = 0, pending = 0;
      ecclCommGetRank(comm, &rank);
      if (ecclCommArePeersPending(comm, &pending) != ecclSuccess) die("pending", comm);
      int32_t flags[2] = {pending, rank == 0 && lastRevision >= static_cast<uint64_t>(a.steps)};
      ecclResult_t r = ecclAllReduce(flags, flags, 2, ecclInt32, ecclMax, nullptr, comm, nullptr);
      if (r == ecclPeerLost) {
        lost = true;
        continue;
      }
      if (r != ecclSuccess) die("agreement", comm);
      if (flags[1]) break;
      if (flags[0] && ecclCommUpdateTopology(comm) != ecclSuccess) die("update", comm);
    }
    justAdmitted = false;

    state.revision = synced ? lastRevision + 1 : 0;
    ecclResult_t r = ecclSharedStateSync(comm, &state, ecclSyncEnforcePopular, nullptr);
    if (r == ecclPeerLost) {
      lost = true;
      continue;
    }
    if (r != ecclSuccess) die("ecclSharedStateSync", comm);
    synced = true;
    lastRevision = state.revision;

    // Inner steps on this peer's own data.
    local = w;
    float x[kDim], y;
    for (int h = 0; h < a.inner; ++h) {
      std::vector<float> grad(kDim, 0.0f);
      for (int i = 0; i < kBatch; ++i) {
        sample(rng, x, &y);
        float p = 0;
        for (int j = 0; j < kDim; ++j) p += x[j] * local[j];
        for (int j = 0; j < kDim; ++j) grad[j] += 2.0f * (p - y) * x[j] / kBatch;
      }
      for (int j = 0; j < kDim; ++j) local[j] -= innerLr * grad[j];
    }
    for (int j = 0; j < kDim; ++j) delta[j] = w[j] - local[j];  // pseudo-gradient
    r = ecclAllReduce(delta.data(), delta.data(), kDim, ecclFloat32, ecclAvg, &opts, comm, nullptr);
    if (r == ecclPeerLost) {
      lost = true;
      continue;
    }
    if (r != ecclSuccess) die("ecclAllReduce", comm);
    // Nesterov outer step: identical inputs on every member, identical bits out.
    for (int j = 0; j < kDim; ++j) {
      m[j] = mu * m[j] + delta[j];
      w[j] -= outerLr * (delta[j] + mu * m[j]);
    }
    int rank = 0, world = 0;
    ecclCommGetRank(comm, &rank);
    ecclCommGetWorldSize(comm, &world);
    std::printf("outer revision=%llu world=%d rank=%d pid=%d hash=%016llx loss=%.6f\n",
                static_cast<unsigned long long>(lastRevision), world, rank, static_cast<int>(getpid()),
                static_cast<unsigned long long>(fnv1a(w, m)), evalLoss(w));
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::milliseconds(a.stepMs));
  }
  ecclCommDestroy(comm);
  return 0;
}

pid_t spawnPeer(const std::string& addr, const Args& a) {
  std::vector<std::string> args = {"eccl-diloco", "--join", addr, "--steps", std::to_string(a.steps),
                                   "--inner", std::to_string(a.inner), "--step-ms",
                                   std::to_string(a.stepMs), "--quant", a.quant};
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ) != 0) {
    std::perror("posix_spawn");
    std::exit(1);
  }
  return pid;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--peers") a.peers = std::atoi(v.c_str());
    else if (k == "--steps") a.steps = std::atoi(v.c_str());
    else if (k == "--inner") a.inner = std::atoi(v.c_str());
    else if (k == "--step-ms") a.stepMs = std::atoi(v.c_str());
    else if (k == "--join-after") a.joinAfter = std::atof(v.c_str());
    else if (k == "--kill-after") a.killAfter = std::atof(v.c_str());
    else if (k == "--quant") a.quant = v;
    else if (k == "--join") a.join = v;
    else {
      std::fprintf(stderr, "usage: %s [--peers N] [--steps S] [--inner H] [--step-ms MS] "
                           "[--join-after S] [--kill-after S] [--quant NAME]\n", argv[0]);
      return 2;
    }
  }
  quantOf(a.quant);
  if (!a.join.empty()) return peerMain(a);

  ecclMasterConfig_t mcfg = ECCL_MASTER_CONFIG_INIT;
  mcfg.listenAddress = "127.0.0.1";
  ecclMaster_t master = nullptr;
  uint16_t port = 0;
  if (ecclMasterCreate(&mcfg, &master) != ecclSuccess || ecclMasterGetPort(master, &port) != ecclSuccess) {
    die("ecclMasterCreate", nullptr);
  }
  const std::string addr = "127.0.0.1:" + std::to_string(port);
  std::printf("eccl-diloco: master on %s; %d peers, %d outer steps of %d inner steps, codec %s\n",
              addr.c_str(), a.peers, a.steps, a.inner, a.quant.c_str());
  std::fflush(stdout);
  const auto start = std::chrono::steady_clock::now();
  std::vector<pid_t> pids;
  for (int i = 0; i < a.peers; ++i) pids.push_back(spawnPeer(addr, a));
  std::this_thread::sleep_until(start + std::chrono::duration<double>(a.joinAfter));
  pids.push_back(spawnPeer(addr, a));
  std::printf("event join pid=%d\n", static_cast<int>(pids.back()));
  std::fflush(stdout);
  pid_t victim = -1;
  if (a.killAfter >= 0 && a.peers > 1) {
    std::this_thread::sleep_until(start + std::chrono::duration<double>(a.killAfter));
    victim = pids[1];
    kill(victim, SIGKILL);
    std::printf("event kill pid=%d\n", static_cast<int>(victim));
    std::fflush(stdout);
  }
  int rc = 0;
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (pid != victim && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) rc = 1;
  }
  ecclMasterDestroy(master);
  std::printf("eccl-diloco: %s\n", rc == 0 ? "all peers finished" : "a peer failed");
  return rc;
}
