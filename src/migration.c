/*
 * migration — see include/migration.h.
 *
 * Addresses are compared as Exchange compares proxies: the type (smtp or
 * X500, whatever its case; "SMTP:" only marks the primary) and the value
 * without case. The lists built are in a fixed order (the primary, the
 * initial-domain address, extra addresses sorted, the LegacyExchangeDN,
 * the other X500 addresses sorted), so that the same mailbox always gives
 * the same attributes and its hash only moves when something changed.
 */
#include "migration.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "text.h"

int
migration_accepted(const struct migration_target *t, const char *address)
{
  const char *at;
  const json_t *d;
  size_t i;

  if (address == NULL)
    return 0;
  if (strncasecmp(address, "smtp:", 5) == 0)
    address += 5;
  at = strrchr(address, '@');
  if (at == NULL || at == address || at[1] == '\0')
    return 0;
  json_array_foreach((json_t *)t->accepted, i, d)
  {
    const char *name = json_string_value(d);
    if (name != NULL && strcasecmp(at + 1, name) == 0)
      return 1;
  }
  return 0;
}

/* "smtp" or "x500" class of a proxy, and where its value starts. */
static int
proxy_split(const char *p, const char **value)
{
  if (strncasecmp(p, "smtp:", 5) == 0) {
    *value = p + 5;
    return 1;
  }
  if (strncasecmp(p, "x500:", 5) == 0) {
    *value = p + 5;
    return 2;
  }
  *value = p;
  return 0;
}

int
migration_has_proxy(const json_t *list, const char *p)
{
  const char *v, *w;
  int type = proxy_split(p, &v);
  const json_t *e;
  size_t i;

  json_array_foreach((json_t *)list, i, e)
  {
    const char *q = json_string_value(e);
    if (q != NULL && proxy_split(q, &w) == type && strcasecmp(v, w) == 0)
      return 1;
  }
  return 0;
}

/* Append "prefix" + value unless an equal proxy is there. -1: memory or
 * too long. */
static int
add_proxy(json_t *list, const char *prefix, const char *value)
{
  json_t *p;

  if (strlen(value) > EXO_PROXY_MAX)
    return -1;
  p = json_sprintf("%s%s", prefix, value);
  if (p == NULL)
    return -1;
  if (migration_has_proxy(list, json_string_value(p))) {
    json_decref(p);
    return 0;
  }
  return json_array_append_new(list, p);
}

static int
by_text(const void *a, const void *b)
{
  const char *x = json_string_value(*(json_t *const *)a);
  const char *y = json_string_value(*(json_t *const *)b);
  int c = strcasecmp(x, y);

  return c != 0 ? c : strcmp(x, y);
}

/* Append `from`'s strings to `to`, sorted, without duplicates. */
static int
add_sorted(json_t *to, json_t *from)
{
  size_t n = json_array_size(from), i;
  json_t **items;
  int rc = 0;

  if (n == 0)
    return 0;
  items = calloc(n, sizeof(*items));
  if (items == NULL)
    return -1;
  for (i = 0; i < n; i++)
    items[i] = json_array_get(from, i);
  qsort(items, n, sizeof(*items), by_text);
  for (i = 0; i < n && rc == 0; i++) {
    if (!migration_has_proxy(to, json_string_value(items[i])))
      rc = json_array_append(to, items[i]);
  }
  free(items);
  return rc;
}

static const char *
str(const json_t *o, const char *key)
{
  const char *s = json_string_value(json_object_get(o, key));
  return s != NULL && s[0] != '\0' ? s : NULL;
}

int
migration_desired(const json_t *mailbox, const struct migration_target *t,
                  json_t *desired, char *err, size_t errlen)
{
  const char *guid = str(mailbox, "exchangeGuid");
  const char *dn = str(mailbox, "legacyDN");
  const char *alias = str(desired, "Alias");
  const char *primary = str(desired, "PrimarySmtpAddress");
  const char *upn = str(desired, "MicrosoftOnlineServicesID");
  const char *external;
  json_t *proxies = json_array(), *extra = json_array(), *x500 = json_array();
  json_t *v;
  char *initial = NULL;
  size_t i;
  int rc = -1;

  if (str(mailbox, "bad") != NULL) {
    text_set_err(err, errlen, "its source mailbox is refused: %s",
                 str(mailbox, "bad"));
    goto out;
  }
  if (proxies == NULL || extra == NULL || x500 == NULL)
    goto oom;
  if (guid == NULL || dn == NULL || str(mailbox, "primary") == NULL) {
    text_set_err(err, errlen, "its source mailbox record is incomplete");
    goto out;
  }
  if (alias == NULL)
    alias = str(mailbox, "alias");
  if (alias == NULL || strchr(alias, '@') != NULL) {
    text_set_err(err, errlen,
                 "it has no alias to make its address in the "
                 "target's initial domain from");
    goto out;
  }
  if (t->initial == NULL || t->initial[0] == '\0') {
    text_set_err(err, errlen, "the target's initial domain is not known");
    goto out;
  }
  if (asprintf(&initial, "%s@%s", alias, t->initial) < 0) {
    initial = NULL;
    goto oom;
  }
  if (primary != NULL && strncasecmp(primary, "smtp:", 5) == 0)
    primary += 5;
  if (primary != NULL && !migration_accepted(t, primary)) {
    text_set_err(err, errlen,
                 "its PrimarySmtpAddress %s is not in an accepted domain of "
                 "the target (a move needs one)",
                 primary);
    goto out;
  }
  if (upn == NULL)
    json_object_del(desired, "MicrosoftOnlineServicesID"); /* none mapped */
  else if (strchr(upn, ':') != NULL || !migration_accepted(t, upn)) {
    text_set_err(err, errlen,
                 "its MicrosoftOnlineServicesID %s is not in an accepted "
                 "domain of the target",
                 upn);
    goto out;
  }
  if (t->external == CONFIG_MIGRATION_EXTERNAL_INITIAL) {
    external = str(mailbox, "initial");
    if (external == NULL) {
      text_set_err(err, errlen,
                   "its source mailbox has no address in an "
                   ".onmicrosoft.com domain "
                   "(migration_external = initial)");
      goto out;
    }
  } else {
    external = str(mailbox, "primary");
  }
  if (add_proxy(proxies, "SMTP:", primary != NULL ? primary : initial) != 0 ||
      add_proxy(proxies, "smtp:", initial) != 0)
    goto too_long;
  json_array_foreach(json_object_get(desired, "EmailAddresses"), i, v)
  {
    const char *a = json_string_value(v);
    if (a == NULL)
      continue;
    if (strncasecmp(a, "smtp:", 5) == 0)
      a += 5;
    if (strchr(a, ':') != NULL || !migration_accepted(t, a))
      continue; /* another type, or a domain the target does not own */
    if (add_proxy(extra, "smtp:", a) != 0)
      goto too_long;
  }
  json_array_foreach(json_object_get(mailbox, "x500"), i, v)
  {
    const char *a = json_string_value(v);
    if (a != NULL && strncasecmp(a, "x500:", 5) == 0 &&
        add_proxy(x500, "X500:", a + 5) != 0)
      goto too_long;
  }
  if (add_sorted(proxies, extra) != 0 ||
      add_proxy(proxies, "X500:", dn) != 0 || add_sorted(proxies, x500) != 0)
    goto too_long;
  if (json_object_set_new(desired, "ExchangeGuid", json_string(guid)) != 0 ||
      json_object_set_new(desired, "ExternalEmailAddress",
                          json_string(external)) != 0 ||
      json_object_set(desired, "ProxyAddresses", proxies) != 0 ||
      (str(mailbox, "archiveGuid") != NULL &&
       json_object_set_new(desired, "ArchiveGuid",
                           json_string(str(mailbox, "archiveGuid"))) != 0))
    goto oom;
  json_object_del(desired, "EmailAddresses");
  json_object_del(desired, "PrimarySmtpAddress");
  rc = 0;
  goto out;

too_long:
  text_set_err(err, errlen, "an address of it is longer than %d bytes",
               EXO_PROXY_MAX);
  goto out;
oom:
  text_set_err(err, errlen, "out of memory");
out:
  free(initial);
  json_decref(proxies);
  json_decref(extra);
  json_decref(x500);
  return rc;
}

int
migration_target_refused(const struct exo_user_state *st, char *why,
                         size_t len)
{
  if (st->dir_synced) {
    text_set_err(why, len,
                 "it is synchronised from on-premises (IsDirSynced): set "
                 "msExchMailboxGuid and the X500 addresses on the "
                 "on-premises object instead; galbridge does not change it");
    return 1;
  }
  if (strcasecmp(st->type, "MailUser") != 0) {
    text_set_err(why, len,
                 strstr(st->type, "Mailbox") != NULL
                     ? "it already has a mailbox (%s): a move needs a "
                       "MailUser; it is left as it is"
                     : "it is a %s, not a MailUser; it is left as it is",
                 st->type);
    return 1;
  }
  if (st->licensed) {
    text_set_err(why, len,
                 "it is licensed (SKUAssigned): a licence before the "
                 "ExchangeGuid makes Exchange provision a new mailbox; "
                 "remove its licences, let galbridge stamp it, and license "
                 "it after the move");
    return 1;
  }
  if (st->previous[0] != '\0') {
    text_set_err(why, len,
                 "it had a mailbox before (PreviousRecipientTypeDetails %s): "
                 "if that mailbox's content may go, run Set-User <its id> "
                 "-PermanentlyClearPreviousMailboxInfo (irreversible; "
                 "galbridge never runs it)",
                 st->previous);
    return 1;
  }
  return 0;
}

const char *const migration_stamp_keys[MIGRATION_STAMP_KEYS] = {
    "ExchangeGuid", "ArchiveGuid", "ProxyAddresses"};

int
migration_stamps(const json_t *attrs)
{
  for (size_t i = 0; i < MIGRATION_STAMP_KEYS; i++) {
    if (json_object_get(attrs, migration_stamp_keys[i]) != NULL)
      return 1;
  }
  return 0;
}

/* Whether every proxy of `a` is in `b` with the same primary mark. */
static int
proxies_within(const json_t *a, const json_t *b)
{
  const json_t *x;
  size_t i;

  json_array_foreach((json_t *)a, i, x)
  {
    const char *p = json_string_value(x), *v, *w;
    int type, found = 0;
    const json_t *y;
    size_t j;

    if (p == NULL)
      continue;
    type = proxy_split(p, &v);
    json_array_foreach((json_t *)b, j, y)
    {
      const char *q = json_string_value(y);
      if (q != NULL && proxy_split(q, &w) == type && strcasecmp(v, w) == 0 &&
          (type != 1 ||
           (strncmp(p, "SMTP:", 5) == 0) == (strncmp(q, "SMTP:", 5) == 0)))
        found = 1;
    }
    if (!found)
      return 0;
  }
  return 1;
}

static int
guid_differs(const json_t *applied, const json_t *seen, const char *key)
{
  const char *a = json_string_value(json_object_get(applied, key));
  const char *b = json_string_value(json_object_get(seen, key));

  if (a == NULL)
    return 0;
  return b == NULL || strcasecmp(a, b) != 0;
}

int
migration_stamps_differ(const json_t *applied, const json_t *seen)
{
  const json_t *a = json_object_get(applied, "ProxyAddresses");
  const json_t *b = json_object_get(seen, "ProxyAddresses");

  if (guid_differs(applied, seen, "ExchangeGuid") ||
      guid_differs(applied, seen, "ArchiveGuid"))
    return 1;
  if (a == NULL)
    return 0;
  return !proxies_within(a, b) || !proxies_within(b, a);
}
