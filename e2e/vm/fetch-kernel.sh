#!/usr/bin/env bash
# Downloads Debian's kernel package and unpacks it into the cache WITHOUT installing it on the
# host: apt-get download + dpkg -x. Prints the unpacked directory (it holds boot/vmlinuz-<ver> and
# lib/modules/<ver>). Cached by version: a second run downloads nothing.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

ver="$(kernel_version)"
dest="$CACHE/kernel/$ver"
if [ -f "$dest/.complete" ]; then
  echo "$dest"
  exit 0
fi
log "fetching linux-image-$ver into $dest"
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/deb"
(cd "$dest.tmp/deb" && apt-get download -q "linux-image-$ver" >&2)
deb="$(ls "$dest.tmp"/deb/*.deb)"
dpkg -x "$deb" "$dest.tmp/root"
[ -f "$dest.tmp/root/boot/vmlinuz-$ver" ] || die "no boot/vmlinuz-$ver in $deb"
[ -d "$dest.tmp/root/lib/modules/$ver" ] || die "no lib/modules/$ver in $deb"
# modules.dep is made by the package's postinst, which dpkg -x does not run.
depmod -b "$dest.tmp/root" "$ver"
rm -rf "$dest"
mv "$dest.tmp/root" "$dest"
rm -rf "$dest.tmp"
touch "$dest/.complete"
echo "$dest"
