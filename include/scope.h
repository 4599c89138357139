/*
 * scope — which source users a link takes.
 *
 * The default scope (DESIGN.md) is the source tenant's own people: userType
 * Member, accountEnabled true, a mail value, not a B2B user of another
 * tenant (creationType Invitation), and no "galbridge:" anchor in any
 * onPremisesExtensionAttributes.extensionAttributeN — so two links in
 * opposite directions never sync each other's copies.
 *
 * scope_filter narrows it with an OData-like expression over the source
 * attributes:
 *
 *   department eq 'Sales' and not (jobTitle eq 'Intern')
 *   startsWith(mail, 'a') or city ne null
 *   onPremisesExtensionAttributes/extensionAttribute1 eq 'x'
 *
 * Operators eq, ne, in, startsWith(attr, 'text'), endsWith(attr, 'text'),
 * contains(attr, 'text'), and, or, not, parentheses; literals 'text' (a quote
 * doubled inside: 'O''Brien'), true, false, null, integers. String comparison
 * ignores case, as Entra ID's does (ASCII letters only: 'É' and 'é' differ).
 * An attribute that holds an array matches eq when any element does. Keywords
 * are case-insensitive.
 *
 * Attribute names match JSON keys ignoring case, an exact key first. `eq
 * null` holds when the attribute is absent, null or an empty array; `ne` is
 * always the negation of `eq` (so `city ne 'x'` holds when city is absent).
 * true/false also equal the strings "true"/"false" (any case) and the
 * reverse; integers equal JSON integers only; startsWith/endsWith hold only
 * for strings (or an array with such a string). A path a/b through an array
 * of objects matches when any element does. `attr in ('a', 'b', 3)` (OData's
 * in) is attr eq any of its literals: on an array, any element equal to any
 * literal. contains(attr, 'text') holds when the text is found in the
 * string (or in any string of an array), ASCII case ignored as above;
 * '' is found in every string.
 */
#ifndef GALBRIDGE_SCOPE_H
#define GALBRIDGE_SCOPE_H

#include <jansson.h>
#include <stddef.h>

struct scope_filter;

/* Parse `text` (at most 8192 bytes of UTF-8, nesting of '(' and 'not' at
 * most 64 deep). Returns 0 and a new filter, or -1, *out NULL and err
 * describing the problem and where (e.g. "column 17: expected 'eq', 'ne'
 * or 'in' after 'department'"; columns count characters from 1). A NULL, empty
 * or blank text is an error ("empty filter"). err may be NULL or short: the
 * message is truncated, always NUL-terminated when errlen > 0. */
int scope_filter_parse(const char *text, struct scope_filter **out, char *err,
                       size_t errlen) __attribute__((warn_unused_result));
/* NULL is a no-op. */
void scope_filter_free(struct scope_filter *filter);

/* 1 when `attrs` (a JSON object of source attributes, borrowed) matches,
 * 0 otherwise. A NULL filter matches everything; an `attrs` that is not an
 * object is treated as an object with no attributes. */
int scope_filter_match(const struct scope_filter *filter, const json_t *attrs);

/* Source attributes the filter reads (top-level names, in order of first
 * use, deduplicated ignoring case): new JSON array, empty for a NULL
 * filter, NULL only when out of memory. */
json_t *scope_filter_sources(const struct scope_filter *filter);

/* The reason the default scope gives for a galbridge copy. */
#define SCOPE_WHY_COPY "galbridge copy"
/* Each comparison and function of the filter, in the order written, with
 * what it gives for `attrs` (borrowed) on its own, before any not, and or
 * or around it: a new JSON array of {"clause": "department eq 'Sales'",
 * "result": true}; empty for a NULL filter; NULL only when out of memory.
 * Strings are shown as the filter would write them (a quote doubled). */
json_t *scope_filter_clauses(const struct scope_filter *filter,
                             const json_t *attrs);

/* The default scope described above (`attrs` borrowed; not an object means
 * not in scope). Returns 1 when it matches (and sets *why, if given, to
 * NULL); else 0, and *why, if given, names the first reason, a static
 * string: "userType is not Member", "disabled", "no mail", "invited guest",
 * SCOPE_WHY_COPY. */
int scope_default_match(const json_t *attrs, const char **why);

/* The default scope without its last rule (a galbridge copy is left
 * out): for a copy that is a person now (planner_default_scope). */
int scope_person_match(const json_t *attrs, const char **why);

/* The default scope of a groupcontact link, for a group (`attrs` as read
 * with GRAPH_GROUP_SELECT, borrowed): mailEnabled true and a mail
 * address (distribution lists, mail-enabled security groups and
 * Microsoft 365 groups; a security group without mail is not). None of
 * the person rules apply. Returns 1 (*why NULL) or 0 and *why, if
 * given: "not mail-enabled", "no mail" (static strings). */
int scope_group_match(const json_t *attrs, const char **why);

#endif
