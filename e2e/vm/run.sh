#!/usr/bin/env bash
# Host side of the guest suite: builds the initramfs around BIN_DIR's binaries, boots the guest,
# reads the MULTINIC-RESULT lines from its serial console and fails on any failed or missing check.
# Usage: run.sh BIN_DIR [SUITE]   (SUITE: all (default), inventory, attach)
# Env: VM_WORK (default: a temp dir) keeps console.log and the 9p share (share/: the recorded
# fixture in share/fixture, inventory-live.yaml, vm-check.stderr); VM_TIMEOUT (s, default 480).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

bin_dir="${1:?usage: run.sh BIN_DIR [SUITE]}"
suite="${2:-all}"
work="${VM_WORK:-$(mktemp -d /tmp/multinic-vm.XXXXXX)}"
mkdir -p "$work/share"
rm -rf "${work:?}/share/"*
kdir="$("$VM_DIR/fetch-kernel.sh")"
ver="$(kernel_version)"

t0=$SECONDS
"$VM_DIR/build-initramfs.sh" "$work/initramfs.cpio" "$bin_dir"
log "initramfs: $(du -h "$work/initramfs.cpio" | cut -f1) in $((SECONDS - t0)) s"

t1=$SECONDS
rc=0
"$VM_DIR/boot.sh" "$kdir/boot/vmlinuz-$ver" "$work/initramfs.cpio" "$work/share" "$work/console.log" \
  "${VM_TIMEOUT:-480}" -- "multinic.suite=$suite" 2>"$work/qemu.stderr" || rc=$?
log "guest ran $((SECONDS - t1)) s (qemu exit $rc)"
grep -v 'is not connected to host network' "$work/qemu.stderr" >&2 || true

expected=(boot setup)
case "$suite" in
  all | inventory)
    expected+=(inventory-count inventory-uplink-excluded inventory-pci inventory-numa-pcieroot
      inventory-sriov inventory-rdma inventory-rails fixture-recorded) ;;&
  all | attach)
    expected+=(rdma-netns-exclusive plugin-published attach-sriov-vf attach-host-device-cdi
      attach-host-device-rdma-netns attach-ipvlan-l3 attach-ipvlan-l2 attach-clean) ;;
  *) die "unknown suite $suite" ;;
esac

tr -d '\r' <"$work/console.log" | grep -E '^MULTINIC-(RESULT|DONE)' >"$work/results.txt" || true
cat "$work/results.txt"
passed=0
failed=0
known=0
while read -r _ status _; do
  case "$status" in
    ok) passed=$((passed + 1)) ;;
    known-gap) known=$((known + 1)) ;;
    *) failed=$((failed + 1)) ;;
  esac
done < <(grep '^MULTINIC-RESULT' "$work/results.txt")
for name in "${expected[@]}"; do
  if ! grep -qE "^MULTINIC-RESULT (ok|fail|known-gap) $name:" "$work/results.txt"; then
    echo "MULTINIC-RESULT fail $name: no result (guest stopped early? see $work/console.log)"
    failed=$((failed + 1))
  fi
done
grep -q '^MULTINIC-DONE' "$work/results.txt" || {
  echo "the guest did not finish (qemu exit $rc); last console lines:"
  tail -n 30 "$work/console.log"
  failed=$((failed + 1))
}
[ "$failed" -eq 0 ] || [ ! -s "$work/share/vm-check.stderr" ] || tail -n 40 "$work/share/vm-check.stderr"
[ "$known" -eq 0 ] || echo "known product gaps (reported, not failing): $known"
echo "vm: $passed passed, $failed failed"
log "artifacts in $work"
[ "$failed" -eq 0 ]
