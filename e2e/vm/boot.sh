#!/usr/bin/env bash
# Boots one guest under TCG: q35, two NUMA nodes (one vCPU and 1 GiB each), two extra PCIe root
# complexes (pxb-pcie, bus 0x20 on NUMA node 0 and bus 0x80 on NUMA node 1), 8 igb NICs each on
# its own pcie-root-port (4 behind each pxb), one virtio-net uplink on pcie.0 (`-netdev user`,
# restrict=on: no host or outside access), and a 9p share for the results.
# Usage: boot.sh KERNEL INITRD SHARE_DIR CONSOLE_LOG [TIMEOUT_S] [-- extra kernel args]
# QEMU's pid goes to CONSOLE_LOG with .log replaced by .pid.
# The rail NICs' backends: single-port hubs (no traffic leaves), unless RAIL_NETDEV_<k> (k=0..7)
# is set to a full -netdev value (e.g. "socket,id=r3,listen=127.0.0.1:40103"). GUEST_ID (1..)
# makes the MACs unique per guest; SYNC_DIR adds a second 9p share (tag "sync") that several
# guests mount for their rendezvous; QEMU_MONITOR is a unix socket path for QMP.
# QEMU's option values are comma-separated by design.
# shellcheck disable=SC2054
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

kernel="${1:?usage: boot.sh KERNEL INITRD SHARE_DIR CONSOLE_LOG [TIMEOUT_S]}"
initrd="${2:?}"
share="${3:?}"
console="${4:?}"
timeout_s="${5:-300}"
shift $(($# < 5 ? $# : 5))
[ "${1:-}" = "--" ] && shift
extra_cmdline="$*"
guest="${GUEST_ID:-1}"

args=(
  -machine q35 -accel tcg,thread=multi -cpu max -smp 2 -m 2048
  -object memory-backend-ram,id=mem0,size=1G -object memory-backend-ram,id=mem1,size=1G
  -numa node,nodeid=0,cpus=0,memdev=mem0 -numa node,nodeid=1,cpus=1,memdev=mem1
  -device pxb-pcie,id=pxb0,bus_nr=0x20,numa_node=0,bus=pcie.0
  -device pxb-pcie,id=pxb1,bus_nr=0x80,numa_node=1,bus=pcie.0
)
for k in 0 1 2 3 4 5 6 7; do
  pxb=$((k / 4))
  var="RAIL_NETDEV_$k"
  netdev="${!var:-hubport,id=r$k,hubid=$k}"
  # Stable MACs: 52:54:00:<guest>:<rail>:01
  mac="$(printf '52:54:00:%02x:%02x:01' "$guest" "$k")"
  args+=(
    -device "pcie-root-port,id=rp$k,bus=pxb$pxb,chassis=$((k + 1)),slot=$((k % 4)),addr=$((k % 4)).0"
    -netdev "$netdev"
    -device "igb,bus=rp$k,netdev=r$k,mac=$mac"
  )
done
# A spare root port behind the NUMA-1 root for hot-plug through QMP (device_add igb,bus=rp8,
# netdev=hp0n), and the backend such a NIC would use.
args+=(
  -device pcie-root-port,id=rp8,bus=pxb1,chassis=9,slot=4,addr=4.0
  -netdev hubport,id=hp0n,hubid=8
)
args+=(
  -netdev user,id=up,restrict=on
  -device "virtio-net-pci,bus=pcie.0,netdev=up,mac=$(printf '52:54:00:%02x:ff:01' "$guest")"
  -fsdev "local,id=out,path=$share,security_model=none"
  -device virtio-9p-pci,bus=pcie.0,fsdev=out,mount_tag=out
  -kernel "$kernel" -initrd "$initrd"
  -append "console=ttyS0 panic=-1 loglevel=4 $extra_cmdline"
  -display none -serial "file:$console" -monitor none -no-reboot -pidfile "${console%.log}.pid"
)
if [ -n "${SYNC_DIR:-}" ]; then
  args+=(-fsdev "local,id=sync,path=$SYNC_DIR,security_model=none"
    -device virtio-9p-pci,bus=pcie.0,fsdev=sync,mount_tag=sync)
fi
if [ -n "${QEMU_MONITOR:-}" ]; then
  args+=(-qmp "unix:$QEMU_MONITOR,server=on,wait=off")
fi
log "booting guest $guest (console: $console)"
timeout --foreground -k 5 "$timeout_s" qemu-system-x86_64 "${args[@]}"
