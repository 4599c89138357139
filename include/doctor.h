/*
 * doctor — online checks an administrator can act on: for every tenant,
 * that tokens can be had for Graph and (when a link writes through it)
 * Exchange; for every link, that the reads it needs are allowed, by
 * trying a harmless read of each kind. Writes are never tried: the
 * permissions they need are named, and exercised by the first sync. From
 * the state (read-only; a missing one is fine), a note for each tenant
 * whose stored delta link will not be followed because its graph_url
 * changed. For every guest link, both tenants' cross-tenant access
 * settings and trust.c's verdict on them (a read refused for want of
 * Policy.Read.All is a note, not a failure).
 *
 * One line per check on stdout: "ok", "FAIL", "WARN" or "note", the
 * subject, and for a failure or warning what to do ("grant the
 * application permission User.Read.All in tenant contoso and give admin
 * consent").
 */
#ifndef GALBRIDGE_DOCTOR_H
#define GALBRIDGE_DOCTOR_H

#include <stdio.h>
#include <uv.h>

#include "config.h"
#include "http.h"

/* Run every check on `loop` (run the loop until it returns), printing to
 * `out`. Returns 0 when every check passed (WARN and note lines
 * included), 1 when one failed (a FAIL line), -1 when the checks could
 * not run. */
int doctor_run(uv_loop_t *loop, struct http *http, const struct config *cfg,
               FILE *out) __attribute__((warn_unused_result));

#endif
