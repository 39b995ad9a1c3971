// eccl-fault-peer: one member of a multi-process fault test, using only the
// public C API.
//
//   eccl-fault-peer --master HOST:PORT [--mode allreduce|broadcast|async]
//                   [--count N] [--tags K] [--root R] [--iters N] [--failure-ms T]
//                   [--bind ADDR] [--out-of-place] [--no-reconnect] [--exit-on-master-loss]
//                   [--quant none|bf16|fp16] [--memory host|cuda] [--transport tcp|ibverbs]
//                   [--id NAME]
//
// Loop, in lockstep with the other members: ecclCommUpdateTopology, then one
// in-place collective on a float32 buffer whose correct result depends only on
// the world size, then a check of every element. --out-of-place all-reduces
// from a separate send buffer into the checked one. --quant runs every op with
// a 16-bit codec: the pattern's sums are small integers, exact in float16 and
// bfloat16, so the check stays exact. --memory cuda (allreduce mode) runs
// every op on CUDA device buffers: the input is copied there before the op
// and the buffer copied back for the check. Each event is one stdout line
// `event key=value ...` (times are CLOCK_MONOTONIC ns, comparable with the
// driver's):
//
//   admitted    t id pid world rank epoch       first admission
//   reconnected t id pid world rank epoch       admitted again after ecclKicked or
//                                               ecclMasterUnreachable
//   op          t0 t1 world rank epoch n rc ok hash [root] [failed tags rcs]
//   optimized   t0 t1 world                     --optimize: ecclCommOptimizeTopology succeeded
//   kicked      t what                          an op, update or optimize returned ecclKicked
//   error       t t0 what rc                    update, optimize or connect failed (then retried)
//   leave       t rc                            graceful ecclCommDestroy after --iters ops
//   exit        t code                          about to exit (3 kicked, 4 master lost)
//
// In `op`, n counts the ops of this epoch (so (epoch, n) names one collective
// on every member), rc is the ecclResult_t, ok=1 when the buffer holds the
// right result (rc=0) or exactly the caller's input again (rc!=0), and hash is
// FNV-1a over the buffer's 64-bit words after the call. Async mode reports the
// first failing rc in tag order, ok over all tags, how many tags failed, and
// every tag's rc (rcs=r0,r1,...).
#include <CLI/CLI.hpp>

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "eccl/eccl.h"

#ifdef ECCL_FAULT_PEER_CUDA
#include <cuda_runtime.h>
#endif

namespace {

struct Options {
  std::string master;
  std::string id;
  std::string mode = "allreduce";
  size_t count = size_t{16} << 20;  // 64 MiB of float32
  int tags = 8;
  int root = -1;  // -1: op index % world
  long iters = 0;
  uint32_t failureMs = 2000;
  uint32_t heartbeatMs = 500;
  uint32_t opTimeoutMs = 30000;
  std::string bind;
  bool outOfPlace = false;
  bool noReconnect = false;
  bool exitOnMasterLoss = false;
  bool optimize = false;
  std::string quant = "none";
  std::string memory = "host";
  std::string transport = "tcp";
};

ecclQuantization_t quantOf(const std::string& name) {
  if (name == "bf16") return ecclQuantBfloat16;
  if (name == "fp16") return ecclQuantFloat16;
  return ecclQuantNone;
}

int64_t nowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Every line goes out at once: the driver timestamps arrivals.
template <typename... Args>
void emit(const char* fmt, Args... args) {
  std::printf(fmt, args...);
  std::putchar('\n');
  std::fflush(stdout);
}

[[noreturn]] void exitWith(int code) {
  emit("exit t=%" PRId64 " code=%d", nowNs(), code);
  std::fflush(stderr);
  // No static destructors: library threads may still be running.
  _exit(code);
}

// scale * (1 + j % 7): small integers, so float sums are exact in any order.
void fillPattern(std::vector<float>& v, float scale) {
  for (size_t j = 0, k = 0; j < v.size(); ++j) {
    v[j] = scale * static_cast<float>(1 + k);
    if (++k == 7) k = 0;
  }
}

// FNV-1a over 64-bit words rather than bytes: 8x fewer dependent steps on a
// 64 MiB buffer, and any flipped bit still changes it.
uint64_t fnv1a(const float* data, size_t count) {
  uint64_t h = 14695981039346656037ull;
  const size_t bytes = count * sizeof(float);
  size_t i = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(data);
  for (; i + 8 <= bytes; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 1099511628211ull;
  }
  for (; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

bool sameFloats(const float* a, const float* b, size_t count) {
  return std::memcmp(a, b, count * sizeof(float)) == 0;
}

class Peer {
 public:
  explicit Peer(const Options& o) : o_(o), buf_(o.count), own_(o.count), expected_(o.count) {}

  int run() {
    ecclCommConfig_t cfg = ECCL_COMM_CONFIG_INIT;
    cfg.masterAddress = o_.master.c_str();
    cfg.failureTimeoutMs = o_.failureMs;
    cfg.heartbeatIntervalMs = o_.heartbeatMs;
    cfg.opTimeoutMs = o_.opTimeoutMs;
    cfg.transport = o_.transport.c_str();
    if (!o_.bind.empty()) {
      cfg.bindAddress = o_.bind.c_str();
      cfg.advertisedAddress = o_.bind.c_str();
    }
    if (ecclCommCreate(&cfg, &comm_) != ecclSuccess) {
      std::fprintf(stderr, "eccl-fault-peer[%s]: ecclCommCreate: %s\n", o_.id.c_str(),
                   ecclGetLastError(nullptr));
      return 1;
    }
    connect("admitted");
    // Connect returns at the members' update-topology step, so a newcomer
    // starts where they stand: at the collective.
    bool justAdmitted = true;
    long successes = 0;
    uint64_t lastEpoch = 0;
    long n = 0;
    for (;;) {
      if (!justAdmitted && !updateTopology()) {
        justAdmitted = true;  // reconnected
        continue;
      }
      justAdmitted = false;
      int world = 0, rank = 0;
      uint64_t epoch = 0;
      ecclCommGetWorldSize(comm_, &world);
      ecclCommGetRank(comm_, &rank);
      ecclCommGetEpoch(comm_, &epoch);
      if (epoch != lastEpoch) n = 0;
      lastEpoch = epoch;

      const ecclResult_t rc = runOp(world, rank, epoch, n);
      ++n;
      if (rc == ecclSuccess) {
        if (o_.iters > 0 && ++successes >= o_.iters) return leave();
      } else if (rc == ecclKicked || rc == ecclMasterUnreachable) {
        if (rc == ecclKicked) emit("kicked t=%" PRId64 " what=op", nowNs());
        lost(rc);
        justAdmitted = true;
      }
    }
  }

 private:
  // One update-topology vote; false when it had to reconnect instead.
  bool updateTopology() {
    for (;;) {
      const int64_t t0 = nowNs();
      const ecclResult_t rc =
          o_.optimize ? ecclCommOptimizeTopology(comm_) : ecclCommUpdateTopology(comm_);
      const int64_t t1 = nowNs();
      const char* what = o_.optimize ? "optimize" : "update";
      if (rc == ecclSuccess) {
        if (o_.optimize) {
          int world = 0;
          ecclCommGetWorldSize(comm_, &world);
          emit("optimized t0=%" PRId64 " t1=%" PRId64 " world=%d", t0, t1, world);
        }
        return true;
      }
      if (rc == ecclKicked) {
        emit("kicked t=%" PRId64 " what=%s", t1, what);
      } else {
        emit("error t=%" PRId64 " t0=%" PRId64 " what=%s rc=%d", t1, t0, what,
             static_cast<int>(rc));
      }
      std::fprintf(stderr, "eccl-fault-peer[%s]: %s: %s: %s\n", o_.id.c_str(), what,
                   ecclGetErrorString(rc), ecclGetLastError(comm_));
      if (rc == ecclKicked || rc == ecclMasterUnreachable) {
        lost(rc);
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  // This peer is out of the group: exit as asked, or register afresh.
  void lost(ecclResult_t rc) {
    if (rc == ecclKicked && o_.noReconnect) exitWith(3);
    if (rc == ecclMasterUnreachable && o_.exitOnMasterLoss) exitWith(4);
    connect("reconnected");
  }

  // ecclCommConnect until admitted, retrying every 50 ms.
  void connect(const char* event) {
    for (;;) {
      const int64_t t0 = nowNs();
      const ecclResult_t rc = ecclCommConnect(comm_);
      if (rc == ecclSuccess) break;
      emit("error t=%" PRId64 " t0=%" PRId64 " what=connect rc=%d", nowNs(), t0,
           static_cast<int>(rc));
      std::fprintf(stderr, "eccl-fault-peer[%s]: connect: %s: %s\n", o_.id.c_str(),
                   ecclGetErrorString(rc), ecclGetLastError(comm_));
      if (rc == ecclMasterUnreachable && o_.exitOnMasterLoss) exitWith(4);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    int world = 0, rank = 0;
    uint64_t epoch = 0;
    ecclCommGetWorldSize(comm_, &world);
    ecclCommGetRank(comm_, &rank);
    ecclCommGetEpoch(comm_, &epoch);
    emit("%s t=%" PRId64 " id=%s pid=%d world=%d rank=%d epoch=%" PRIu64, event, nowNs(),
         o_.id.c_str(), static_cast<int>(getpid()), world, rank, epoch);
  }

  int leave() {
    const ecclResult_t rc = ecclCommDestroy(comm_);
    comm_ = nullptr;
    emit("leave t=%" PRId64 " rc=%d", nowNs(), static_cast<int>(rc));
    if (rc != ecclSuccess) exitWith(1);
    emit("exit t=%" PRId64 " code=0", nowNs());
    return 0;
  }

  // The references the checks compare with, rebuilt when rank or world change.
  void prepare(int world, int rank) {
    if (rank != ownRank_) {
      // Broadcast non-roots start from something no root ever sends.
      const float sign = o_.mode == "broadcast" ? -1.0f : 1.0f;
      fillPattern(own_, sign * static_cast<float>(rank + 1));
      ownRank_ = rank;
    }
    if (world != expectedWorld_) {
      fillPattern(expected_, static_cast<float>(world * (world + 1) / 2));
      expectedWorld_ = world;
    }
  }

  ecclResult_t runOp(int world, int rank, uint64_t epoch, long n) {
    prepare(world, rank);
    ecclResult_t rc = ecclSuccess;
    bool ok = false;
    std::string extra;  // mode-specific fields
    int64_t t0 = 0, t1 = 0;
    if (o_.mode == "async") {
      const size_t k = static_cast<size_t>(o_.tags);
      std::memcpy(buf_.data(), own_.data(), o_.count * sizeof(float));
      std::vector<ecclRequest_t> reqs(k, nullptr);
      std::vector<ecclResult_t> rcs(k, ecclSuccess);
      t0 = nowNs();
      for (size_t i = 0; i < k; ++i) {
        ecclOpOptions_t opts = ECCL_OP_OPTIONS_INIT;
        opts.tag = static_cast<uint32_t>(i);
        opts.quantization = quantOf(o_.quant);
        float* seg = buf_.data() + segBegin(i);
        rcs[i] = ecclAllReduceAsync(seg, seg, segBegin(i + 1) - segBegin(i), ecclFloat32, ecclSum,
                                    &opts, comm_, &reqs[i]);
      }
      for (size_t i = 0; i < k; ++i) {
        if (rcs[i] == ecclSuccess) rcs[i] = ecclWait(reqs[i], nullptr);
      }
      t1 = nowNs();
      int failed = 0;
      std::string list;
      ok = true;
      for (size_t i = 0; i < k; ++i) {
        const size_t b = segBegin(i), len = segBegin(i + 1) - b;
        const float* want = rcs[i] == ecclSuccess ? expected_.data() : own_.data();
        ok = ok && sameFloats(buf_.data() + b, want + b, len);
        if (rcs[i] != ecclSuccess) {
          if (failed++ == 0) rc = rcs[i];
        }
        list += (i == 0 ? "" : ",") + std::to_string(static_cast<int>(rcs[i]));
      }
      extra = " failed=" + std::to_string(failed) + " tags=" + std::to_string(o_.tags) +
              " rcs=" + list;
    } else if (o_.mode == "broadcast") {
      const int root = (o_.root >= 0 ? o_.root : static_cast<int>(n)) % world;
      const float* input = rank == root ? expected_.data() : own_.data();
      std::memcpy(buf_.data(), input, o_.count * sizeof(float));
      ecclOpOptions_t opts = ECCL_OP_OPTIONS_INIT;
      opts.quantization = quantOf(o_.quant);
      t0 = nowNs();
      rc = ecclBroadcast(buf_.data(), o_.count, ecclFloat32, root, &opts, comm_, nullptr);
      t1 = nowNs();
      ok = sameFloats(buf_.data(), rc == ecclSuccess ? expected_.data() : input, o_.count);
      extra = " root=" + std::to_string(root);
    } else {
      // Out of place: the receive buffer starts as garbage that is neither
      // the input nor a result, so a failure must copy the input there.
      std::memcpy(buf_.data(), own_.data(), o_.count * sizeof(float));
      const float* send = buf_.data();
      if (o_.outOfPlace) {
        send = own_.data();
        std::fill(buf_.begin(), buf_.end(), -7.0f);
      }
      ecclOpOptions_t opts = ECCL_OP_OPTIONS_INIT;
      opts.quantization = quantOf(o_.quant);
      ecclOpInfo_t info = ECCL_OP_INFO_INIT;
      void* recv = buf_.data();
      if (device_.on()) {  // the same buffers, on the GPU
        device_.put(0, buf_.data());
        if (o_.outOfPlace) device_.put(1, own_.data());
        send = static_cast<const float*>(device_.at(o_.outOfPlace ? 1 : 0));
        recv = device_.at(0);
        opts.memType = ecclMemCuda;
      }
      t0 = nowNs();
      rc = ecclAllReduce(send, recv, o_.count, ecclFloat32, ecclSum, &opts, comm_, &info);
      t1 = nowNs();
      if (device_.on()) device_.get(0, buf_.data());
      extra = " shm=" + std::to_string(info.sharedMemory);
      ok = sameFloats(buf_.data(), rc == ecclSuccess ? expected_.data() : own_.data(), o_.count);
    }
    if (rc != ecclSuccess) {
      std::fprintf(stderr, "eccl-fault-peer[%s]: %s: %s: %s\n", o_.id.c_str(), o_.mode.c_str(),
                   ecclGetErrorString(rc), ecclGetLastError(comm_));
    }
    emit("op t0=%" PRId64 " t1=%" PRId64 " world=%d rank=%d epoch=%" PRIu64
         " n=%ld rc=%d ok=%d hash=%016" PRIx64 "%s",
         t0, t1, world, rank, epoch, n, static_cast<int>(rc), ok ? 1 : 0,
         fnv1a(buf_.data(), o_.count), extra.c_str());
    return rc;
  }

  // Element offset of async tag i's segment; segBegin(tags) == count.
  size_t segBegin(size_t i) const { return o_.count * i / static_cast<size_t>(o_.tags); }

  // --memory cuda: two device buffers of the op's size (receive, send).
  class DeviceBuffers {
   public:
    explicit DeviceBuffers(const Options& o) : bytes_(o.count * sizeof(float)) {
      if (o.memory != "cuda") return;
#ifdef ECCL_FAULT_PEER_CUDA
      for (void*& p : p_) check(cudaMalloc(&p, bytes_), "cudaMalloc");
#else
      std::fprintf(stderr, "eccl-fault-peer: built without CUDA: no --memory cuda\n");
      std::exit(2);
#endif
    }
    ~DeviceBuffers() {
#ifdef ECCL_FAULT_PEER_CUDA
      for (void* p : p_) cudaFree(p);
#endif
    }
    DeviceBuffers(const DeviceBuffers&) = delete;
    DeviceBuffers& operator=(const DeviceBuffers&) = delete;
    bool on() const { return p_[0] != nullptr; }
    void* at(int i) { return p_[i]; }
#ifdef ECCL_FAULT_PEER_CUDA
    void put(int i, const float* host) { check(cudaMemcpy(p_[i], host, bytes_, cudaMemcpyDefault), "cudaMemcpy"); }
    void get(int i, float* host) { check(cudaMemcpy(host, p_[i], bytes_, cudaMemcpyDefault), "cudaMemcpy"); }

   private:
    static void check(cudaError_t e, const char* what) {
      if (e == cudaSuccess) return;
      std::fprintf(stderr, "eccl-fault-peer: %s: %s\n", what, cudaGetErrorString(e));
      std::exit(1);
    }
#else
    void put(int, const float*) {}
    void get(int, float*) {}

   private:
#endif
    size_t bytes_;
    void* p_[2] = {nullptr, nullptr};
  };

  Options o_;
  DeviceBuffers device_{o_};
  ecclComm_t comm_ = nullptr;
  std::vector<float> buf_;       // the one buffer every op runs on, in place
  std::vector<float> own_;       // this rank's input
  std::vector<float> expected_;  // the result for the current world size
  int ownRank_ = -1;
  int expectedWorld_ = -1;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ECCL fault-test peer: update topology, collective, verify; one line per event"};
  Options o;
  app.add_option("--master", o.master, "master HOST:PORT")->required();
  app.add_option("--id", o.id, "name printed in the admitted line (default: the pid)");
  app.add_option("--mode", o.mode, "collective to loop on")
      ->check(CLI::IsMember({"allreduce", "broadcast", "async"}))
      ->capture_default_str();
  app.add_option("--count", o.count, "float32 elements per op")->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--tags", o.tags, "async: concurrent all-reduces on tags 0..K-1, count/K each")
      ->check(CLI::Range(1, 64))->capture_default_str();
  app.add_option("--root", o.root, "broadcast root rank (default: op index % world)");
  app.add_option("--iters", o.iters, "leave gracefully after N successful ops (0 = never)")
      ->capture_default_str();
  app.add_option("--failure-ms", o.failureMs, "ecclCommConfig_t.failureTimeoutMs")
      ->capture_default_str();
  app.add_option("--heartbeat-ms", o.heartbeatMs, "ecclCommConfig_t.heartbeatIntervalMs")
      ->capture_default_str();
  app.add_option("--op-timeout-ms", o.opTimeoutMs, "ecclCommConfig_t.opTimeoutMs")
      ->capture_default_str();
  app.add_option("--bind", o.bind, "bind and advertise the data acceptor on this address");
  app.add_option("--memory", o.memory, "allreduce on host or CUDA device buffers")
      ->check(CLI::IsMember({"host", "cuda"}));
  app.add_option("--transport", o.transport, "ecclCommConfig_t.transport")
      ->check(CLI::IsMember({"tcp", "ibverbs", "nccl"}));
  app.add_option("--quant", o.quant, "codec of every op (16-bit codecs keep the check exact)")
      ->check(CLI::IsMember({"none", "bf16", "fp16"}));
  app.add_flag("--out-of-place", o.outOfPlace, "all-reduce from a separate send buffer");
  app.add_flag("--no-reconnect", o.noReconnect, "exit 3 on ecclKicked instead of reconnecting");
  app.add_flag("--exit-on-master-loss", o.exitOnMasterLoss, "exit 4 on ecclMasterUnreachable");
  app.add_flag("--optimize", o.optimize,
               "call ecclCommOptimizeTopology instead of ecclCommUpdateTopology (prints "
               "`optimized t0= t1= world=` on success)");
  CLI11_PARSE(app, argc, argv);
  if (o.id.empty()) o.id = std::to_string(getpid());
  if (o.count < static_cast<size_t>(o.tags)) o.count = static_cast<size_t>(o.tags);
  return Peer(o).run();
}
