// eccl-sync-peer: one member of the shared-state fault test, using only the
// public C API.
//
//   eccl-sync-peer --master HOST:PORT [--id NAME] [--mib 64] [--salt 0] [--receive-only]
//
// (lost: sources that broke off mid-transfer; the others finished their chunks.)
//
// Holds a state of one float32 tensor of --mib MiB whose content depends on
// --salt, and loops in lockstep with the other members: agree on admitting
// newcomers (MAX all-reduce), update the topology when someone is pending,
// sync the state (revision + 1 each time; the first sync gives 0). Lines
// (times are CLOCK_MONOTONIC ns):
//
//   admitted t world
//   synced   t rev world recv sent fetched nsrc lost src0 src1 ... hash
//   error    t what rc
//
// recv/sent are the sync's bytes, nsrc the sources it received from and
// srcK what each sent; hash is FNV-1a over the tensor's 64-bit words.
#include <CLI/CLI.hpp>

#include <time.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "eccl/eccl.h"

namespace {

int64_t nowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

uint64_t fnv1a(const std::vector<float>& v) {
  uint64_t h = 14695981039346656037ull;
  const auto* p = reinterpret_cast<const unsigned char*>(v.data());
  for (size_t i = 0; i + 8 <= v.size() * sizeof(float); i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 1099511628211ull;
  }
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"eccl-sync-peer: a member of the shared-state fault test"};
  std::string master, id = "peer";
  size_t mib = 64;
  int salt = 0;
  bool receiveOnly = false;
  app.add_option("--master", master)->required();
  app.add_option("--id", id);
  app.add_option("--mib", mib);
  app.add_option("--salt", salt);
  app.add_flag("--receive-only", receiveOnly);
  CLI11_PARSE(app, argc, argv);

  std::vector<float> data(mib << 18);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>((i + static_cast<size_t>(salt)) % 997);
  ecclTensorInfo_t tensor = {"data", data.data(), data.size(), ecclFloat32, ecclMemHost, 0};
  ecclSharedState_t state = ECCL_SHARED_STATE_INIT;
  state.tensors = &tensor;
  state.tensorCount = 1;

  ecclCommConfig_t cfg = ECCL_COMM_CONFIG_INIT;
  cfg.masterAddress = master.c_str();
  ecclComm_t comm = nullptr;
  if (ecclCommCreate(&cfg, &comm) != ecclSuccess || ecclCommConnect(comm) != ecclSuccess) {
    std::printf("error t=%" PRId64 " what=connect rc=1\n", nowNs());
    return 1;
  }
  int world = 0;
  ecclCommGetWorldSize(comm, &world);
  std::printf("admitted t=%" PRId64 " world=%d\n", nowNs(), world);
  std::fflush(stdout);

  bool synced = false, justAdmitted = true, lost = false;
  uint64_t last = 0;
  auto fail = [&](const char* what, ecclResult_t rc) {
    std::printf("error t=%" PRId64 " what=%s rc=%d\n", nowNs(), what, static_cast<int>(rc));
    std::fflush(stdout);
    if (rc != ecclPeerLost && rc != ecclTimeout) {
      std::fprintf(stderr, "eccl-sync-peer[%s]: %s: %s\n", id.c_str(), what, ecclGetLastError(comm));
      std::exit(1);
    }
    lost = true;
  };
  for (;;) {
    if (lost) {
      lost = false;
      if (ecclResult_t rc = ecclCommUpdateTopology(comm); rc != ecclSuccess) {
        fail("update", rc);
        continue;
      }
    } else if (!justAdmitted) {
      int pending = 0;
      ecclCommArePeersPending(comm, &pending);
      int32_t flag = pending;
      if (ecclResult_t rc = ecclAllReduce(&flag, &flag, 1, ecclInt32, ecclMax, nullptr, comm, nullptr);
          rc != ecclSuccess) {
        fail("agree", rc);
        continue;
      }
      if (flag != 0) {
        if (ecclResult_t rc = ecclCommUpdateTopology(comm); rc != ecclSuccess) {
          fail("update", rc);
          continue;
        }
      }
    }
    justAdmitted = false;
    state.revision = synced ? last + 1 : 0;
    ecclSyncInfo_t info = ECCL_SYNC_INFO_INIT;
    const ecclResult_t rc = ecclSharedStateSync(
        comm, &state, receiveOnly ? ecclSyncReceiveOnly : ecclSyncEnforcePopular, &info);
    if (rc != ecclSuccess) {
      fail("sync", rc);
      continue;
    }
    synced = true;
    last = state.revision;
    ecclCommGetWorldSize(comm, &world);
    std::string sources;
    for (uint32_t k = 0; k < info.sourcesUsed; ++k) {
      sources += " src" + std::to_string(k) + "=" + std::to_string(info.bytesFromSource[k]);
    }
    std::printf("synced t=%" PRId64 " rev=%llu world=%d recv=%llu sent=%llu fetched=%u nsrc=%u "
                "lost=%u%s "
                "hash=0x%016llx\n",
                nowNs(), static_cast<unsigned long long>(last), world,
                static_cast<unsigned long long>(info.bytesReceived),
                static_cast<unsigned long long>(info.bytesSent), info.tensorsFetched,
                info.sourcesUsed, info.sourcesLost, sources.c_str(), static_cast<unsigned long long>(fnv1a(data)));
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}
