// Optional TLS 1.3 (OpenSSL) for the control channel and the data streams.
//
// Modes:
//  - off:  plain TCP (the HMAC handshake still authenticates every connection).
//  - psk:  TLS 1.3 with an external pre-shared key derived from the auth token
//          (HMAC-SHA256(token, label)); no certificates, the token must be set.
//  - cert: TLS 1.3 with certificates: each side presents certFile/keyFile and
//          requires the other's to chain to caFile (mutual TLS). Peers dial IP
//          addresses, so the CA, not a host name, says who belongs to the job.
// In both TLS modes the HMAC challenge-response runs first, in clear (it
// carries nonces and ids, no secret), then the TLS handshake, then every byte
// is encrypted. Session tickets are off: nothing is resumed.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/status.h"

struct ssl_ctx_st;  // SSL_CTX
struct ssl_st;      // SSL

namespace eccl::security {

enum class TlsMode { kOff, kPsk, kCert };

struct TlsOptions {
  TlsMode mode = TlsMode::kOff;
  std::string certFile;
  std::string keyFile;
  std::string caFile;
};

const char* tlsModeName(TlsMode mode);

// From config strings; NULL fields fall back to ECCL_TLS, ECCL_TLS_CERT,
// ECCL_TLS_KEY and ECCL_TLS_CA. ecclInvalidArgument for an unknown mode or
// missing files.
Result<TlsOptions> tlsOptionsFrom(const char* mode, const char* certFile, const char* keyFile,
                                  const char* caFile);

// Sets up an SSL_CTX for one side: TLS 1.3 only, no tickets, partial writes,
// and the mode's key material. `token` feeds the PSK; it must outlive nothing:
// the derived key is stored with the context.
Status configureTls(ssl_ctx_st* ctx, const TlsOptions& options, const std::string& token,
                    bool server);

// An owned SSL_CTX for the data streams.
class TlsContext {
 public:
  static Result<std::shared_ptr<TlsContext>> create(const TlsOptions& options,
                                                    const std::string& token, bool server);
  ~TlsContext();
  ssl_ctx_st* native() const { return ctx_; }
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

 private:
  TlsContext() = default;
  ssl_ctx_st* ctx_ = nullptr;
};

// The newest OpenSSL error queue entries as text (and clears the queue).
std::string tlsErrors();

}  // namespace eccl::security
