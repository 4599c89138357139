/*
 * version — galbridge's version, defined here and nowhere else: the
 * command line (`galbridge --version`, `check-config`) and the HTTP
 * User-Agent read it.
 */
#ifndef GALBRIDGE_VERSION_H
#define GALBRIDGE_VERSION_H

#define GALBRIDGE_VERSION "0.1.0"

#endif
