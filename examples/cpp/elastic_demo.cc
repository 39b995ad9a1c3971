// eccl-demo: the elastic all-reduce loop of a training job, on one machine.
//
// An embedded master and 4 peer processes all-reduce a 16 MiB "gradient"
// step after step; midway a 5th process registers, waits as pending, and is
// admitted at the next step boundary. Later one peer is killed with SIGKILL:
// the survivors' step fails with ecclPeerLost (their gradient holds its input
// again), they update the topology and redo the step without it. Rank 0
// prints world size, epoch, step time and bus bandwidth for every step, and
// the recovery time after the kill.
//
// --quant NAME all-reduces through a payload codec (fp16, bf16, uint8, uint4;
// docs/codecs.md): each step's line then shows the bytes that crossed the
// wire. Every rank's gradient is constant, so even uint8 and uint4 are exact
// here and the demo still checks every element.
//
//   eccl-demo [--peers 4] [--seconds 9] [--join-after 3] [--kill-after 6] [--mib 16]
//             [--quant none|fp16|bf16|uint8|uint4]
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "eccl/eccl.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  int peers = 4;
  double seconds = 9;
  double joinAfter = 3;
  double killAfter = 6;  // < 0: nobody is killed
  int mib = 16;
  std::string quant = "none";
  std::string join;      // internal: run as a peer of this master
  std::string killFile;  // internal: where the parent notes when it killed
};

int64_t nowNs() {  // steady_clock is CLOCK_MONOTONIC: comparable across processes
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

void die(const char* what, ecclComm_t comm) {
  std::fprintf(stderr, "eccl-demo: %s: %s\n", what, ecclGetLastError(comm));
  std::exit(1);
}

// The codec named on the command line; false for an unknown name.
bool parseQuant(const std::string& name, ecclQuantization_t* q) {
  const char* names[] = {"none", "fp16", "bf16", "uint8", "uint4"};
  for (int i = 0; i < 5; ++i) {
    if (name == names[i]) {
      *q = static_cast<ecclQuantization_t>(i);
      return true;
    }
  }
  return false;
}

#define CHECK(call, comm) \
  if ((call) != ecclSuccess) die(#call, comm)

// A collective that may lose a peer: ecclPeerLost is expected (the caller
// redoes the step), anything else ends the demo.
bool survived(ecclResult_t r, const char* what, ecclComm_t comm) {
  if (r == ecclPeerLost) return false;
  if (r != ecclSuccess) die(what, comm);
  return true;
}

// One step of a training loop: agree on admitting newcomers and on stopping,
// then all-reduce the gradient.
int peerMain(const Args& a) {
  ecclCommConfig_t cfg = ECCL_COMM_CONFIG_INIT;
  cfg.masterAddress = a.join.c_str();
  ecclComm_t comm = nullptr;
  CHECK(ecclCommCreate(&cfg, &comm), nullptr);
  CHECK(ecclCommConnect(comm), comm);  // blocks while pending
  const size_t count = static_cast<size_t>(a.mib) << 18;  // floats
  std::vector<float> grad(count);
  const auto start = Clock::now();
  int lastWorld = 0;
  // Connect returns at an update-topology step boundary, so a newcomer
  // starts where the members stand: right after the update.
  bool justAdmitted = true;
  bool lost = false;           // the last step lost a peer: update, then redo it
  Clock::time_point lostAt{};  // when that step returned ecclPeerLost
  for (int step = 0;; ++step) {
    int rank = 0, world = 0, pending = 0;
    if (lost) {
      CHECK(ecclCommUpdateTopology(comm), comm);  // drops the dead, new epoch and ring
    } else if (!justAdmitted) {
      CHECK(ecclCommGetRank(comm, &rank), comm);
      CHECK(ecclCommArePeersPending(comm, &pending), comm);
      // [anyone pending, rank 0 wants to stop]: every member decides alike.
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      int32_t flags[2] = {pending, rank == 0 && elapsed > a.seconds};
      if (!survived(ecclAllReduce(flags, flags, 2, ecclInt32, ecclMax, nullptr, comm, nullptr),
                    "agreement all-reduce", comm)) {
        if (rank == 0) {
          std::printf("step %3d | ecclPeerLost in the agreement all-reduce; updating the topology\n",
                      step);
          std::fflush(stdout);
        }
        lost = true;
        lostAt = Clock::now();
        --step;
        continue;
      }
      if (flags[1]) break;
      if (flags[0]) CHECK(ecclCommUpdateTopology(comm), comm);
    }
    justAdmitted = false;
    CHECK(ecclCommGetRank(comm, &rank), comm);
    CHECK(ecclCommGetWorldSize(comm, &world), comm);
    uint64_t epoch = 0;
    CHECK(ecclCommGetEpoch(comm, &epoch), comm);
    if (rank == 0 && world != lastWorld) {
      std::printf("---- epoch %llu: world size %d%s\n", static_cast<unsigned long long>(epoch), world,
                  lastWorld == 0 || world == lastWorld ? ""
                  : world > lastWorld               ? " (newcomers admitted at this update)"
                                                    : " (the dead peer dropped at this update)");
    }
    lastWorld = world;

    for (float& g : grad) g = static_cast<float>(rank + 1);
    const auto t0 = Clock::now();
    ecclOpInfo_t info = ECCL_OP_INFO_INIT;
    ecclOpOptions_t opts = ECCL_OP_OPTIONS_INIT;
    parseQuant(a.quant, &opts.quantization);  // checked in main
    const ecclResult_t r =
        ecclAllReduce(grad.data(), grad.data(), count, ecclFloat32, ecclSum, &opts, comm, &info);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!survived(r, "gradient all-reduce", comm)) {
      // All or nothing: every survivor fails this step and holds its input.
      if (grad.front() != static_cast<float>(rank + 1) || grad.back() != static_cast<float>(rank + 1)) {
        die("the failed step did not restore the gradient", comm);
      }
      if (rank == 0) {
        std::printf("step %3d | world %d | ecclPeerLost after %.1f ms in the step; gradient "
                    "restored; updating the topology\n", step, world, s * 1e3);
        std::fflush(stdout);
      }
      lost = true;
      lostAt = Clock::now();
      --step;
      continue;
    }
    const float want = static_cast<float>(world * (world + 1) / 2);
    if (grad.front() != want || grad.back() != want) die("wrong all-reduce result", comm);
    if (lost && rank == 0) {
      std::printf("---- recovered: step redone on %d peers, %.1f ms after the failed step returned",
                  world, std::chrono::duration<double, std::milli>(Clock::now() - lostAt).count());
      if (FILE* f = a.killFile.empty() ? nullptr : std::fopen(a.killFile.c_str(), "r")) {
        long long killedNs = 0;
        if (std::fscanf(f, "%lld", &killedNs) == 1 && killedNs > 0) {
          std::printf("; %.1f ms after the SIGKILL", (nowNs() - killedNs) / 1e6);
        }
        std::fclose(f);
      }
      std::printf("\n");
    }
    lost = false;
    if (rank == 0) {
      const double busbw = static_cast<double>(count * 4) * 2.0 * (world - 1) / world / s / 1e9;
      std::printf("step %3d | world %d | epoch %llu | step time %7.1f ms | busbw %6.3f GB/s", step,
                  world, static_cast<unsigned long long>(epoch), s * 1e3, busbw);
      if (opts.quantization != ecclQuantNone) {
        std::printf(" | %s: sent %.2f MiB on the wire for %.2f MiB", a.quant.c_str(),
                    info.bytesSent / 1048576.0, info.logicalBytesSent / 1048576.0);
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  CHECK(ecclCommDestroy(comm), nullptr);
  return 0;
}

pid_t spawnPeer(const char* self, const std::string& addr, const Args& a) {
  std::vector<std::string> args = {self, "--join", addr, "--mib", std::to_string(a.mib),
                                   "--quant", a.quant,
                                   "--seconds", std::to_string(a.seconds), "--kill-file",
                                   a.killFile};
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
    else if (k == "--seconds") a.seconds = std::atof(v.c_str());
    else if (k == "--join-after") a.joinAfter = std::atof(v.c_str());
    else if (k == "--mib") a.mib = std::atoi(v.c_str());
    else if (k == "--kill-after") a.killAfter = std::atof(v.c_str());
    else if (k == "--kill-file") a.killFile = v;
    else if (k == "--quant") a.quant = v;
    else if (k == "--join") a.join = v;
    else {
      std::fprintf(stderr, "usage: %s [--peers N] [--seconds S] [--join-after S] [--kill-after S] "
                           "[--mib M] [--quant none|fp16|bf16|uint8|uint4]\n", argv[0]);
      return 2;
    }
  }
  ecclQuantization_t quant = ecclQuantNone;
  if (!parseQuant(a.quant, &quant)) {
    std::fprintf(stderr, "eccl-demo: unknown --quant %s (none, fp16, bf16, uint8, uint4)\n",
                 a.quant.c_str());
    return 2;
  }
  if (!a.join.empty()) return peerMain(a);

  ecclMasterConfig_t mcfg = ECCL_MASTER_CONFIG_INIT;
  mcfg.listenAddress = "127.0.0.1";
  ecclMaster_t master = nullptr;
  uint16_t port = 0;
  CHECK(ecclMasterCreate(&mcfg, &master), nullptr);
  CHECK(ecclMasterGetPort(master, &port), nullptr);
  const std::string addr = "127.0.0.1:" + std::to_string(port);
  std::printf("eccl-demo: master on %s; %d peers all-reduce %d MiB float32 per step (codec %s); "
              "one more joins after %.0f s", addr.c_str(), a.peers, a.mib, a.quant.c_str(),
              a.joinAfter);
  if (a.killAfter >= 0) std::printf("; one is killed after %.0f s", a.killAfter);
  std::printf("\n");
  std::fflush(stdout);
  char killFile[] = "/tmp/eccl-demo-kill-XXXXXX";
  const int killFd = mkstemp(killFile);
  if (killFd >= 0) {
    close(killFd);
    a.killFile = killFile;
  }
  const auto start = Clock::now();
  std::vector<pid_t> pids;
  for (int i = 0; i < a.peers; ++i) pids.push_back(spawnPeer(argv[0], addr, a));
  std::this_thread::sleep_until(start + std::chrono::duration<double>(a.joinAfter));
  std::printf("---- a new peer registers and waits as pending\n");
  std::fflush(stdout);
  pids.push_back(spawnPeer(argv[0], addr, a));
  pid_t victim = -1;
  if (a.killAfter >= 0 && a.peers > 1) {
    std::this_thread::sleep_until(start + std::chrono::duration<double>(a.killAfter));
    victim = pids[1];
    if (FILE* f = std::fopen(a.killFile.c_str(), "w")) {  // before the kill: the survivors may read it soon
      std::fprintf(f, "%lld\n", static_cast<long long>(nowNs()));
      std::fclose(f);
    }
    kill(victim, SIGKILL);
    std::printf("---- SIGKILL to peer process %d\n", static_cast<int>(victim));
    std::fflush(stdout);
  }
  int rc = 0;
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (pid == victim) continue;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
  }
  if (!a.killFile.empty()) unlink(a.killFile.c_str());
  ecclMasterDestroy(master);
  std::printf("eccl-demo: %s\n", rc == 0 ? "all peers finished" : "a peer failed");
  return rc;
}
