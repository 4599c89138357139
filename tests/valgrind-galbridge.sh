#!/bin/sh
# galbridge under valgrind, for `make valgrind`: any memory error or leak
# makes the command exit 99, which the tests see as a failure.
exec valgrind -q --error-exitcode=99 --leak-check=full \
	--errors-for-leak-kinds=definite,indirect \
	--show-leak-kinds=definite,indirect \
	"${GALBRIDGE_REAL:?set GALBRIDGE_REAL to the galbridge binary}" "$@"
