#!/bin/busybox sh
# shellcheck shell=sh
# /init of the guest (PID 1, busybox sh). Brings up the node the way a DGX-like host looks:
# 8 igb PFs renamed by PCI address, SR-IOV VFs on two of them, an rxe RDMA device on each PF, the
# virtio uplink carrying the default route; then runs the checks and powers off. Every result line
# goes to the serial console as "MULTINIC-RESULT ok|fail <name>: <detail>"; artifacts go to /out
# (the host's 9p share). Kernel args: multinic.suite=<all|inventory|attach>.
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# busybox sh runs its own applets before PATH: iproute2 by full path.
ip() { /usr/sbin/ip "$@"; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /run/netns /var /etc/cni/net.d
ln -s /run /var/run


result() { echo "MULTINIC-RESULT $*"; }
finish() {
  sync
  [ -n "${1:-}" ] && result "$@"
  echo "MULTINIC-DONE"
  poweroff -f
}
t0="$(cut -d' ' -f1 /proc/uptime)"
result ok boot: "/init at ${t0}s after kernel start"

suite=all
read -r cmdline </proc/cmdline
for arg in $cmdline; do
  case "$arg" in
    multinic.suite=*) suite="${arg#multinic.suite=}" ;;
    multinic.guest=*) GUEST="${arg#multinic.guest=}" ;;
    multinic.peer=*) PEER="${arg#multinic.peer=}" ;;
  esac
done
export suite GUEST="${GUEST:-1}" PEER="${PEER:-}"
echo "vm-$GUEST" >/proc/sys/kernel/hostname

if ! { modprobe virtio_pci && modprobe 9pnet_virtio && modprobe 9p &&
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out /out; }; then
  finish fail share: "cannot mount the 9p share"
fi
# Multi-guest runs share a second directory for rendezvous between the guests.
mkdir -p /sync
mount -t 9p -o trans=virtio,version=9p2000.L sync /sync 2>/dev/null || true

for m in igb igbvf ipvlan macvlan dummy virtio_net crc32_generic rdma_rxe ib_uverbs rdma_ucm; do
  modprobe "$m" || finish fail modules: "modprobe $m failed"
done

# Wait for the 8 igb PFs and the uplink to be probed.
pfs() {
  for n in /sys/class/net/*; do
    [ "$(basename "$(readlink "$n/device/driver" 2>/dev/null)")" = igb ] && echo "${n##*/}"
  done
}
i=0
while [ "$(pfs | wc -l)" -lt 8 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ "$(pfs | wc -l)" -eq 8 ] || finish fail probe: "only $(pfs | wc -l) igb netdevs"

# name: enp<bus>s<slot>[f<fn>] from the PCI address, as systemd does.
pci_name() {
  dev="$(readlink -f "/sys/class/net/$1/device")"
  # virtio netdevs hang off a virtioN device whose parent is the PCI function.
  case "${dev##*/}" in virtio*) dev="${dev%/*}" ;; esac
  bdf="${dev##*/}"
  bus=$((0x$(echo "$bdf" | cut -d: -f2)))
  slot=$((0x$(echo "$bdf" | cut -d: -f3 | cut -d. -f1)))
  fn="$(echo "$bdf" | cut -d. -f2)"
  if [ "$fn" = 0 ]; then echo "enp${bus}s${slot}"; else echo "enp${bus}s${slot}f${fn}"; fi
}
for n in $(pfs); do ip link set "$n" name "$(pci_name "$n")"; done
for n in /sys/class/net/*; do
  n="${n##*/}"
  [ "$(basename "$(readlink "/sys/class/net/$n/device/driver" 2>/dev/null)")" = virtio_net ] || continue
  up="$(pci_name "$n")"
  ip link set "$n" name "$up"
done
[ -n "${up:-}" ] || finish fail uplink: "no virtio-net uplink"
# No IPv6: keeps the rails free of background traffic (ND, MLD), so tx counters show only the test's.
echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6
ip link set lo up
ip link set "$up" up
ip addr add 10.0.2.15/24 dev "$up"
ip route add default via 10.0.2.2 dev "$up"

# PFs in PCI order = rail order.
rails="$(for n in $(pfs); do echo "$(basename "$(readlink -f "/sys/class/net/$n/device")") $n"; done | sort | cut -d' ' -f2)"
k=0
for n in $rails; do
  ip link set "$n" mtu 9000 up
  ip addr add "192.168.$k.1${GUEST:-1}/24" dev "$n"
  k=$((k + 1))
done
# shellcheck disable=SC2086 # one word per rail
set -- $rails
# SR-IOV: 2 VFs on the first PF of each NUMA node, stable MACs, renamed <pf>v<i>.
for pf in "$1" "$5"; do
  echo 2 >"/sys/class/net/$pf/device/sriov_numvfs" || finish fail sriov: "sriov_numvfs on $pf"
done
i=0
netdevs() { set -- /sys/class/net/*; echo $#; }
while [ "$(netdevs)" -lt 15 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
for pf in "$1" "$5"; do
  for v in 0 1; do
    vfdev="$(readlink -f "/sys/class/net/$pf/device/virtfn$v")"
    vf=""
    for x in "$vfdev"/net/*; do [ -e "$x" ] && vf="${x##*/}"; done
    [ -n "$vf" ] || finish fail sriov: "no netdev for $pf virtfn$v"
    mac="$(cut -d: -f1-5 "/sys/class/net/$pf/address"):1$v"
    ip link set "$pf" vf "$v" mac "$mac"
    ip link set "$vf" down
    ip link set "$vf" address "$mac" 2>/dev/null || true
    ip link set "$vf" name "${pf}v$v" mtu 1500 up
  done
done
# Soft-RoCE on each PF, in rail order: rxe0..rxe7.
k=0
for n in $rails; do
  rdma link add "rxe$k" type rxe netdev "$n" || finish fail rdma: "rdma link add rxe$k on $n"
  k=$((k + 1))
done
result ok setup: "8 PFs ($*), VFs on $1 and $5, rxe0..rxe7, uplink $up"

/bin/sh /multinic/checks.sh
finish
