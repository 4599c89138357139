/*
 * migcheck_int — what migcheck.c and migcheck_run.c share inside the
 * module (see include/migcheck.h).
 */
#ifndef GALBRIDGE_MIGCHECK_INT_H
#define GALBRIDGE_MIGCHECK_INT_H

#include <jansson.h>

/* o's string `key` (borrowed), or NULL when absent or empty. */
const char *migcheck_str(const json_t *o, const char *key);

#endif
