/*
 * text — small helpers for text that comes from outside: a tenant, the
 * network, a config file or a command line.
 *
 * UTF-8 here is the strict form (RFC 3629): no overlong encodings, no
 * surrogates, nothing past U+10FFFF, so one rule holds in every module
 * that checks or walks text. Case rules are ASCII only and never depend on
 * the locale. Every function is pure but text_wipe_free(), which frees.
 */
#ifndef GALBRIDGE_TEXT_H
#define GALBRIDGE_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* Length (1 to 4) of the valid UTF-8 sequence that starts at s[0] and fits
 * in s[0..n), or 0 when there is none (n == 0 included). */
size_t text_utf8_seq(const unsigned char *s, size_t n);

/* 1 when s[0..n) is all valid UTF-8, else 0. */
int text_utf8_valid(const char *s, size_t n);

/* Length of the longest prefix of s[0..n) that is all valid UTF-8: where
 * to cut text that was cut by bytes (and may end inside a character) so
 * that JSON takes it. */
size_t text_utf8_valid_prefix(const char *s, size_t n);

/* The code point at s[0..n) (n > 0) and its length in *len. A byte that
 * starts no valid sequence is returned as it is, with *len = 1, so that a
 * walk over broken text still moves on. */
uint32_t text_utf8_decode(const unsigned char *s, size_t n, size_t *len);

/* 1 when a[0..alen) and b[0..blen) are equal but for ASCII case. */
int text_ci_equal(const char *a, size_t alen, const char *b, size_t blen);

/* Levenshtein distance between a and b ignoring ASCII case, for "did you
 * mean". SIZE_MAX when either is 64 bytes or longer (never close). */
size_t text_distance(const char *a, const char *b);

/* 1 when host[0..len) names this machine's loopback: 127.0.0.1, [::1] or
 * localhost (any case). The only hosts plain http is allowed to. */
int text_is_loopback(const char *host, size_t len);

/* vsnprintf into err when err is not NULL and errlen > 0; a message longer
 * than errlen is cut (errors are for people, not parsed). */
void text_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Overwrite s (a NUL-terminated secret: a token, a request body holding
 * one) with zeros, then free it. NULL is fine. */
void text_wipe_free(char *s);

/* Whether s is a GUID: 8-4-4-4-12 hexadecimal digits, either case (NULL
 * is not). */
int text_is_guid(const char *s);

#endif
