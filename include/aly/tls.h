/*
 * TLS server context for "listen ... tls" listeners.
 *
 * Built by the master (it can read a root-only key), inherited by workers over
 * fork.  Offers TLS 1.2 and 1.3 and ALPN h2 and http/1.1.
 */
#ifndef ALY_TLS_H
#define ALY_TLS_H

#include <openssl/ssl.h>

#include "aly/common.h"

SSL_CTX *tls_context_new(const char *cert_file, const char *key_file, aly_err_t *err);

#endif
