/*
 * jwt — client assertions for the Microsoft identity platform's
 * certificate credential: a compact JWS signed with the app's private key.
 *
 * Header: {"alg":"RS256","typ":"JWT","x5t":<SHA-1 of the cert DER>} by
 * default, or {"alg":"PS256","typ":"JWT","x5t#S256":<SHA-256 of the DER>}
 * (base64url without padding). Claims: aud (the token URL actually
 * called), iss = sub = client id, jti (random UUID), nbf = iat = now,
 * exp = now + 600.
 *
 * Only this module includes OpenSSL. The private key never leaves the
 * struct, is never printed, and is freed (and cleansed by OpenSSL) with it.
 */
#ifndef GALBRIDGE_JWT_H
#define GALBRIDGE_JWT_H

#include <stddef.h>
#include <time.h>

struct jwt_key;

enum jwt_alg {
  JWT_ALG_RS256,
  JWT_ALG_PS256,
};

/* Load the certificate (PEM) and its RSA private key from `key_file`, or
 * from `cert_file` itself when key_file is NULL. Checks that the key
 * matches the certificate. Returns 0 and a new key in *out, or -1 with a
 * message in `err` naming the file (never the key material). */
int jwt_key_load(const char *cert_file, const char *key_file,
                 struct jwt_key **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void jwt_key_free(struct jwt_key *key);

/* Build a signed assertion. Returns 0 and a new NUL-terminated string in
 * *out (free() it), or -1 with a message in `err`. */
int jwt_client_assertion(const struct jwt_key *key, enum jwt_alg alg,
                         const char *client_id, const char *aud, time_t now,
                         char **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* base64url without padding; new string or NULL on allocation failure. */
char *jwt_base64url(const unsigned char *data, size_t len);

/* HMAC-SHA-256 of `msg` under `key` into out (32 bytes). This module is
 * galbridge's one door to OpenSSL, so the anchor's proof (anchor.h) is
 * computed here. Returns 0, or -1 when OpenSSL fails. */
int jwt_hmac_sha256(const unsigned char *key, size_t keylen,
                    const unsigned char *msg, size_t msglen,
                    unsigned char out[32]) __attribute__((warn_unused_result));

/* Compare n bytes in constant time: 0 when equal. */
int jwt_memcmp_ct(const void *a, const void *b, size_t n);

/* Wipe n bytes so that the compiler cannot drop it. */
void jwt_cleanse(void *p, size_t n);

#endif
