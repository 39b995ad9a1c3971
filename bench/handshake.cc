// What authentication and TLS cost per data stream: opens links of N streams
// between two TcpTransports on loopback, again and again, with TLS off, psk
// and (when the openssl tool is there to make certificates) cert, and prints
// the time per stream (HMAC challenge-response, plus the TLS handshake).
//   build/bench/handshake [--links 50] [--streams 4]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <string>
#include <vector>

#include "transport/transport.h"

namespace {

using namespace eccl;
using Clock = std::chrono::steady_clock;

double msPerStream(const security::TlsOptions& tls, int links, uint32_t streams) {
  transport::TransportOptions o;
  o.bindAddress = "127.0.0.1";
  o.streams = streams;
  o.authToken = "bench-token";
  o.tls = tls;
  auto a = transport::createTransport("tcp", o).value();
  auto b = transport::createTransport("tcp", o).value();
  transport::CancelFlag never{0};
  std::vector<double> ms;
  for (int epoch = 1; epoch <= links; ++epoch) {
    const auto start = Clock::now();
    auto in = std::async(std::launch::async, [&] {
      return b->accept(2, 1, static_cast<uint64_t>(epoch), Clock::now() + std::chrono::seconds(10), never);
    });
    auto out = a->connect({2, "127.0.0.1", b->port()}, 1, static_cast<uint64_t>(epoch),
                          Clock::now() + std::chrono::seconds(10), never);
    auto link = in.get();
    if (!out || !link) {
      std::fprintf(stderr, "link failed: %s\n", (!out ? out.status() : link.status()).message().c_str());
      std::exit(1);
    }
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count() / streams);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int links = 50;
  uint32_t streams = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--links") links = std::atoi(argv[i + 1]);
    if (flag == "--streams") streams = static_cast<uint32_t>(std::atoi(argv[i + 1]));
  }
  std::printf("%-6s %14s   (median over %d links of %u streams, loopback)\n", "tls",
              "ms per stream", links, streams);
  security::TlsOptions off, psk;
  psk.mode = security::TlsMode::kPsk;
  std::printf("%-6s %14.3f\n", "off", msPerStream(off, links, streams));
  std::printf("%-6s %14.3f\n", "psk", msPerStream(psk, links, streams));
  const auto dir = std::filesystem::temp_directory_path() / ("eccl-bench-tls-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string d = dir.string();
  const std::string cmd =
      "cd " + d + " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
      "-days 1 -subj /CN=bench -keyout k.pem -out c.pem > /dev/null 2>&1";
  if (std::system(cmd.c_str()) == 0) {
    security::TlsOptions cert;
    cert.mode = security::TlsMode::kCert;
    cert.certFile = d + "/c.pem";
    cert.keyFile = d + "/k.pem";
    cert.caFile = d + "/c.pem";  // self-signed: its own CA
    std::printf("%-6s %14.3f\n", "cert", msPerStream(cert, links, streams));
  } else {
    std::printf("%-6s %14s\n", "cert", "skipped: no openssl tool");
  }
  std::filesystem::remove_all(dir);
  return 0;
}
