// eccl-bench: nccl-tests style all-reduce / broadcast benchmark.
//
//   eccl-bench allreduce --peers 4 -b 8 -e 64M -f 2      spawn a master + 4 local peers
//   eccl-bench allreduce --master host:port --world 8    join an existing master
//   eccl-bench allreduce --peers 3 -b 64M --quant uint8  with a payload codec
//   eccl-bench sync --peers 4 -e 1G                      a newcomer fetches 1 GiB of
//                                                         shared state from 3 sources
//   eccl-bench allreduce --peers 4 --memory cuda         CUDA device buffers (staged)
//
// Times are per iteration, averaged over --iters and maxed over ranks;
// algbw = bytes / time, busbw = algbw * 2(n-1)/n for all-reduce and = algbw
// for broadcast (nccl-tests' definitions). Every size is checked once.
// Timing runs on random normal data. With --quant, `wire` is the payload
// bytes rank 0 sent per op (encoded; `logical` without the codec), and
// maxerr/rmserr compare one op on random normal data (every rank N(0,1)) with
// the exact result: the same inputs all-reduced in float64 without a codec.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <random>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/dtype.h"
#include "common/half.h"
#include "eccl/eccl.h"

#ifdef ECCL_BENCH_CUDA
#include <cuda_runtime.h>
#endif

extern char** environ;

namespace {

struct Options {
  std::string mode = "allreduce";
  int peers = 4;
  std::string master;
  int world = 0;
  std::string minBytes = "8", maxBytes = "64M";
  double factor = 2;
  std::string dtype = "float32", op = "sum";
  uint32_t streams = 0;
  int iters = 20, warmup = 5, root = 0;
  bool json = false;
  bool optimize = false;
  uint32_t timeoutMs = 60000;
  std::string quant = "none", rounding = "nearest";
  uint32_t quantBlock = 0;
  bool receiver = false;  // sync: this process is the one that fetches
  std::string memory = "host";
  std::string transport = "tcp";
};

// The benchmarked buffer: host memory, or with --memory cuda a device buffer
// that the host copy is moved to before an op and back after a check.
class BenchBuffer {
 public:
  BenchBuffer(size_t bytes, bool device) : host_(bytes) {
    if (!device) return;
#ifdef ECCL_BENCH_CUDA
    const cudaError_t e = cudaMalloc(&device_, bytes);
    if (e != cudaSuccess) {
      std::fprintf(stderr, "eccl-bench: cudaMalloc(%zu): %s\n", bytes, cudaGetErrorString(e));
      std::exit(1);
    }
#else
    std::fprintf(stderr, "eccl-bench: built without CUDA (ECCL_WITH_CUDA): no --memory cuda\n");
    std::exit(2);
#endif
  }
  ~BenchBuffer() {
#ifdef ECCL_BENCH_CUDA
    if (device_ != nullptr) cudaFree(device_);
#endif
  }
  std::byte* host() { return host_.data(); }
  void* forOp() { return device_ != nullptr ? device_ : host_.data(); }
  void push(size_t bytes) { move(device_, host_.data(), bytes); }
  void pull(size_t bytes) { move(host_.data(), device_, bytes); }

 private:
  void move(void* dst, const void* src, size_t bytes) {
    if (device_ == nullptr) return;
#ifdef ECCL_BENCH_CUDA
    const cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyDefault);
    if (e != cudaSuccess) {
      std::fprintf(stderr, "eccl-bench: cudaMemcpy: %s\n", cudaGetErrorString(e));
      std::exit(1);
    }
#else
    (void)dst, (void)src, (void)bytes;
#endif
  }
  std::vector<std::byte> host_;
  void* device_ = nullptr;
};

size_t parseSize(const std::string& s) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  switch (*end) {
    case 'K': case 'k': v *= 1024; break;
    case 'M': case 'm': v *= 1024 * 1024; break;
    case 'G': case 'g': v *= 1024.0 * 1024 * 1024; break;
    default: break;
  }
  return static_cast<size_t>(v);
}

#define CHECK_ECCL(call, comm)                                                           \
  do {                                                                                   \
    ecclResult_t r_ = (call);                                                            \
    if (r_ != ecclSuccess) {                                                             \
      std::fprintf(stderr, "eccl-bench: %s failed: %s\n  %s\n", #call,                   \
                   ecclGetErrorString(r_), ecclGetLastError(comm));                      \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)

// Element value as double, whatever the dtype.
double load(const void* buf, ecclDataType_t dt, size_t i) {
  switch (dt) {
    case ecclInt8: return static_cast<const int8_t*>(buf)[i];
    case ecclUint8: return static_cast<const uint8_t*>(buf)[i];
    case ecclInt16: return static_cast<const int16_t*>(buf)[i];
    case ecclUint16: return static_cast<const uint16_t*>(buf)[i];
    case ecclInt32: return static_cast<const int32_t*>(buf)[i];
    case ecclUint32: return static_cast<const uint32_t*>(buf)[i];
    case ecclInt64: return static_cast<double>(static_cast<const int64_t*>(buf)[i]);
    case ecclUint64: return static_cast<double>(static_cast<const uint64_t*>(buf)[i]);
    case ecclFloat16: return eccl::halfToFloat(static_cast<const uint16_t*>(buf)[i]);
    case ecclBfloat16: return eccl::bf16ToFloat(static_cast<const uint16_t*>(buf)[i]);
    case ecclFloat32: return static_cast<const float*>(buf)[i];
    case ecclFloat64: return static_cast<const double*>(buf)[i];
    default: return 0;
  }
}

void store(void* buf, ecclDataType_t dt, size_t i, double v) {
  switch (dt) {
    case ecclInt8: static_cast<int8_t*>(buf)[i] = static_cast<int8_t>(v); break;
    case ecclUint8: static_cast<uint8_t*>(buf)[i] = static_cast<uint8_t>(v); break;
    case ecclInt16: static_cast<int16_t*>(buf)[i] = static_cast<int16_t>(v); break;
    case ecclUint16: static_cast<uint16_t*>(buf)[i] = static_cast<uint16_t>(v); break;
    case ecclInt32: static_cast<int32_t*>(buf)[i] = static_cast<int32_t>(v); break;
    case ecclUint32: static_cast<uint32_t*>(buf)[i] = static_cast<uint32_t>(v); break;
    case ecclInt64: static_cast<int64_t*>(buf)[i] = static_cast<int64_t>(v); break;
    case ecclUint64: static_cast<uint64_t*>(buf)[i] = static_cast<uint64_t>(v); break;
    case ecclFloat16: static_cast<uint16_t*>(buf)[i] = eccl::floatToHalf(static_cast<float>(v)); break;
    case ecclBfloat16: static_cast<uint16_t*>(buf)[i] = eccl::floatToBf16(static_cast<float>(v)); break;
    case ecclFloat32: static_cast<float*>(buf)[i] = static_cast<float>(v); break;
    case ecclFloat64: static_cast<double*>(buf)[i] = v; break;
    default: break;
  }
}

void fillNormal(void* buf, ecclDataType_t dt, size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  for (size_t i = 0; i < count; ++i) store(buf, dt, i, d(rng));
}

struct Error {
  double maxAbs = 0, rms = 0, rmsExact = 0;
};

// One all-reduce with the codec on N(0,1) data against the same inputs
// all-reduced in float64 without one (exact to ~1e-16, far below any codec).
Error measureError(ecclComm_t comm, int rank, int n, size_t count, ecclDataType_t dt,
                   ecclRedOp_t op, const ecclOpOptions_t& opts) {
  std::vector<std::byte> buf(count * eccl::dtypeSize(dt));
  fillNormal(buf.data(), dt, count, 1000u + static_cast<uint32_t>(rank));
  std::vector<double> exact(count);
  for (size_t i = 0; i < count; ++i) exact[i] = load(buf.data(), dt, i);
  CHECK_ECCL(ecclAllReduce(exact.data(), exact.data(), count, ecclFloat64, ecclSum, nullptr, comm,
                           nullptr), comm);
  CHECK_ECCL(ecclAllReduce(buf.data(), buf.data(), count, dt, op, &opts, comm, nullptr), comm);
  double e[3] = {0, 0, 0};  // max |err|, sum err^2, sum exact^2
  for (size_t i = 0; i < count; ++i) {
    const double want = op == ecclAvg ? exact[i] / n : exact[i];
    const double err = load(buf.data(), dt, i) - want;
    e[0] = std::max(e[0], std::fabs(err));
    e[1] += err * err;
    e[2] += want * want;
  }
  CHECK_ECCL(ecclAllReduce(e, e, 1, ecclFloat64, ecclMax, nullptr, comm, nullptr), comm);
  CHECK_ECCL(ecclAllReduce(e + 1, e + 1, 2, ecclFloat64, ecclSum, nullptr, comm, nullptr), comm);
  const double total = static_cast<double>(count) * n;
  return {e[0], std::sqrt(e[1] / total), std::sqrt(e[2] / total)};
}

// Rank r contributes r+1 everywhere: small integers, exact in every dtype.
double expected(ecclRedOp_t op, ecclDataType_t dt, int n) {
  const bool integer = dt <= ecclUint64;
  switch (op) {
    case ecclSum: return n * (n + 1) / 2.0;
    case ecclAvg: return integer ? (n * (n + 1) / 2) / n : (n + 1) / 2.0;
    case ecclProd: return std::tgamma(n + 1);
    case ecclMax: return n;
    case ecclMin: return 1;
    default: return 0;
  }
}

// Members agree on whether anyone is pending (MAX all-reduce), so they call
// ecclCommUpdateTopology together. Repeats until the world has `want` peers.
void growWorld(ecclComm_t comm, int want) {
  int world = 0;
  for (;;) {
    CHECK_ECCL(ecclCommGetWorldSize(comm, &world), comm);
    if (world >= want) return;
    int pending = 0;
    CHECK_ECCL(ecclCommArePeersPending(comm, &pending), comm);
    int32_t any = pending;
    CHECK_ECCL(ecclAllReduce(&any, &any, 1, ecclInt32, ecclMax, nullptr, comm, nullptr), comm);
    if (any != 0) {
      CHECK_ECCL(ecclCommUpdateTopology(comm), comm);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

// Join time of shared state: one rank (the process given --receiver, else
// the last) holds other content and fetches all of it (-e bytes of float32)
// from the others, --iters times (it drifts again before each). Time = the
// slowest rank's ecclSharedStateSync, hashing included.
int runSync(const Options& o, ecclComm_t comm, int rank, int n) {
  const size_t bytes = parseSize(o.maxBytes);
  std::vector<float> data(bytes / sizeof(float));
  int32_t marked = o.receiver ? rank : -1;
  CHECK_ECCL(ecclAllReduce(&marked, &marked, 1, ecclInt32, ecclMax, nullptr, comm, nullptr), comm);
  const bool receiver = rank == (marked >= 0 ? marked : n - 1);
  auto fill = [&](int salt) {
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>((i + static_cast<size_t>(salt)) % 1009);
  };
  fill(0);
  ecclTensorInfo_t tensor = {"state", data.data(), data.size(), ecclFloat32, ecclMemHost, 0};
  ecclSharedState_t state = ECCL_SHARED_STATE_INIT;
  state.tensors = &tensor;
  state.tensorCount = 1;
  if (rank == 0) {
    std::printf("# eccl-bench sync: %d peers (%d sources, 1 receiver), %zu bytes of state, %d "
                "iterations\n", n, n - 1, data.size() * sizeof(float), o.iters);
    std::printf("#%12s %8s %12s %12s %s\n", "bytes", "sources", "time(ms)", "GB/s", "bytes per source");
  }
  bool first = true;
  for (int it = 0; it < o.iters; ++it) {
    if (receiver) fill(it + 1);  // drift: everything differs
    state.revision = first ? 0 : state.revision + 1;
    first = false;
    int32_t barrier = 0;
    CHECK_ECCL(ecclAllReduce(&barrier, &barrier, 1, ecclInt32, ecclSum, nullptr, comm, nullptr), comm);
    ecclSyncInfo_t info = ECCL_SYNC_INFO_INIT;
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_ECCL(ecclSharedStateSync(comm, &state, receiver ? ecclSyncReceiveOnly : ecclSyncEnforcePopular,
                                   &info), comm);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK_ECCL(ecclAllReduce(&s, &s, 1, ecclFloat64, ecclMax, nullptr, comm, nullptr), comm);
    // The receiver's figures, to rank 0.
    double figures[2 + ECCL_SYNC_MAX_SOURCES] = {};
    if (receiver) {
      figures[0] = static_cast<double>(info.bytesReceived);
      figures[1] = info.sourcesUsed;
      for (uint32_t k = 0; k < info.sourcesUsed; ++k) figures[2 + k] = static_cast<double>(info.bytesFromSource[k]);
    }
    CHECK_ECCL(ecclAllReduce(figures, figures, 2 + ECCL_SYNC_MAX_SOURCES, ecclFloat64, ecclMax,
                             nullptr, comm, nullptr), comm);
    if (rank == 0) {
      std::string shares;
      for (int k = 0; k < static_cast<int>(figures[1]); ++k) {
        shares += (k ? "," : "") + std::to_string(static_cast<long long>(figures[2 + k]));
      }
      std::printf(" %12.0f %8.0f %12.1f %12.3f %s\n", figures[0], figures[1], s * 1e3,
                  figures[0] / s / 1e9, shares.c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}

int runPeer(const Options& o, const std::string& masterAddr, int world) {
  auto dt = eccl::parseDtype(o.dtype);
  auto op = eccl::parseOp(o.op);
  auto quant = eccl::parseQuant(o.quant);
  if (!dt || !op || !quant) {
    std::fprintf(stderr, "eccl-bench: unknown --dtype, --op or --quant\n");
    return 2;
  }
  ecclOpOptions_t opts = ECCL_OP_OPTIONS_INIT;
  opts.quantization = *quant;
  opts.rounding = o.rounding == "stochastic" ? ecclRoundStochastic : ecclRoundNearest;
  opts.quantBlockSize = o.quantBlock;
  const ecclOpOptions_t hostOpts = opts;  // the error measurement's (host buffers)
  const bool onDevice = o.memory == "cuda";
  if (onDevice) opts.memType = ecclMemCuda;
  const bool coded = *quant != ecclQuantNone;
  ecclCommConfig_t cfg = ECCL_COMM_CONFIG_INIT;
  cfg.masterAddress = masterAddr.c_str();
  cfg.streamsPerPeer = o.streams;
  cfg.opTimeoutMs = o.timeoutMs;
  cfg.transport = o.transport.c_str();
  ecclComm_t comm = nullptr;
  CHECK_ECCL(ecclCommCreate(&cfg, &comm), nullptr);
  CHECK_ECCL(ecclCommConnect(comm), comm);
  growWorld(comm, world);
  double optimizeMs = -1;
  if (o.optimize) {
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_ECCL(ecclCommOptimizeTopology(comm), comm);
    optimizeMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  int rank = 0, n = 0;
  CHECK_ECCL(ecclCommGetRank(comm, &rank), comm);
  CHECK_ECCL(ecclCommGetWorldSize(comm, &n), comm);

  if (o.mode == "sync") {
    const int rc = runSync(o, comm, rank, n);
    CHECK_ECCL(ecclCommDestroy(comm), nullptr);
    return rc;
  }
  const bool allreduce = o.mode == "allreduce";
  const size_t esz = eccl::dtypeSize(*dt);
  const size_t minB = std::max(esz, parseSize(o.minBytes)), maxB = parseSize(o.maxBytes);
  BenchBuffer buffer(std::max(maxB, esz), onDevice);
  std::byte* const host = buffer.host();
  void* const data = buffer.forOp();
  nlohmann::json rows = nlohmann::json::array();
  if (rank == 0 && !o.json) {
    const std::string streams = o.streams ? std::to_string(o.streams) : "adaptive";
    std::printf("# eccl-bench %s: %d peers, %s, %s, %s streams per neighbour, codec %s%s, "
                "%s buffers\n",
                o.mode.c_str(), n, o.dtype.c_str(), allreduce ? o.op.c_str() : "-",
                streams.c_str(), o.quant.c_str(),
                coded && o.rounding == "stochastic" ? " (stochastic)" : "", o.memory.c_str());
    if (o.optimize) std::printf("# ecclCommOptimizeTopology took %.0f ms\n", optimizeMs);
    std::printf("#%12s %12s %8s %6s %12s %12s %12s %6s %7s", "size", "count", "type", "redop",
                "time(us)", "algbw(GB/s)", "busbw(GB/s)", "check", "streams");
    if (coded) std::printf(" %12s %12s %10s %10s", "wire(B)", "logical(B)", "maxerr", "rmserr");
    std::printf("\n");
  }
  bool allOk = true;
  for (size_t bytes = minB; bytes <= maxB;
       bytes = std::max(bytes + esz, static_cast<size_t>(static_cast<double>(bytes) * o.factor))) {
    const size_t count = bytes / esz;
    // Check once: rank r contributes r+1 (all-reduce) or the root's rank+1.
    for (size_t i = 0; i < count; ++i) store(host, *dt, i, allreduce || rank == o.root ? rank + 1 : 0);
    // (Every block is constant here, so even uint8/uint4 are exact.)
    buffer.push(count * esz);
    ecclOpInfo_t info = ECCL_OP_INFO_INIT;
    if (allreduce) {
      CHECK_ECCL(ecclAllReduce(data, data, count, *dt, *op, &opts, comm, &info), comm);
    } else {
      CHECK_ECCL(ecclBroadcast(data, count, *dt, o.root, &opts, comm, &info), comm);
    }
    buffer.pull(count * esz);
    const double want = allreduce ? expected(*op, *dt, n) : o.root + 1;
    int32_t ok = 1;
    for (size_t i = 0; i < count; ++i) {
      if (load(host, *dt, i) != want) {
        ok = 0;
        break;
      }
    }
    CHECK_ECCL(ecclAllReduce(&ok, &ok, 1, ecclInt32, ecclMin, nullptr, comm, nullptr), comm);
    allOk = allOk && ok == 1;

    Error err;
    const bool measured = coded && allreduce && (*op == ecclSum || *op == ecclAvg);
    if (measured) err = measureError(comm, rank, n, count, *dt, *op, hostOpts);

    // Timed on random normal data. Values may grow or wrap across
    // iterations; that costs the same time.
    fillNormal(host, *dt, count, static_cast<uint32_t>(rank));
    buffer.push(count * esz);
    ecclOpInfo_t timed = ECCL_OP_INFO_INIT;  // of the latest op: the streams its link used
    auto once = [&] {
      if (allreduce) {
        CHECK_ECCL(ecclAllReduce(data, data, count, *dt, *op, &opts, comm, &timed), comm);
      } else {
        CHECK_ECCL(ecclBroadcast(data, count, *dt, o.root, &opts, comm, &timed), comm);
      }
    };
    for (int i = 0; i < o.warmup; ++i) once();
    int32_t barrier = 0;  // align the ranks before timing
    CHECK_ECCL(ecclAllReduce(&barrier, &barrier, 1, ecclInt32, ecclSum, nullptr, comm, nullptr), comm);
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < o.iters; ++i) once();
    double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() /
                std::max(1, o.iters);
    CHECK_ECCL(ecclAllReduce(&us, &us, 1, ecclFloat64, ecclMax, nullptr, comm, nullptr), comm);
    // Stream counts of every rank's outgoing link: the slowest link sets the pace.
    uint32_t fewest = timed.streams, most = timed.streams;
    CHECK_ECCL(ecclAllReduce(&fewest, &fewest, 1, ecclUint32, ecclMin, nullptr, comm, nullptr), comm);
    CHECK_ECCL(ecclAllReduce(&most, &most, 1, ecclUint32, ecclMax, nullptr, comm, nullptr), comm);
    const std::string streams = fewest == most ? std::to_string(fewest)
                                               : std::to_string(fewest) + "-" + std::to_string(most);
    // Outgoing links that ran through shared memory (peers on one host).
    uint32_t shmLinks = timed.sharedMemory;
    CHECK_ECCL(ecclAllReduce(&shmLinks, &shmLinks, 1, ecclUint32, ecclSum, nullptr, comm, nullptr), comm);
    const double algbw = static_cast<double>(count * esz) / (us * 1e-6) / 1e9;
    const double busbw = allreduce ? algbw * 2.0 * (n - 1) / n : algbw;
    if (rank == 0) {
      if (o.json) {
        nlohmann::json row = {{"op", o.mode}, {"bytes", count * esz}, {"count", count},
                              {"dtype", o.dtype}, {"redop", allreduce ? o.op : "none"},
                              {"time_us", us}, {"algbw_gbps", algbw}, {"busbw_gbps", busbw},
                              {"check", ok == 1}, {"quant", o.quant},
                              {"wire_bytes", info.bytesSent},
                              {"logical_bytes", info.logicalBytesSent},
                              {"streams", timed.streams},
                              {"streams_min", fewest}, {"streams_max", most},
                              {"shm_links", shmLinks}, {"memory", o.memory}};
        if (measured) {
          row["max_abs_error"] = err.maxAbs;
          row["rms_error"] = err.rms;
          row["rms_exact"] = err.rmsExact;
        }
        rows.push_back(row);
      } else {
        std::printf(" %12zu %12zu %8s %6s %12.1f %12.3f %12.3f %6s %7s", count * esz, count,
                    o.dtype.c_str(), allreduce ? o.op.c_str() : "-", us, algbw, busbw,
                    ok == 1 ? "ok" : "FAIL", streams.c_str());
        if (coded) {
          std::printf(" %12llu %12llu", static_cast<unsigned long long>(info.bytesSent),
                      static_cast<unsigned long long>(info.logicalBytesSent));
          if (measured) {
            std::printf(" %10.3g %10.3g", err.maxAbs, err.rms);
          } else {
            std::printf(" %10s %10s", "-", "-");
          }
        }
        std::printf("\n");
        std::fflush(stdout);
      }
    }
    if (bytes == maxB) break;
  }
  if (rank == 0 && o.json) {
    nlohmann::json out = {{"tool", "eccl"}, {"peers", n}, {"rows", rows}};
    if (o.optimize) out["optimize_ms"] = optimizeMs;
    std::printf("%s\n", out.dump().c_str());
  }
  CHECK_ECCL(ecclCommDestroy(comm), nullptr);
  return allOk ? 0 : 3;
}

int spawnLocal(const Options& o, int argc, char** argv) {
  ecclMasterConfig_t mcfg = ECCL_MASTER_CONFIG_INIT;
  mcfg.listenAddress = "127.0.0.1";
  ecclMaster_t master = nullptr;
  CHECK_ECCL(ecclMasterCreate(&mcfg, &master), nullptr);
  uint16_t port = 0;
  CHECK_ECCL(ecclMasterGetPort(master, &port), nullptr);
  const std::string addr = "127.0.0.1:" + std::to_string(port);

  // Children: the same command line, joining our master instead of spawning.
  std::vector<std::string> args(argv, argv + argc);
  args.push_back("--master");
  args.push_back(addr);
  args.push_back("--world");
  args.push_back(std::to_string(o.peers));
  args.push_back("--spawned");
  std::vector<char*> cargv;
  for (auto& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  std::vector<pid_t> pids;
  for (int i = 0; i < o.peers; ++i) {
    pid_t pid = 0;
    if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, cargv.data(), environ) != 0) {
      std::perror("eccl-bench: posix_spawn");
      return 1;
    }
    pids.push_back(pid);
  }
  int rc = 0;
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
  }
  ecclMasterDestroy(master);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ECCL collective benchmark (nccl-tests style)"};
  Options o;
  bool spawned = false;
  app.add_option("mode", o.mode, "allreduce, broadcast or sync (the last rank fetches -e bytes of "
                                 "shared state from the others)")
      ->check(CLI::IsMember({"allreduce", "broadcast", "sync"}))->capture_default_str();
  app.add_option("--peers", o.peers, "local peer processes to spawn (with an embedded master)")
      ->capture_default_str();
  app.add_option("--master", o.master, "join this master (host:port) instead of spawning");
  app.add_option("--world", o.world, "with --master: peers to wait for");
  app.add_option("-b,--minbytes", o.minBytes, "smallest size (K/M/G suffixes)")->capture_default_str();
  app.add_option("-e,--maxbytes", o.maxBytes, "largest size")->capture_default_str();
  app.add_option("-f,--stepfactor", o.factor, "size multiplier between rows")->capture_default_str();
  app.add_option("--dtype", o.dtype, "int8..uint64, float16, bfloat16, float32, float64")->capture_default_str();
  app.add_option("--op", o.op, "sum, avg, prod, max, min")->capture_default_str();
  app.add_option("--streams", o.streams, "streams per neighbour (0 = library default)")->capture_default_str();
  app.add_option("--iters", o.iters, "timed iterations per size")->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed iterations per size")->capture_default_str();
  app.add_option("--root", o.root, "broadcast root rank")->capture_default_str();
  app.add_option("--timeout-ms", o.timeoutMs, "op timeout")->capture_default_str();
  app.add_option("--quant", o.quant, "payload codec: none, fp16, bf16, uint8, uint4")
      ->capture_default_str();
  app.add_option("--rounding", o.rounding, "codec rounding")
      ->check(CLI::IsMember({"nearest", "stochastic"}))->capture_default_str();
  app.add_option("--quant-block", o.quantBlock, "uint8/uint4 block size (0 = 256)")
      ->capture_default_str();
  app.add_flag("--receiver", o.receiver, "sync: this process fetches (default: the last rank)");
  app.add_flag("--json", o.json, "print one JSON object instead of the table");
  app.add_option("--transport", o.transport, "data links: tcp, ibverbs (RDMA) or nccl (with --memory cuda)")
      ->check(CLI::IsMember({"tcp", "ibverbs", "nccl"}))->capture_default_str();
  app.add_option("--memory", o.memory, "buffers in host memory or CUDA device memory (staged)")
      ->check(CLI::IsMember({"host", "cuda"}))->capture_default_str();
  app.add_flag("--optimize", o.optimize,
               "call ecclCommOptimizeTopology once the world is complete (bandwidth probes, "
               "ring reordered) and report its time");
  app.add_flag("--spawned", spawned, "internal: this process was spawned by eccl-bench");
  CLI11_PARSE(app, argc, argv);
  if (o.peers < 1 || o.iters < 1 || o.warmup < 0 || o.factor < 1) {
    std::fprintf(stderr, "eccl-bench: --peers, --iters must be >= 1, -f >= 1\n");
    return 2;
  }
  if (!o.master.empty()) return runPeer(o, o.master, o.world > 0 ? o.world : 1);
  (void)spawned;
  return spawnLocal(o, argc, argv);
}
