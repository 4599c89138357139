/*
 * mapping — attribute mappings: `targetAttribute = expression` lines,
 * parsed once when the config is loaded, evaluated per source object.
 *
 * An expression is a source attribute name (`mail`, or a path into a
 * complex property: `onPremisesExtensionAttributes/extensionAttribute3`),
 * a quoted constant ("text" or 'text'), an integer constant, the keyword
 * `null`, or a function call:
 *
 *   Join(sep, a, b, ...)     non-empty values joined with sep
 *   Append(a, b, ...)        concatenation; null when a is null
 *   Coalesce(a, b, ...)      the first non-null, non-empty value
 *   ToLower(a)  ToUpper(a)  Trim(a)
 *   Replace(a, old, new)     every occurrence of old replaced
 *   Left(a, n)               the first n characters (UTF-8 aware)
 *   IIF(cond, then, else)    cond: a == b, a != b, or a value (true when
 *                            non-null, non-empty and not false)
 *   Switch(a, default, key1, value1, key2, value2, ...)
 *   IsPresent(a)             "true" / "false" — for IIF
 *
 * Function names and the keywords null, true and false are
 * case-insensitive; attribute names are matched against the source's keys
 * exactly first, then ignoring case. A constant's quote is doubled to
 * stand for itself ('O''Brien'); backslash is an ordinary character. A
 * number may only be Left()'s count; a comparison (== or !=, case-
 * sensitive, null == null) only IIF()'s condition.
 *
 * Values are JSON: strings, arrays of strings (businessPhones, otherMails),
 * booleans or null. An empty string, and an array with no non-empty
 * string, count as null. String functions applied to an array act on its
 * first non-empty element, applied to a boolean on "true" / "false"; Join
 * takes every element of an array. ToLower/ToUpper fold ASCII, Latin-1,
 * Latin Extended-A, basic Greek and Cyrillic letters only; Trim removes
 * Unicode white space; Left counts code points (never splitting one).
 * IsPresent gives a boolean; IIF's condition is false when null, false or
 * the text "false" (any case). Switch compares like ==.
 *
 * A link's mapping is the built-in default for its object kind with the
 * lines of its [mapping NAME] section laid over it: a line replaces the
 * default for that target attribute or adds one; `target = null` drops a
 * default attribute — unless the attribute is required (guests: mail, the
 * address the guest is invited with; mail contacts and mail users:
 * ExternalEmailAddress), which is a config error saying why. The target
 * attributes each kind allows (Graph user properties for guests, Exchange
 * parameters for the others) and the defaults are tables in mapping.c.
 *
 * A compiled mapping is immutable: evaluations may run concurrently.
 */
#ifndef GALBRIDGE_MAPPING_H
#define GALBRIDGE_MAPPING_H

#include <jansson.h>
#include <stddef.h>

#include "config.h"

struct mapping;

/* Compile the mapping of a link of kind `object` from `section` (NULL: the
 * built-in defaults only). `file` is the config file's path, for errors of
 * the form "file:line: message" (the line of the offending mapping entry;
 * parse errors also give the column, counted in characters from 1, within
 * the expression), e.g. "galbridge.conf:14: column 9: Left() takes 2
 * arguments, got 1" or "galbridge.conf:9: unknown target attribute
 * 'jobtitel' for guest links; did you mean 'jobTitle'?". Expressions are
 * at most 4096 bytes and nest functions at most 32 deep. Target names are
 * matched ignoring case and kept in their canonical spelling. `err` may be
 * NULL; the message is cut to errlen. Returns 0 and a new mapping, or -1
 * with *out NULL and err set. */
int mapping_compile(const struct config_mapping *section,
                    enum config_object object, const char *file,
                    struct mapping **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void mapping_free(struct mapping *mapping);

/* Number of target attributes and the name of the i-th, sorted by strcmp
 * (a static string; NULL when i is out of range or mapping is NULL). */
size_t mapping_count(const struct mapping *mapping);
const char *mapping_target(const struct mapping *mapping, size_t i);

/* Source attributes the mapping reads (top-level names of attribute
 * references, in the config's spelling), for $select: each once (ignoring
 * case), sorted ignoring case. A new JSON array of strings (empty for a
 * NULL mapping); NULL only when out of memory. */
json_t *mapping_sources(const struct mapping *mapping);

/* Evaluate against `source` (a JSON object of source attributes,
 * borrowed). Returns a new JSON object with one key per target attribute
 * whose value is not null (a null result means "no value": the attribute
 * is cleared on the target). Empty strings count as null. Array targets
 * get arrays (a string becomes a one-element array; empty elements are
 * dropped); other targets get strings (an array gives its first element, a
 * boolean "true" / "false"). Numbers in the source read as their decimal
 * text. Returns NULL with err set ("cannot map 'displayName': ...") only
 * on allocation failure, a value that cannot be a target value (an object,
 * an array of non-strings), or a value longer than 65536 bytes (built or
 * passed through); NULL too for a NULL mapping or a non-object source. */
json_t *mapping_eval(const struct mapping *mapping, const json_t *source,
                     char *err, size_t errlen);

/* SelectUniqueValue()'s question: whether `value` of target attribute
 * `target` (its canonical spelling) is held in the target directory by an
 * object other than this person's own copy. Returns 1 (taken), 0 (free),
 * MAPPING_TAKEN_OWN (held by this person's copy and no other object: the
 * value the copy was given, which is kept), or -1 when it cannot tell
 * (the evaluation then fails). */
#define MAPPING_TAKEN_OWN 2
typedef int (*mapping_taken_fn)(void *arg, const char *target,
                                const char *value);

/* mapping_eval() with SelectUniqueValue() asking `taken` (NULL: every
 * candidate is free, so the first one not null is taken — what
 * mapping_eval() does). When every candidate is taken the evaluation
 * fails ("cannot map 'mail': SelectUniqueValue(): every candidate (2) is
 * taken in the target by another object") and *exhausted (may be NULL) is
 * set to 1; otherwise it is 0. If it returns NULL, `taken` may have been
 * called; it is never called after it returns. */
json_t *mapping_eval_taken(const struct mapping *mapping, const json_t *source,
                           mapping_taken_fn taken, void *arg, int *exhausted,
                           char *err, size_t errlen);

#endif
