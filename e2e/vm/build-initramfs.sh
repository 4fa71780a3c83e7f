#!/usr/bin/env bash
# Builds the guest's initramfs as two concatenated cpio archives (the kernel unpacks both):
#   base    busybox-static, the VM_MODULES with their `modinfo -F depends` closure (depmod -b),
#           iproute2's ip and rdma with their ldd libraries. Cached in $CACHE/initramfs, keyed by
#           kernel version, module list and the package versions of busybox-static/iproute2.
#   payload /init (guest/init.sh), the guest scripts and our binaries with their ldd libraries;
#           rebuilt every run (it is what changes).
# Usage: build-initramfs.sh OUT.cpio BIN_DIR   (BIN_DIR holds multinic, multinic-kubelet-plugin,
# multinic-cni). Prints nothing on stdout; OUT.cpio is base + payload.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

out="${1:?usage: build-initramfs.sh OUT.cpio BIN_DIR}"
bin_dir="${2:?usage: build-initramfs.sh OUT.cpio BIN_DIR}"
ver="$(kernel_version)"
kdir="$("$VM_DIR/fetch-kernel.sh")"

# Copies each ELF and the libraries ldd lists for it into ROOT, keeping their paths.
copy_with_libs() {
  local root="$1"
  shift
  local f lib
  for f in "$@"; do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f"
    for lib in $(ldd "$f" 2>/dev/null | grep -oE '/[^ ]+' || true); do
      [ -e "$root$lib" ] && continue
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  done
}

pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo none; }

key="$(printf '%s\n' "$ver" "${VM_MODULES[*]}" "$(pkgver busybox-static)" "$(pkgver iproute2)" \
  "$(sha256sum "$VM_DIR/build-initramfs.sh" | cut -c1-16)" | sha256sum | cut -c1-16)"
base="$CACHE/initramfs/base-$ver-$key.cpio.gz"
if [ ! -f "$base" ]; then
  log "building base initramfs $base"
  ldd /bin/busybox >/dev/null 2>&1 && die "/bin/busybox is not static: install busybox-static"
  [ -x /bin/busybox ] || die "busybox-static is not installed"
  root="$(mktemp -d)"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,proc,sys,dev,tmp,run,etc,out}
  cp /bin/busybox "$root/bin/busybox"
  # Module closure: each module and what `modinfo -F depends` names, recursively; builtins skipped.
  declare -A seen=()
  queue=("${VM_MODULES[@]}")
  while [ "${#queue[@]}" -gt 0 ]; do
    m="${queue[0]}"
    queue=("${queue[@]:1}")
    [ -n "${seen[$m]:-}" ] && continue
    seen[$m]=1
    file="$(modinfo -b "$kdir" -k "$ver" -F filename "$m" 2>/dev/null || true)"
    case "$file" in
      "" ) die "module $m not found in $kdir/lib/modules/$ver" ;;
      "(builtin)" ) continue ;;
    esac
    rel="${file#"$kdir"}"
    mkdir -p "$root$(dirname "$rel")"
    cp "$file" "$root$rel"
    deps="$(modinfo -b "$kdir" -k "$ver" -F depends "$m")"
    IFS=, read -r -a more <<<"$deps"
    for d in "${more[@]}"; do [ -n "$d" ] && queue+=("$d"); done
  done
  cp "$kdir/lib/modules/$ver"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$ver/" 2>/dev/null || true
  depmod -b "$root" "$ver"
  log "modules: ${!seen[*]}"
  copy_with_libs "$root" "$(command -v ip)" "$(command -v rdma)"
  # The plugin's kube client (rustls with the platform verifier) wants system roots to exist, even
  # though the test API server's kubeconfig carries its own CA.
  mkdir -p "$root/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/" || die "install ca-certificates"
  mkdir -p "$CACHE/initramfs"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$base.tmp"
  mv "$base.tmp" "$base"
  rm -rf "$root"
fi

payload="$(mktemp -d)"
trap 'rm -rf "$payload"' EXIT
mkdir -p "$payload/multinic"
cp "$VM_DIR/guest/init.sh" "$payload/init"
chmod 0755 "$payload/init"
cp "$VM_DIR"/guest/*.sh "$payload/multinic/"
for b in multinic multinic-kubelet-plugin multinic-cni; do
  [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing"
  mkdir -p "$payload/usr/local/bin"
  # Debug info is not needed in the guest; stripping keeps the initramfs small.
  objcopy --strip-debug "$bin_dir/$b" "$payload/usr/local/bin/$b"
  copy_with_libs "$payload" "$bin_dir/$b"
  rm -f "$payload$bin_dir/$b"
done
{
  zcat "$base"
  (cd "$payload" && find . | cpio -o -H newc --quiet)
} >"$out"
