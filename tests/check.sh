#!/bin/sh
# tests/check.sh — `make check`: run every suite, even after one fails,
# then print one table (suite, result, seconds) and exit 1 if any failed.
#
#   tests/check.sh NAME=COMMAND ...
#
# Each COMMAND runs with sh -c, in order, its output as it comes. A suite
# that fails does not stop the next: a lint or unit failure must not hide
# what the integration tests would have said. The exit status is 0 only
# when every suite exited 0; the table names each failed suite and its
# exit status. (`make -k` alone would go on too, but a failure deep in a
# sub-make would not end up as one summary and one status.)
set -u
[ $# -gt 0 ] || { echo "usage: tests/check.sh NAME=COMMAND ..." >&2; exit 2; }
table=""
failed=""
for suite in "$@"; do
  case $suite in
    *=*) ;;
    *) echo "check: '$suite' is not NAME=COMMAND" >&2; exit 2 ;;
  esac
  name=${suite%%=*}
  cmd=${suite#*=}
  echo "== check: $name: $cmd"
  start=$(date +%s)
  sh -c "$cmd"
  rc=$?
  secs=$(($(date +%s) - start))
  if [ $rc -eq 0 ]; then
    result="ok"
  else
    result="FAILED (exit $rc)"
    failed="$failed $name"
  fi
  echo "== check: $name: $result"
  table="$table$(printf '%-12s %-18s %6ss' "$name" "$result" "$secs")
"
done
echo
echo "check: summary"
printf '%-12s %-18s %7s\n' suite result time
printf '%s' "$table"
if [ -n "$failed" ]; then
  echo "check: FAILED:$failed"
  exit 1
fi
echo "check: every suite passed"
exit 0
