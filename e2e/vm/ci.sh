#!/usr/bin/env bash
# The QEMU guest suite as CI runs it (issue 14): installs what it needs from apt (QEMU 10 from
# bookworm-backports for the igb model, busybox-static, iproute2, cpio, kmod), shellchecks
# e2e/vm, builds the three binaries, then boots the guest once (e2e/vm/run.sh: inventory, attach,
# hot-plug) and two guests joined rail by rail (e2e/vm/run-l3.sh), and fails if any check failed. Root only (apt, and the guest's kernel work needs nothing from the host kernel).
# Env: CARGO_TARGET_DIR as for cargo; MULTINIC_VM_CACHE (default /var/cache/multinic-vm).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
t0=$SECONDS
cd "$REPO_DIR"

export DEBIAN_FRONTEND=noninteractive
if ! command -v qemu-system-x86_64 >/dev/null || ! qemu-system-x86_64 -device help 2>/dev/null | grep -q '"igb"'; then
  . /etc/os-release
  suite="${VERSION_CODENAME:-bookworm}-backports"
  if ! grep -rqs "$suite" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding the $suite apt suite"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$suite" >/etc/apt/sources.list.d/multinic-vm-backports.sources
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends -t "$suite" qemu-system-x86 >/dev/null
fi
for tool in busybox:busybox-static cpio:cpio depmod:kmod rdma:iproute2 shellcheck:shellcheck socat:socat \
  objcopy:binutils; do
  command -v "${tool%%:*}" >/dev/null && { [ "${tool%%:*}" != busybox ] || ! ldd /bin/busybox >/dev/null 2>&1; } &&
    continue
  apt-get install -y -qq --no-install-recommends "${tool#*:}" >/dev/null
done
[ -f /etc/ssl/certs/ca-certificates.crt ] || apt-get install -y -qq --no-install-recommends ca-certificates >/dev/null
qemu-system-x86_64 --version | head -n1

shellcheck -x -P SCRIPTDIR e2e/vm/*.sh e2e/vm/guest/*.sh
log "e2e/vm scripts are shellcheck-clean"

cargo build --locked -p multinic-cli -p multinic-kubelet-plugin -p multinic-cni
bin_dir="${CARGO_TARGET_DIR:-$REPO_DIR/target}/debug"

rc=0
"$VM_DIR/run.sh" "$bin_dir" all || rc=$?
# Two guests joined rail by rail (acceptance 3).
"$VM_DIR/run-l3.sh" "$bin_dir" || rc=$?
log "vm suite wall time: $((SECONDS - t0)) s"
exit "$rc"
