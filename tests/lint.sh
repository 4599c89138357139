#!/bin/sh
# make lint: formatting, static analysis and banned calls.
set -u
status=0
files=$(ls src/*.c src/*.h include/*.h tests/unit/*.c tests/unit/*.h tests/fuzz/*.c tests/fuzz/*.h tests/reliability/*.c 2>/dev/null)
if command -v clang-format >/dev/null; then
  for f in $files; do
    clang-format --dry-run -Werror "$f" 2>/dev/null >/dev/null || {
      echo "lint: $f is not clang-format clean"; status=1; }
  done
else
  echo "lint: clang-format missing (make deps)"; status=1
fi
if grep -nE '\b(sprintf|vsprintf|strcpy|strcat|gets|strtok|atoi)[ ]*\(' \
    src/*.c src/*.h include/*.h; then
  echo "lint: banned call above (use snprintf, bounded copies, strtol)"
  status=1
fi
if grep -n 'CURLOPT_VERBOSE' src/*.c; then
  echo "lint: CURLOPT_VERBOSE prints Authorization headers"; status=1
fi
if command -v cppcheck >/dev/null; then
  cppcheck -q --error-exitcode=1 --inline-suppr -Iinclude \
    --enable=warning,portability --std=c11 src || status=1
else
  echo "lint: cppcheck missing (make deps)"; status=1
fi
[ $status -eq 0 ] && echo "lint: ok"
exit $status
