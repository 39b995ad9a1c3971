#include "security/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <fmt/format.h>

#include <array>
#include <cstring>
#include <fstream>

#include "common/env.h"
#include "security/auth.h"

namespace eccl::security {
namespace {

constexpr std::string_view kPskLabel = "ECCL-tls-psk-v1";
constexpr unsigned char kPskIdentity[] = "eccl";
// TLS_AES_128_GCM_SHA256: the PSK's hash must be the suite's.
constexpr unsigned char kPskSuite[] = {0x13, 0x01};

// The PSK lives with the SSL_CTX (ex_data), freed with it.
int pskIndex() {
  static const int index = SSL_CTX_get_ex_new_index(
      0, nullptr, nullptr, nullptr,
      [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) { delete static_cast<Proof*>(ptr); });
  return index;
}

SSL_SESSION* pskSession(SSL* ssl) {
  const auto* key = static_cast<const Proof*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), pskIndex()));
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kPskSuite);
  if (key == nullptr || cipher == nullptr) return nullptr;
  SSL_SESSION* s = SSL_SESSION_new();
  if (s == nullptr) return nullptr;
  if (SSL_SESSION_set1_master_key(s, reinterpret_cast<const unsigned char*>(key->data()), key->size()) != 1 ||
      SSL_SESSION_set_cipher(s, cipher) != 1 ||
      SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION) != 1) {
    SSL_SESSION_free(s);
    return nullptr;
  }
  return s;
}

int usePsk(SSL* ssl, const EVP_MD* md, const unsigned char** id, size_t* idlen, SSL_SESSION** sess) {
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kPskSuite);
  if (md != nullptr && (cipher == nullptr || SSL_CIPHER_get_handshake_digest(cipher) != md)) {
    *sess = nullptr;  // a retry with another hash: offer nothing
    return 1;
  }
  *sess = pskSession(ssl);
  *id = kPskIdentity;
  *idlen = sizeof(kPskIdentity) - 1;
  return *sess != nullptr ? 1 : 0;
}

int findPsk(SSL* ssl, const unsigned char* id, size_t idlen, SSL_SESSION** sess) {
  if (idlen != sizeof(kPskIdentity) - 1 || std::memcmp(id, kPskIdentity, idlen) != 0) {
    *sess = nullptr;  // unknown identity: the handshake fails
    return 1;
  }
  *sess = pskSession(ssl);
  return *sess != nullptr ? 1 : 0;
}

bool readable(const std::string& path) { return std::ifstream(path).good(); }

}  // namespace

const char* tlsModeName(TlsMode mode) {
  switch (mode) {
    case TlsMode::kOff: return "off";
    case TlsMode::kPsk: return "psk";
    case TlsMode::kCert: return "cert";
  }
  return "?";
}

std::string tlsErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no OpenSSL error recorded" : out;
}

Result<TlsOptions> tlsOptionsFrom(const char* mode, const char* certFile, const char* keyFile,
                                  const char* caFile) {
  TlsOptions o;
  const std::string m = mode != nullptr ? mode : env::tlsMode();
  if (m.empty() || m == "off") {
    o.mode = TlsMode::kOff;
  } else if (m == "psk") {
    o.mode = TlsMode::kPsk;
  } else if (m == "cert") {
    o.mode = TlsMode::kCert;
  } else {
    return error(ecclInvalidArgument, fmt::format("TLS mode '{}' is not off, psk or cert", m));
  }
  o.certFile = certFile != nullptr ? certFile : env::tlsCertFile();
  o.keyFile = keyFile != nullptr ? keyFile : env::tlsKeyFile();
  o.caFile = caFile != nullptr ? caFile : env::tlsCaFile();
  if (o.mode == TlsMode::kCert) {
    for (const auto& [what, path] : {std::pair{"certificate (tlsCertFile, ECCL_TLS_CERT)", o.certFile},
                                     std::pair{"private key (tlsKeyFile, ECCL_TLS_KEY)", o.keyFile},
                                     std::pair{"CA bundle (tlsCaFile, ECCL_TLS_CA)", o.caFile}}) {
      if (path.empty() || !readable(path)) {
        return error(ecclInvalidArgument,
                     fmt::format("TLS mode cert needs a readable {}; got '{}'", what, path));
      }
    }
  }
  return o;
}

Status configureTls(SSL_CTX* ctx, const TlsOptions& options, const std::string& token, bool server) {
  ERR_clear_error();
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  // A peer that dies mid-stream is a lost peer (ecclPeerLost), not a TLS error.
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (options.mode == TlsMode::kPsk) {
    if (token.empty()) {
      return error(ecclInvalidArgument, "TLS mode psk derives its key from the auth token; set one");
    }
    SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256");
    const std::string_view label = kPskLabel;
    auto* key = new Proof(hmacSha256(token, {reinterpret_cast<const std::byte*>(label.data()),
                                             label.size()}));
    SSL_CTX_set_ex_data(ctx, pskIndex(), key);
    if (server) {
      SSL_CTX_set_psk_find_session_callback(ctx, findPsk);
    } else {
      SSL_CTX_set_psk_use_session_callback(ctx, usePsk);
    }
    return Status::ok();
  }
  if (options.mode == TlsMode::kCert) {
    if (SSL_CTX_use_certificate_chain_file(ctx, options.certFile.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, options.keyFile.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1 ||
        SSL_CTX_load_verify_locations(ctx, options.caFile.c_str(), nullptr) != 1) {
      return error(ecclInvalidArgument, fmt::format("TLS certificate setup ({}, {}, {}): {}",
                                                    options.certFile, options.keyFile,
                                                    options.caFile, tlsErrors()));
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    return Status::ok();
  }
  return error(ecclInternalError, "configureTls with TLS off");
}

Result<std::shared_ptr<TlsContext>> TlsContext::create(const TlsOptions& options,
                                                       const std::string& token, bool server) {
  std::shared_ptr<TlsContext> c(new TlsContext());
  c->ctx_ = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (c->ctx_ == nullptr) return error(ecclSystemError, "SSL_CTX_new: " + tlsErrors());
  ECCL_RETURN_IF_ERROR(configureTls(c->ctx_, options, token, server));
  return c;
}

TlsContext::~TlsContext() {
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

}  // namespace eccl::security
