// eccl-master: the membership manager as a standalone process.
//   ECCL_AUTH_TOKEN=T eccl-master --listen 0.0.0.0:48148
//   eccl-master --listen 127.0.0.1:48148          (open: loopback only)
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <string>
#include <unistd.h>

#include "common/env.h"
#include "eccl/eccl.h"

namespace {

volatile std::sig_atomic_t gStop = 0;
void onSignal(int) { gStop = 1; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ECCL master: admits peers, keeps epochs and rings, agrees on completions"};
  std::string listen = "0.0.0.0:48148";
  std::string token;
  uint32_t heartbeatMs = 500, failureMs = 2000;
  app.add_option("--listen", listen, "HOST:PORT to listen on ([v6]:port for IPv6; port 0 = any)")
      ->capture_default_str();
  app.add_option("--auth-token", token,
                 "shared token every peer must prove it knows (default: ECCL_AUTH_TOKEN; prefer "
                 "the variable: a command line is visible to other users)");
  bool insecure = false, trustAdvertised = false;
  uint32_t voteTimeoutMs = 60000;
  app.add_flag("--insecure-no-auth", insecure,
               "serve a non-loopback address without a token (anyone who reaches it may join)");
  app.add_flag("--trust-advertised-addresses", trustAdvertised,
               "accept peers' advertised data addresses that differ from what the master sees (NAT)");
  std::string tls, tlsCert, tlsKey, tlsCa;
  app.add_option("--tls", tls, "TLS 1.3 on every connection: off, psk (key from the token) or "
                               "cert (default: ECCL_TLS, else off)");
  app.add_option("--tls-cert", tlsCert, "PEM certificate chain for --tls cert (default: ECCL_TLS_CERT)");
  app.add_option("--tls-key", tlsKey, "PEM private key for --tls cert (default: ECCL_TLS_KEY)");
  app.add_option("--tls-ca", tlsCa, "PEM CA bundle peers' certificates must chain to (default: ECCL_TLS_CA)");
  app.add_option("--vote-timeout-ms", voteTimeoutMs,
                 "members that have not joined an update this long after the first are removed")
      ->capture_default_str();
  app.add_option("--heartbeat-ms", heartbeatMs, "expected peer heartbeat interval")->capture_default_str();
  app.add_option("--failure-timeout-ms", failureMs, "silence after which a peer is dead")
      ->capture_default_str();
  bool helpEnv = false;
  app.add_flag("--help-env", helpEnv, "list the ECCL_* environment variables and exit");
  CLI11_PARSE(app, argc, argv);
  if (helpEnv) {
    size_t n = 0;
    const eccl::env::Knob* k = eccl::env::knobs(&n);
    for (size_t i = 0; i < n; ++i) {
      std::printf("%-20s default %-9s %s\n", k[i].name,
                  *k[i].defaultValue ? k[i].defaultValue : "(none)", k[i].help);
    }
    return 0;
  }

  // Port 0 is allowed here, unlike in a master address peers dial.
  std::string host = listen, portText = "0";
  if (const size_t colon = listen.rfind(':'); colon != std::string::npos) {
    host = listen.substr(0, colon);
    portText = listen.substr(colon + 1);
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  char* end = nullptr;
  const unsigned long port = std::strtoul(portText.c_str(), &end, 10);
  if (host.empty() || portText.empty() || *end != '\0' || port > 65535) {
    std::fprintf(stderr, "eccl-master: --listen '%s' is not HOST:PORT\n", listen.c_str());
    return 2;
  }

  ecclMasterConfig_t cfg = ECCL_MASTER_CONFIG_INIT;
  cfg.listenAddress = host.c_str();
  cfg.port = static_cast<uint16_t>(port);
  cfg.authToken = token.empty() ? nullptr : token.c_str();  // NULL: ECCL_AUTH_TOKEN
  cfg.heartbeatIntervalMs = heartbeatMs;
  cfg.failureTimeoutMs = failureMs;
  cfg.voteTimeoutMs = voteTimeoutMs;
  cfg.allowUnauthenticated = insecure ? 1 : 0;
  cfg.trustAdvertisedAddresses = trustAdvertised ? 1 : 0;
  auto orEnv = [](const std::string& s) { return s.empty() ? nullptr : s.c_str(); };
  cfg.tls = orEnv(tls);
  cfg.tlsCertFile = orEnv(tlsCert);
  cfg.tlsKeyFile = orEnv(tlsKey);
  cfg.tlsCaFile = orEnv(tlsCa);
  ecclMaster_t master = nullptr;
  if (ecclResult_t r = ecclMasterCreate(&cfg, &master); r != ecclSuccess) {
    std::fprintf(stderr, "eccl-master: %s\n", ecclGetLastError(nullptr));
    return 1;
  }
  uint16_t bound = 0;
  ecclMasterGetPort(master, &bound);
  std::printf("eccl-master listening on %s:%u\n", host.c_str(), bound);
  const bool authenticated = !token.empty() || !eccl::env::authToken().empty();
  std::printf("eccl-master mode: %s; TLS %s\n",
              authenticated ? "authenticated (HMAC-SHA256 challenge-response on the shared token)"
                            : "OPEN (no auth token: anyone who reaches it may join)",
              tls.empty() ? eccl::env::tlsMode().c_str() : tls.c_str());
  std::fflush(stdout);
  std::signal(SIGINT, onSignal);
  std::signal(SIGTERM, onSignal);
  while (gStop == 0) pause();
  ecclMasterDestroy(master);
  return 0;
}
