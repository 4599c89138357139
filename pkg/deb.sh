#!/bin/sh
# pkg/deb.sh — `make deb`: a Debian package from a staged tree, with
# dpkg-deb (no debhelper, no debian/ directory in the checkout).
#
#   pkg/deb.sh TOP STAGE OUTDIR
#
# TOP is the checkout (include/version.h, pkg/deb/), STAGE a tree that
# `make install PREFIX=/usr DESTDIR=STAGE` filled, OUTDIR where
# galbridge_VERSION_ARCH.deb goes (its path is printed last).
#
# The package: /usr/bin/galbridge, the unit in /usr/lib/systemd/system
# (Debian 12 has merged /usr), both man pages (gzipped, as Debian ships
# them), /etc/galbridge/galbridge.conf.example as a conffile, and
# postinst/prerm/postrm in the shape dh_installsystemd gives them. The
# version is include/version.h's, Depends is computed by dpkg-shlibdeps
# from the binary's libraries. No system user is made: the unit runs under
# DynamicUser= with StateDirectory=/var/lib/galbridge. Files are owned by
# root (--root-owner-group), so neither root nor fakeroot is needed.
set -eu
[ $# -eq 3 ] || { echo "usage: pkg/deb.sh TOP STAGE OUTDIR" >&2; exit 2; }
top=$1 stage=$2 out=$3

version=$(sed -n 's/^#define GALBRIDGE_VERSION "\(.*\)"$/\1/p' \
  "$top/include/version.h")
[ -n "$version" ] || { echo "deb: no GALBRIDGE_VERSION in version.h" >&2;
  exit 1; }
arch=$(dpkg --print-architecture)

# dpkg-shlibdeps wants a debian/control and the binary in
# debian/PACKAGE/: work in a scratch directory shaped that way.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/debian/galbridge
mkdir -p "$root"
cp -a "$stage/." "$root/"
[ -x "$root/usr/bin/galbridge" ] || { echo "deb: $stage/usr/bin/galbridge" \
  "missing (make install PREFIX=/usr DESTDIR=...)" >&2; exit 1; }
[ -f "$root/usr/lib/systemd/system/galbridge.service" ] || {
  echo "deb: the unit is not in $stage/usr/lib/systemd/system" >&2; exit 1; }
gzip -9n "$root/usr/share/man/man8/galbridge.8" \
  "$root/usr/share/man/man5/galbridge.conf.5"
mkdir -p "$root/usr/share/doc/galbridge"
install -m 0644 "$top/README.md" "$root/usr/share/doc/galbridge/README.md"

# DEBIAN/ first: dpkg-shlibdeps finds the package's root by it.
mkdir -p "$root/DEBIAN"
printf 'Source: galbridge\n\nPackage: galbridge\nArchitecture: any\n' \
  > "$work/debian/control"
depends=$(cd "$work" && dpkg-shlibdeps -O debian/galbridge/usr/bin/galbridge |
  sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "deb: dpkg-shlibdeps found no Depends" >&2;
  exit 1; }
size=$(du -sk "$root" | cut -f1)

cat > "$root/DEBIAN/control" <<CONTROL
Package: galbridge
Version: $version
Architecture: $arch
Maintainer: galbridge <dev@galbridge.invalid>
Installed-Size: $size
Depends: $depends
Section: net
Priority: optional
Homepage: https://galbridge.invalid/
Description: keep Global Address Lists in step between Microsoft 365 tenants
 galbridge reads each source tenant's users with Microsoft Graph delta
 queries and makes them appear in each target tenant as guest users, mail
 contacts or mail users, through attribute mappings written in its
 configuration file. It runs as a sandboxed systemd service.
 .
 Copy /etc/galbridge/galbridge.conf.example to galbridge.conf, edit it,
 check it with "galbridge check-config", then start galbridge.service.
CONTROL
echo /etc/galbridge/galbridge.conf.example > "$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do
  install -m 0755 "$top/pkg/deb/$s" "$root/DEBIAN/$s"
done

mkdir -p "$out"
deb=$out/galbridge_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
