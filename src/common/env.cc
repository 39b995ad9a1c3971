#include "common/env.h"

#include <cstdlib>
#include <string_view>

namespace eccl::env {
namespace {

constexpr Knob kKnobs[] = {
    {"ECCL_AUTH_TOKEN", "", "shared auth token, used when ecclMasterConfig_t/ecclCommConfig_t.authToken is NULL"},
    {"ECCL_CUDA_PLUGIN", "", "path of the CUDA plugin (libeccl_cuda.so) to load for ecclMemCuda buffers; empty = next to libeccl, then the loader's search path"},
    {"ECCL_IB_DEVICE", "", "transport \"ibverbs\": the RDMA device, as name or name:port (e.g. mlx5_0:1); empty = the first device with an active port"},
    {"ECCL_IB_GID_INDEX", "-1", "transport \"ibverbs\": GID index to address peers by (RoCE; -1 = the first RoCE v2 GID with an IPv4 address, else 0, on RoCE ports; LID addressing on InfiniBand)"},
    {"ECCL_IB_SL", "0", "transport \"ibverbs\": InfiniBand service level of the queue pairs (0 .. 15)"},
    {"ECCL_IB_TC", "0", "transport \"ibverbs\": traffic class of the queue pairs' packets (RoCE: DSCP << 2; 0 .. 255), for the fabric's lossless class"},
    {"ECCL_IB_TIMEOUT", "14", "transport \"ibverbs\": local ACK timeout exponent (4.096 us * 2^t per try, 7 retries; 8 .. 24); overdue completions break a link after 4 x 8 tries + 1 s"},
    {"ECCL_LOG_LEVEL", "warn", "trace, debug, info, warn, error or off"},
    {"ECCL_LOG_SUBSYS", "", "comma-separated subsystems to log: master, comm, transport, coll, api (empty = all)"},
    {"ECCL_MASTER_MAX_CONNECTIONS", "4096", "connections a master holds at once; more are closed at accept (16 .. 1000000)"},
    {"ECCL_MASTER_MAX_CONNECTIONS_PER_SOURCE", "256", "of those, from one IP address (1 .. 1000000)"},
    {"ECCL_MASTER_REGISTER_TIMEOUT_MS", "5000", "a connection must authenticate and register within this (100 .. 600000)"},
    {"ECCL_PROBE_MS", "1000", "at the master: how long each round of ecclCommOptimizeTopology's bandwidth probes sends, in ms (50 .. 60000)"},
    {"ECCL_SEGMENT_BYTES", "1048576", "pipelining unit of ring collectives, in bytes (4096 .. 67108864); a group uses the smallest its members announce"},
    {"ECCL_SHM", "1", "data links between peers on the same host (same boot id, network and pid namespace, user) move frames through shared memory: 1 (default) or 0 (loopback TCP)"},
    {"ECCL_SOCKET_BUFFER", "0", "SO_SNDBUF/SO_RCVBUF of each data stream in bytes; 0 keeps kernel autotuning"},
    {"ECCL_STREAMS", "0", "streams per neighbour link when ecclCommConfig_t.streamsPerPeer is 0 (1 .. 64); 0 = each link starts with 2 and adds streams, up to 32, while they raise its throughput"},
    {"ECCL_SYNC_SOURCES", "4", "at the master: most peers a shared-state sync's receiver fetches from at once (1 .. 1024)"},
    {"ECCL_TEST_PACE_STREAM0", "0", "tests only: caps stream 0 of every outgoing data link at this many bytes/s (a slow stream); 0 = off"},
    {"ECCL_TLS", "off", "TLS 1.3 on control and data connections when the config's tls is NULL: off, psk (key from the auth token) or cert"},
    {"ECCL_TLS_CA", "", "CA bundle (PEM) the other side's certificate must chain to, for tls=cert"},
    {"ECCL_TLS_CERT", "", "this process's certificate chain (PEM), for tls=cert"},
    {"ECCL_TLS_KEY", "", "this process's private key (PEM), for tls=cert"},
};

const Knob& find(std::string_view name) {
  for (const Knob& k : kKnobs) {
    if (name == k.name) return k;
  }
  std::abort();  // a knob read but not declared is a programming error
}

std::string read(std::string_view name) {
  const Knob& k = find(name);
  const char* v = std::getenv(k.name);
  return (v != nullptr && *v != '\0') ? std::string(v) : std::string(k.defaultValue);
}

uint64_t readUint(std::string_view name, uint64_t lo, uint64_t hi) {
  const std::string s = read(name);
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (end == s.c_str() || *end != '\0') v = std::strtoull(find(name).defaultValue, nullptr, 10);
  if (v < lo) v = lo;
  if (v > hi) v = hi;
  return v;
}

}  // namespace

std::string logLevel() { return read("ECCL_LOG_LEVEL"); }
std::string logSubsystems() { return read("ECCL_LOG_SUBSYS"); }
uint64_t segmentBytes() { return readUint("ECCL_SEGMENT_BYTES", 4096, 64ull << 20); }
uint64_t socketBufferBytes() { return readUint("ECCL_SOCKET_BUFFER", 0, 1ull << 30); }
uint32_t defaultStreams() { return static_cast<uint32_t>(readUint("ECCL_STREAMS", 0, 64)); }
uint64_t testPaceFirstStream() { return readUint("ECCL_TEST_PACE_STREAM0", 0, 1ull << 40); }
uint32_t probeMs() { return static_cast<uint32_t>(readUint("ECCL_PROBE_MS", 50, 60000)); }
bool sharedMemory() { return readUint("ECCL_SHM", 0, 1) != 0; }
uint32_t syncSources() { return static_cast<uint32_t>(readUint("ECCL_SYNC_SOURCES", 1, 1024)); }

uint32_t masterMaxConnections() {
  return static_cast<uint32_t>(readUint("ECCL_MASTER_MAX_CONNECTIONS", 16, 1000000));
}
uint32_t masterMaxConnectionsPerSource() {
  return static_cast<uint32_t>(readUint("ECCL_MASTER_MAX_CONNECTIONS_PER_SOURCE", 1, 1000000));
}
uint32_t masterRegisterTimeoutMs() {
  return static_cast<uint32_t>(readUint("ECCL_MASTER_REGISTER_TIMEOUT_MS", 100, 600000));
}
std::string cudaPlugin() { return read("ECCL_CUDA_PLUGIN"); }
std::string ibDevice() { return read("ECCL_IB_DEVICE"); }
uint8_t ibTimeout() { return static_cast<uint8_t>(readUint("ECCL_IB_TIMEOUT", 8, 24)); }
uint8_t ibTrafficClass() { return static_cast<uint8_t>(readUint("ECCL_IB_TC", 0, 255)); }
uint8_t ibServiceLevel() { return static_cast<uint8_t>(readUint("ECCL_IB_SL", 0, 15)); }
int ibGidIndex() {
  const std::string s = read("ECCL_IB_GID_INDEX");
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  return (end == s.c_str() || *end != '\0' || v < -1 || v > 255) ? -1 : static_cast<int>(v);
}
std::string authToken() { return read("ECCL_AUTH_TOKEN"); }

std::string tlsMode() { return read("ECCL_TLS"); }
std::string tlsCertFile() { return read("ECCL_TLS_CERT"); }
std::string tlsKeyFile() { return read("ECCL_TLS_KEY"); }
std::string tlsCaFile() { return read("ECCL_TLS_CA"); }

const Knob* knobs(size_t* count) {
  *count = sizeof(kKnobs) / sizeof(kKnobs[0]);
  return kKnobs;
}

}  // namespace eccl::env
