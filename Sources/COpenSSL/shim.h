#ifndef APUS_COPENSSL_SHIM_H
#define APUS_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>

// OpenSSL exposes part of its API as function-like macros, which Swift cannot call.
// These static-inline shims give them names Swift can see (prefix: COpenSSL_).

static inline long COpenSSL_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_min_proto_version(ctx, version);
}

static inline long COpenSSL_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}

static inline long COpenSSL_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}

static inline long COpenSSL_SSL_CTX_set_ecdh_auto(SSL_CTX *ctx, int onoff) {
    (void)ctx; (void)onoff;
    return 1; // Always on since OpenSSL 1.1.0; kept so callers need no version checks.
}

static inline int COpenSSL_OPENSSL_VERSION_MAJOR(void) { return OPENSSL_VERSION_MAJOR; }

#endif
