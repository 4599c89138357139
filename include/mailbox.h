/*
 * mailbox — what a migration link reads from Exchange Online: the source
 * tenant's mailboxes (into the store, store_mailbox_put) and the target
 * tenant's accepted domains.
 *
 * Mailboxes are read with Get-Mailbox, in pages (exo follows the
 * nextLink), asking only for the properties exo_mailbox_record() needs
 * ($select EXO_MAILBOX_SELECT). After a first full read only what
 * changed is asked for: -Filter "WhenChangedUTC -ge '<mark>'", where the
 * mark is the newest WhenChangedUTC seen, less MAILBOX_OVERLAP seconds
 * (an object changed while the last read ran, or a clock that differs
 * between Exchange's servers, is read again rather than missed: putting
 * an unchanged record again changes nothing). A full read is made again
 * every MAILBOX_FULL_EVERY seconds, which also brings in any change the
 * filter could not show. A 10,000-mailbox source costs a full read of
 * about ten requests a day and one request a round otherwise.
 *
 * The date in the filter is written as Exchange's filter documentation
 * shows dates: month/day/year and a 24-hour time ("12/07/2026
 * 09:55:00"), in UTC as the property is.
 */
#ifndef GALBRIDGE_MAILBOX_H
#define GALBRIDGE_MAILBOX_H

#include <jansson.h>
#include <time.h>

#include "exo.h"
#include "store.h"

#define MAILBOX_OVERLAP 600
#define MAILBOX_FULL_EVERY 86400

/* Called once: result 0, or -1 with errmsg (a line for the log). */
typedef void (*mailbox_read_fn)(void *ctx, int result, const char *errmsg);

/* Read `tenant_id`'s mailboxes changed since the store's mark (all of
 * them when there is none or the last full read is MAILBOX_FULL_EVERY
 * old) through `exo` into `store`, then move the mark. A mailbox whose
 * values exo_mailbox_record() refuses is kept as {"bad": reason}: its
 * person fails alone. Returns 0 (done is called later, from the loop),
 * or -1 (done is never called). Nothing is borrowed past done. */
int mailbox_read(struct store *store, struct exo *exo, const char *tenant_id,
                 time_t now, mailbox_read_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* Called once: result 0 with domains (borrowed array of lower-case names)
 * and initial (borrowed), or -1 with errmsg. */
typedef void (*mailbox_domains_fn)(void *ctx, int result,
                                   const json_t *domains, const char *initial,
                                   const char *errmsg);

/* The tenant's accepted domains (Get-AcceptedDomain). Returns 0 (done is
 * called later) or -1 (never called). */
int mailbox_domains(struct exo *exo, mailbox_domains_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* The filter date for `mark` (a WhenChangedUTC text): MAILBOX_OVERLAP
 * seconds earlier, "MM/dd/yyyy HH:mm:ss" UTC, into out (at least 20
 * bytes). -1 when mark is not an ISO 8601 time. */
int mailbox_filter_date(const char *mark, char *out, size_t len);

#endif
