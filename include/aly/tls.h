/*
 * TLS server context for "listen ... tls" listeners.
 *
 * Built by the master (it can read a root-only key), inherited by workers over
 * fork.  Offers TLS 1.2 and 1.3 and ALPN h2 and http/1.1.
 */
#ifndef ALY_TLS_H
#define ALY_TLS_H

#include <openssl/ssl.h>
#include <stdint.h>

#include "aly/common.h"

/*
 * Session tickets (resumption without a full handshake) are encrypted with a
 * key that changes every ticket_rotation_ms and is accepted for one more
 * period after that (the client then gets a ticket under the new key), so a
 * stolen ticket key exposes at most two periods of sessions.  The keys come
 * from a secret drawn here, which workers inherit over fork: any worker
 * resumes any worker's tickets.  A new context (reload) draws a new secret.
 */
SSL_CTX *tls_context_new(const char *cert_file, const char *key_file, uint64_t ticket_rotation_ms, aly_err_t *err);

#endif
