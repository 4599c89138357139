/*
 * exo — the Exchange Online admin API for one tenant: cmdlets through
 * POST {exchange}/adminapi/beta/{tenant id}/InvokeCommand, as the
 * ExchangeOnlineManagement module does (undocumented by Microsoft; see
 * MICROSOFT.md "Exchange Online").
 *
 * Each call attaches a token for the cloud's Exchange resource
 * (https://outlook.office365.com/.default), the X-AnchorMailbox,
 * X-ResponseFormat and page-size headers, follows @odata.nextLink (POSTing
 * the same body there), and decodes errors from details[0].message
 * ("id|exception type|text"). Requests go through http's gate
 * "<tenant id>/exchange" (429 and Retry-After honoured), at most
 * `max_in_flight` at once per tenant (default 4); the rest wait in order.
 * A token refusal (401) gets a fresh token and another try, a few times,
 * then goes back as transient: never a permanent failure.
 *
 * Only this module (with graph and auth) knows Microsoft's shapes.
 */
#ifndef GALBRIDGE_EXO_H
#define GALBRIDGE_EXO_H

#include <jansson.h>
#include <time.h>
#include <stddef.h>
#include <uv.h>

#include "auth.h"
#include "config.h"
#include "http.h"

struct exo;

enum exo_result {
  EXO_OK = 0,
  EXO_ERR_CMDLET = -1,    /* the cmdlet failed: see error_id, exception */
  EXO_ERR_HTTP = -2,      /* another HTTP error status */
  EXO_ERR_NETWORK = -3,   /* no answer (after http's retries) */
  EXO_ERR_AUTH = -4,      /* no token could be had */
  EXO_ERR_PROTOCOL = -5,  /* the answer is not the expected shape */
  EXO_ERR_CANCELLED = -6, /* exo_free() while waiting */
};

struct exo_response {
  int result;            /* enum exo_result */
  long status;           /* HTTP status, 0 if none */
  const char *error_id;  /* "Ex6F9304" or "" */
  const char *exception; /* "...ManagementObjectNotFoundException" or "" */
  const char *errmsg;    /* one line for the log and the op ("" if ok) */
  json_t *value;         /* borrowed: every page's "value" items, or NULL */
  int auth_permanent;    /* EXO_ERR_AUTH: the credentials were refused */
  int transient;         /* EXO_ERR_HTTP, EXO_ERR_CMDLET: worth retrying
                            later (exo_error_class not permanent: a token
                            refusal, 429, 5xx, Exchange's "maximum number
                            of concurrent requests per tenant" answer) */
};

typedef void (*exo_done_fn)(void *ctx, const struct exo_response *resp);

/* A client for `tenant` (borrowed, as are http and auth). max_in_flight
 * <= 0 means 4. NULL on allocation failure. */
struct exo *exo_new(uv_loop_t *loop, struct http *http, struct auth *auth,
                    const struct config_tenant *tenant, int max_in_flight);
/* Free it (NULL is a no-op; a second call does nothing); waiting and
 * in-flight calls get EXO_ERR_CANCELLED before it returns, and late http
 * or auth answers are dropped. May be called from a done callback. The
 * struct is released in a close callback: call this while the loop runs,
 * or run the loop afterwards until uv_run() returns 0, as for
 * auth_free(). */
void exo_free(struct exo *exo);

/* Run `cmdlet` with `parameters` (a JSON object, borrowed; may be NULL).
 * The callback is always called later from the loop. Returns 0, or -1
 * (bad arguments, allocation) when the callback will never be called. */
int exo_invoke(struct exo *exo, const char *cmdlet, const json_t *parameters,
               exo_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* The same with `select` (NULL: none; else property names and commas
 * only, or -1) sent as the query's $select: each result then carries
 * those properties (public clients of the admin API do this; Microsoft
 * documents no $select for it). Pages after the first are fetched from
 * the nextLink as given. */
int exo_invoke_select(struct exo *exo, const char *cmdlet,
                      const json_t *parameters, const char *select,
                      exo_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* --- pure helpers, exposed for unit tests --- */

/* What an Exchange error answer means (http.h's classes), as graph's
 * graph_error_class() does for Graph: by status (a 401 is a token
 * refusal), except that Exchange's plain-text "maximum number of
 * concurrent requests per tenant" (found in `text`, the decoded error
 * text or the body; may be NULL) is throttling whatever the status. */
enum http_class exo_error_class(long status, const char *text);

/* The request body {"CmdletInput":{"CmdletName":..,"Parameters":{..}}}:
 * new reference, or NULL. */
json_t *exo_request_body(const char *cmdlet, const json_t *parameters);

/* Decode an error body. Fills id / exception / text (each NUL-terminated,
 * "" when absent) from error.details[0].message "id|type|text", falling
 * back to error.message, then to the raw text (first line, bounded).
 * Every field is one line (control characters become spaces), cut at a
 * UTF-8 character boundary; a buffer of length 0 is left alone. Returns 0
 * when details[0].message had the "id|type|text" form (id and type
 * non-empty, without spaces or control characters), -1 otherwise (text
 * may still be filled). */
int exo_decode_error(const char *body, size_t len, char *id, size_t idlen,
                     char *exception, size_t exlen, char *text,
                     size_t textlen);

/* A recipient Name (unique, at most 64 characters) for a person: the
 * display name, cut to leave room, plus " (" + the first 8 hex digits of
 * the source object id + ")" — deterministic, so a replay asks for the
 * same Name, and two people of the same name get different ones, while
 * DisplayName stays as it is. Characters are counted as UTF-16 code units
 * (as .NET does: a character beyond U+FFFF counts 2), a UTF-8 sequence is
 * never split, control characters become spaces, invalid UTF-8 bytes
 * '?', surrounding spaces are trimmed; the hex digits are lower-cased. An
 * empty display name gives the 8 hex digits alone. New string, or NULL
 * (allocation, or fewer than 8 hex digits in source_id). */
char *exo_unique_name(const char *display_name, const char *source_id);

/* A recipient's object id in a cmdlet's answer: ExternalDirectoryObjectId
 * (the directory object), else its Exchange Guid; borrowed, or NULL. */
const char *exo_recipient_id(const json_t *recipient);

/* When a recipient was made (WhenCreatedUTC, else WhenCreated, as ISO
 * 8601 UTC), or 0 when it does not say. */
time_t exo_recipient_created(const json_t *recipient);

/* A recipient as Graph would show a user (what the store keeps of the
 * target's objects): displayName, mail (its primary SMTP address),
 * proxyAddresses (EmailAddresses), and CustomAttribute1..15 as
 * onPremisesExtensionAttributes.extensionAttribute1..15 (empty ones left
 * out). New reference, or NULL on allocation failure. */
json_t *exo_recipient_attrs(const json_t *recipient);

/* {"@odata.type":"#Exchange.GenericHashTable","Add":add,"Remove":remove}
 * for multi-valued parameters (either may be NULL). New reference. */
json_t *exo_multivalue(const json_t *add, const json_t *remove);

/* The longest mail address exo_smtp_addresses() takes, in bytes: the
 * longest value galbridge takes from a source (graph.h's
 * GRAPH_VALUE_MAX), so only a mapping that builds a longer one meets it. */
#define EXO_ADDRESS_MAX 16384

/* Exchange's secondary proxy address "smtp:<address>" for each mail
 * address among `addresses` (borrowed; strings, any "smtp:" prefix
 * dropped first; non-strings, values without '@' and other proxy types
 * such as X500: or SIP: are skipped). Each is sized from its address,
 * never cut. Returns 0 and *out (a new reference), or -1 with *out NULL
 * and *why a static reason: an address longer than EXO_ADDRESS_MAX, or
 * out of memory. */
int exo_smtp_addresses(const json_t *addresses, json_t **out, const char **why)
    __attribute__((warn_unused_result));

/* --- mailboxes, users and domains, for migration links --- */

/* The longest proxy address (X500: included) taken from a source, and
 * how many X500 addresses one mailbox may carry into a target. */
#define EXO_PROXY_MAX 2048
#define EXO_X500_MAX 64

/* What Get-Mailbox is asked for (its $select), for exo_mailbox_record. */
#define EXO_MAILBOX_SELECT                                                    \
  "ExternalDirectoryObjectId,Guid,Alias,PrimarySmtpAddress,EmailAddresses,"   \
  "ExchangeGuid,ArchiveGuid,ArchiveStatus,LegacyExchangeDN,"                  \
  "LitigationHoldEnabled,InPlaceHolds,DelayHoldApplied,"                      \
  "DelayReleaseHoldApplied,ComplianceTagHoldApplied,PersistedCapabilities,"   \
  "RecipientTypeDetails,WhenChangedUTC"

/* A source mailbox (one Get-Mailbox result) in galbridge's own shape, what
 * the store keeps and the migration module reads: {"id" (its directory
 * object id), "exchangeGuid" (lower case), "archiveGuid" (only when its
 * archive is Active), "legacyDN", "x500" (its X500 addresses, each
 * "X500:" + the value as written), "primary", "alias", "initial" (its
 * address in a *.onmicrosoft.com domain, when it has one), "holds" (names
 * of the holds on it), "licensed" (the Cross Tenant User Data Migration
 * capability ExchangeT2TMbxMove), "changed" (WhenChangedUTC as given)}.
 * Values are checked as text that will be written into another tenant
 * (valid UTF-8, no control character, bounded: EXO_PROXY_MAX,
 * EXO_X500_MAX); a mailbox with a value that fails, no ExchangeGuid, or no
 * /o= LegacyExchangeDN gives -1 and a reason in err (that person fails
 * alone). Returns 0 and *out (new reference). */
int exo_mailbox_record(const json_t *mailbox, json_t **out, char *err,
                       size_t errlen) __attribute__((warn_unused_result));

/* What Get-MailUser is asked for to see a migration copy's stamps. */
#define EXO_MAILUSER_STAMPS_SELECT                                            \
  "ExternalDirectoryObjectId,Guid,ExchangeGuid,ArchiveGuid,EmailAddresses"

/* A mail user's stamps as the target shows them, in the shape the
 * migration module gives them (migration.h): {"ExchangeGuid" (lower case,
 * absent when zero), "ArchiveGuid" (the same), "ProxyAddresses" (its
 * EmailAddresses)}. Returns 0 and *out (new reference), or -1 on
 * allocation failure. */
int exo_mailuser_stamps(const json_t *recipient, json_t **out)
    __attribute__((warn_unused_result));

/* What a target object is, from Get-User: its RecipientTypeDetails, a
 * former mailbox (PreviousRecipientTypeDetails other than None; "" when
 * none), a licence (SKUAssigned), synchronised from on-premises
 * (IsDirSynced). */
struct exo_user_state {
  char type[64];
  char previous[64];
  int licensed;
  int dir_synced;
};

/* Fill *out from one Get-User result; -1 when it has no readable
 * RecipientTypeDetails. */
int exo_user_state(const json_t *user, struct exo_user_state *out);

/* Get-AcceptedDomain's answer: *domains (new array of lower-case domain
 * names) and *initial (new string: the one marked InitialDomain). -1
 * (nothing allocated) when none is marked initial or on allocation
 * failure. */
int exo_accepted_domains(const json_t *value, json_t **domains,
                         char **initial);

/* --- migration set-up, for migration-check (read only) --- */

/* What Get-MailUser, Get-User and Get-DistributionGroupMember are asked
 * for (their $select) by migration-check. */
#define EXO_MAILUSER_SELECT                                                   \
  "ExternalDirectoryObjectId,Guid,PrimarySmtpAddress,EmailAddresses,"         \
  "ExchangeGuid,ArchiveGuid,PersistedCapabilities,RecipientTypeDetails,"      \
  "IsDirSynced"
#define EXO_USER_SELECT                                                       \
  "ExternalDirectoryObjectId,Guid,RecipientTypeDetails,"                      \
  "PreviousRecipientTypeDetails,SKUAssigned,IsDirSynced"
#define EXO_MEMBER_SELECT "ExternalDirectoryObjectId,Guid,PrimarySmtpAddress"

/* Get-OrganizationConfig's answer: 1 when the organization is dehydrated
 * (IsDehydrated true: Enable-OrganizationCustomization is needed first),
 * 0 when not, -1 when the answer does not say. */
int exo_org_dehydrated(const json_t *value);

/* Get-OrganizationRelationship's answer in galbridge's own shape: an
 * array of {"name", "domains" (DomainNames, lower case), "enabled",
 * "moveEnabled" (MailboxMoveEnabled), "capabilities" (MailboxMoveCapability
 * read as a set: "Inbound, RemoteOutbound" or a list gives each name once,
 * in Exchange's spelling and order: Inbound, Outbound, RemoteInbound,
 * RemoteOutbound; "None" gives none; a name Exchange does not have is
 * kept as written), "appId" (OAuthApplicationId, lower case; absent when
 * none), "scopes" (MailboxMovePublishedScopes)}. Property names are
 * matched without case (public scripts spell OAuthApplicationId both
 * ways). A relationship without a Name is left out. Returns 0 and *out
 * (new reference), or -1 (out of memory). */
int exo_relationships(const json_t *value, json_t **out)
    __attribute__((warn_unused_result));

/* Get-MigrationEndpoint's answer in galbridge's own shape: an array of
 * {"name" (Identity, else Name), "remoteServer", "remoteTenant", "type"
 * (EndpointType), "appId" (ApplicationId, lower case)}; empty values are
 * left out. Returns 0 and *out (new reference), or -1 (out of memory). */
int exo_endpoints(const json_t *value, json_t **out)
    __attribute__((warn_unused_result));

/* Test-MigrationServerAvailability's answer: 0 when its Result is
 * Success, 1 when it is not (its ErrorDetail, the cause, else its
 * Message, in detail, one line), -1 when the answer has no Result. */
int exo_availability(const json_t *value, char *detail, size_t len);

/* A target MailUser (one Get-MailUser result) in galbridge's own shape:
 * {"id", "type" (RecipientTypeDetails), "primary" (PrimarySmtpAddress),
 * "exchangeGuid", "archiveGuid" (lower case; absent when none or the
 * zero GUID), "smtp" (its SMTP addresses, primary included, without the
 * prefix), "x500" (its X500 addresses, each "X500:" + the value as
 * written), "licensed" (PersistedCapabilities has ExchangeT2TMbxMove),
 * "dirSynced" (IsDirSynced)}. Returns 0 and *out (new reference), or -1
 * when it has no id, or out of memory. */
int exo_mailuser_record(const json_t *mailuser, json_t **out)
    __attribute__((warn_unused_result));

/* Get-DistributionGroupMember's answer as a set: a JSON object whose keys
 * are each member's directory object id and primary SMTP address, both
 * lower case (values true). Returns 0 and *out (new reference), or -1
 * (out of memory). */
int exo_group_members(const json_t *value, json_t **out)
    __attribute__((warn_unused_result));

#endif
