#!/bin/sh
# Run by init.sh once the node is up: runs the suite named by $suite with the real binaries.
# `multinic vm-check` prints the MULTINIC-RESULT lines itself.
result() { echo "MULTINIC-RESULT $*"; }
# busybox sh runs its own applets before PATH: iproute2 by full path.
ip() { /usr/sbin/ip "$@"; }
ip -br link >/out/ip-link.txt 2>&1
rdma link >/out/rdma-link.txt 2>&1
case "${suite:-all}" in
  all | inventory | attach)
    RUST_LOG=warn multinic vm-check --suite "$suite" --out /out --node-name vm-1 2>/out/vm-check.stderr ||
      result fail vm-check: "exit $? (see vm-check.stderr)"
    ;;
  l3)
    RUST_LOG=warn multinic vm-check --suite l3 --out /out --guest-id "$GUEST" --peer-id "$PEER" \
      --sync-dir /sync 2>/out/vm-check.stderr || result fail vm-check: "exit $? (see vm-check.stderr)"
    ;;
  setup) ;;
  *) result fail suite: "unknown suite $suite" ;;
esac
if [ "${suite:-all}" = setup ]; then
  {
    for d in /sys/class/infiniband/*; do echo "$d -> $(readlink -f "$d")"; ls -l "$d/" ; readlink -f "$d/device"; done
    ls -l /sys/class/infiniband_verbs/ /dev/infiniband/
    for n in /sys/class/net/*; do echo "$n -> $(readlink -f "$n")"; done
    rdma system show
    ls /sys/class/net/enp33s0/device/
  } >/out/debug.txt 2>&1
fi
