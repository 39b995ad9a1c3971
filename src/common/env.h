// Environment knobs. Every knob ECCL reads is declared once in the table in
// env.cc and documented in docs/environment.md; nothing else calls getenv.
#pragma once

#include <cstdint>
#include <string>

namespace eccl::env {

struct Knob {
  const char* name;
  const char* defaultValue;
  const char* help;
};

// ECCL_LOG_LEVEL: trace, debug, info, warn (default), error, off.
std::string logLevel();
// ECCL_LOG_SUBSYS: comma-separated subsystems to log (default: all).
std::string logSubsystems();
// ECCL_SEGMENT_BYTES: pipelining unit of ring collectives (default 1 MiB).
uint64_t segmentBytes();
// ECCL_SOCKET_BUFFER: SO_SNDBUF/SO_RCVBUF per data stream; 0 = kernel autotuning.
uint64_t socketBufferBytes();
// ECCL_STREAMS: default streams per neighbour when the config says 0 (default 4).
uint32_t defaultStreams();  // 0 = adaptive
uint64_t testPaceFirstStream();
// ECCL_MASTER_MAX_CONNECTIONS: connections a master holds at once (default 4096).
uint32_t masterMaxConnections();
uint32_t syncSources();
// ECCL_SHM: shared memory between peers on one host (default 1).
bool sharedMemory();
// ECCL_PROBE_MS: at the master, the send time of each bandwidth probe round (default 1000).
uint32_t probeMs();
// ECCL_MASTER_MAX_CONNECTIONS_PER_SOURCE: of those, from one IP address (default 256).
uint32_t masterMaxConnectionsPerSource();
// ECCL_MASTER_REGISTER_TIMEOUT_MS: time to authenticate and register (default 5000).
uint32_t masterRegisterTimeoutMs();
// ECCL_CUDA_PLUGIN: the CUDA plugin's path (empty: next to libeccl, then the search path).
std::string cudaPlugin();
// ECCL_IB_DEVICE: the RDMA device ("name" or "name:port"; empty: the first active port).
std::string ibDevice();
// ECCL_IB_GID_INDEX: the GID index peers are addressed by (-1: 0 on RoCE, LID on InfiniBand).
int ibGidIndex();
// ECCL_IB_TIMEOUT, ECCL_IB_TC, ECCL_IB_SL: the queue pairs' ACK timeout exponent, traffic class, service level.
uint8_t ibTimeout();
uint8_t ibTrafficClass();
uint8_t ibServiceLevel();
// ECCL_AUTH_TOKEN: the shared token when a config leaves authToken unset.
std::string authToken();
// ECCL_TLS, ECCL_TLS_CERT, ECCL_TLS_KEY, ECCL_TLS_CA: TLS when a config leaves them NULL.
std::string tlsMode();
std::string tlsCertFile();
std::string tlsKeyFile();
std::string tlsCaFile();

// The whole table, for docs and `eccl-master --help-env`.
const Knob* knobs(size_t* count);

}  // namespace eccl::env
