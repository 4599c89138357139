/*
 * migration — what a mail user must carry to be moved by Microsoft's
 * cross-tenant mailbox migration, and whether a target object may be
 * made ready at all (MIGRATION.md §1.4, §1.5).
 *
 * Pure functions over galbridge's own shapes: a source mailbox's record
 * (exo_mailbox_record), the target's accepted domains, a target object's
 * state (exo_user_state). The planner adds what migration_desired()
 * gives to a mail user copy's mapped attributes; the executor asks
 * migration_target_refused() before it stamps an object it did not just
 * make.
 *
 * What a ready MailUser carries (keys of the desired attributes, named
 * as Set-MailUser's parameters):
 *   ExchangeGuid         the source mailbox's
 *   ArchiveGuid          the source archive's, only when it has one
 *   ExternalEmailAddress the source's primary address (or its address in
 *                        the source's initial domain: migration_external)
 *   ProxyAddresses       every address of the copy, replacing what it had:
 *                        "SMTP:" + its primary (the mapping's
 *                        PrimarySmtpAddress, else alias@initial domain),
 *                        "smtp:" + alias@the target's initial domain,
 *                        the mapping's extra addresses in accepted
 *                        domains (any other is left out: a proxy in a
 *                        domain the target does not own stops the move),
 *                        "X500:" + the source's LegacyExchangeDN and every
 *                        X500 address of the source.
 *   MicrosoftOnlineServicesID
 *                        the mapping's, kept only when it is in an accepted
 *                        domain of the target (else the person fails);
 *                        without one Exchange keeps alias@initial domain.
 */
#ifndef GALBRIDGE_MIGRATION_H
#define GALBRIDGE_MIGRATION_H

#include <jansson.h>
#include <stddef.h>

#include "config.h"
#include "exo.h"

/* The target tenant as migration needs it; borrowed. */
struct migration_target {
  const char *initial;    /* its initial domain, lower case */
  const json_t *accepted; /* its accepted domains: lower-case strings */
  enum config_migration_external external;
};

/* Whether `address` (an address, "smtp:" prefix allowed) is in one of
 * t's accepted domains (compared without case). */
int migration_accepted(const struct migration_target *t, const char *address);

/* Whether `list` (proxy address strings) holds proxy `p` as Exchange
 * compares them: the same type (smtp, whatever its case, or X500) and the
 * same value without case. */
int migration_has_proxy(const json_t *list, const char *p);

/* Turn `desired` (a mail user copy's mapped attributes: DisplayName,
 * Alias, ExternalEmailAddress, EmailAddresses, PrimarySmtpAddress, ...)
 * into a ready one for the source mailbox `mailbox`: sets the keys above,
 * and removes EmailAddresses and PrimarySmtpAddress (folded into
 * ProxyAddresses). Returns 0, or -1 with a reason in err (the mapping's
 * primary address or MicrosoftOnlineServicesID is not in an accepted
 * domain, the source has no address
 * in an initial domain when migration_external = initial, no alias, an
 * address too long, out of memory): that person fails alone. `desired`
 * is left as it was on -1. */
int migration_desired(const json_t *mailbox, const struct migration_target *t,
                      json_t *desired, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Whether the target object `st` must not be stamped: 0 when it may (an
 * unlicensed MailUser that never had a mailbox, not synchronised from
 * on-premises); else 1 with the reason and the administrator's fix in
 * why (nothing is changed on it). */
int migration_target_refused(const struct exo_user_state *st, char *why,
                             size_t len);

/* Whether the stamps seen on a copy (exo_mailuser_stamps) differ from
 * those `applied` to it: another ExchangeGuid or ArchiveGuid (compared
 * without case), or another set of addresses (the same type and value,
 * without case, in any order; the primary "SMTP:" must stay the
 * primary). Only stamps `applied` holds are compared: 0 when it holds
 * none. */
int migration_stamps_differ(const json_t *applied, const json_t *seen);

/* The keys of the desired attributes that are a ready copy's stamps. */
#define MIGRATION_STAMP_KEYS 3
extern const char *const migration_stamp_keys[MIGRATION_STAMP_KEYS];

/* Whether the desired attributes carry a migration stamp (ExchangeGuid,
 * ArchiveGuid or ProxyAddresses): the executor then checks the target
 * first. */
int migration_stamps(const json_t *attrs);

#endif
