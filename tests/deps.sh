#!/bin/sh
# Install the Debian packages named on the command line that are missing.
# A no-op when every one is present. Uses sudo when not root.
missing=""
for p in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
      grep -q 'install ok installed'; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q || exit 1
# shellcheck disable=SC2086
$sudo apt-get install -y -q --no-install-recommends $missing
