/*
 * anchor — the value galbridge stamps on every object it makes, and the
 * proof it may carry.
 *
 * An anchor reads "galbridge:<source tenant id>:<source object id>" (lower
 * case, DESIGN.md): it names the source object a copy stands for, lets a
 * lost state be rebuilt from the target and keeps a mesh from syncing
 * copies back. Anyone who can write an extension attribute can write that
 * too, so by itself it proves nothing.
 *
 * With a key ([galbridge] anchor_key_file) the stamp goes on with
 * ":1.<proof>", the proof being the first 16 bytes of HMAC-SHA-256 under
 * the key of the target tenant id, the object kind, the plain anchor and
 * the id of the target object it is written on, in base64url. Only a
 * holder of the key can make one, and it names the object it sits on: an
 * anchor copied onto another object proves nothing. The trade-off: the key
 * is a credential to back up with the config (without it a lost state
 * cannot be rebuilt), and whoever holds it can make galbridge take an
 * object for its own.
 *
 * Pure functions but anchor_key_load(); the key never leaves its struct
 * and is wiped when freed.
 */
#ifndef GALBRIDGE_ANCHOR_H
#define GALBRIDGE_ANCHOR_H

#include <stddef.h>

#define ANCHOR_PREFIX "galbridge:"
/* The longest plain anchor accepted: two ids of up to 128 bytes. */
#define ANCHOR_PLAIN_MAX (sizeof(ANCHOR_PREFIX) + 128 + 1 + 128)

struct anchor_key;

/* Read the key from `path` (a secret file: regular, closed to group and
 * others, 16 to 4096 bytes once trailing blanks are cut). Returns 0 and
 * *out, or -1 with a message naming the file (never its content). */
int anchor_key_load(const char *path, struct anchor_key **out, char *err,
                    size_t errlen) __attribute__((warn_unused_result));
void anchor_key_free(struct anchor_key *key); /* NULL is fine */

/* "galbridge:<source tenant>:<source id>", lower case. New string, NULL
 * on allocation failure. */
char *anchor_plain(const char *source_tenant, const char *source_id);

/* If `value` is a galbridge anchor ("galbridge:" in any case, then two
 * non-empty fields without ':', then optionally ':' and a proof), its
 * plain part in lower case (new string) and, in *proof (may be NULL), a
 * pointer into value after the third ':' or NULL when it has none.
 * Returns NULL when value is not an anchor (or on allocation failure). */
char *anchor_parse(const char *value, const char **proof);

/* The value to stamp on target object `target_id` for `plain`: `plain`
 * itself without a key, else plain + ":1." + proof. `kind` is the link's
 * object kind ("guest", "mailcontact", "mailuser"). New string. */
char *anchor_stamp(const struct anchor_key *key, const char *target_tenant,
                   const char *kind, const char *plain, const char *target_id);

/* Whether `value`, found on target object `target_id`, carries the proof
 * `key` makes for it: 1 when it does, 0 otherwise (no key, no proof, a
 * proof for another object, tenant or kind, not an anchor). Compared in
 * constant time. */
int anchor_proven(const struct anchor_key *key, const char *target_tenant,
                  const char *kind, const char *value, const char *target_id);

#endif
