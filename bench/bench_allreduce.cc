// In-process all-reduce: N peers as threads of this process on loopback TCP,
// a master embedded. Reports bus bandwidth (nccl-tests' definition) as the
// "busbw" counter and bytes/second of the user buffer.
//
//   build/bench/bench_allreduce --benchmark_filter='AllReduce/4/.*'
#include <benchmark/benchmark.h>

#include <barrier>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "eccl/eccl.h"

namespace {

// N connected peers, each on its own thread, running `job` together on demand.
class Group {
 public:
  explicit Group(int n) : n_(n), start_(n + 1), done_(n + 1) {
    ecclMasterConfig_t mc = ECCL_MASTER_CONFIG_INIT;
    mc.listenAddress = "127.0.0.1";
    ecclMasterCreate(&mc, &master_);
    uint16_t port = 0;
    ecclMasterGetPort(master_, &port);
    address_ = "127.0.0.1:" + std::to_string(port);
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { run(); });
    dispatch([](ecclComm_t) {});  // wait until everyone is connected
  }
  ~Group() {
    stop_ = true;
    start_.arrive_and_wait();
    for (auto& t : threads_) t.join();
    ecclMasterDestroy(master_);
  }
  void dispatch(std::function<void(ecclComm_t)> job) {
    job_ = std::move(job);
    start_.arrive_and_wait();
    done_.arrive_and_wait();
  }

 private:
  void run() {
    ecclCommConfig_t cfg = ECCL_COMM_CONFIG_INIT;
    cfg.masterAddress = address_.c_str();
    ecclComm_t comm = nullptr;
    ecclCommCreate(&cfg, &comm);
    ecclCommConnect(comm);
    for (int world = 0; world < n_;) {  // members agree on admitting newcomers
      int pending = 0;
      ecclCommArePeersPending(comm, &pending);
      ecclAllReduce(&pending, &pending, 1, ecclInt32, ecclMax, nullptr, comm, nullptr);
      if (pending) ecclCommUpdateTopology(comm);
      ecclCommGetWorldSize(comm, &world);
    }
    for (;;) {
      start_.arrive_and_wait();
      if (stop_) break;
      job_(comm);
      done_.arrive_and_wait();
    }
    ecclCommDestroy(comm);
  }

  int n_;
  ecclMaster_t master_ = nullptr;
  std::string address_;
  std::barrier<> start_, done_;
  std::function<void(ecclComm_t)> job_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

void BM_AllReduce(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const size_t bytes = static_cast<size_t>(state.range(1));
  static std::map<int, std::unique_ptr<Group>> groups;  // connecting is slow: reuse
  auto& g = groups[n];
  if (!g) g = std::make_unique<Group>(n);
  std::vector<std::vector<float>> bufs(static_cast<size_t>(n), std::vector<float>(bytes / 4, 1.0f));
  std::atomic<int> next{0};
  bool ok = true;
  for (auto _ : state) {
    next = 0;
    g->dispatch([&](ecclComm_t comm) {
      auto& b = bufs[static_cast<size_t>(next++)];
      if (ecclAllReduce(b.data(), b.data(), b.size(), ecclFloat32, ecclSum, nullptr, comm, nullptr) !=
          ecclSuccess) {
        ok = false;
      }
    });
  }
  if (!ok) state.SkipWithError("all-reduce failed");
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
  state.counters["busbw_GBps"] = benchmark::Counter(
      static_cast<double>(bytes) * 2.0 * (n - 1) / n * static_cast<double>(state.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
}

BENCHMARK(BM_AllReduce)
    ->ArgsProduct({{2, 4}, {8, 64 << 10, 4 << 20, 64 << 20}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
