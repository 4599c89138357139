/*
 * version — galbridge's version, defined here and nowhere else: `galbridge
 * -V`, the start-up log line and the HTTP User-Agent read it.
 */
#ifndef GALBRIDGE_VERSION_H
#define GALBRIDGE_VERSION_H

#define GALBRIDGE_VERSION "0.1.0"

#endif
