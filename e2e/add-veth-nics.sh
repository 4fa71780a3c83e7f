#!/usr/bin/env bash
# Gives every worker of a kind cluster N veth pairs named mnicK (the "NIC") / mnicKp (its peer),
# which the node plugin publishes with --allow-virtual --include-interfaces='mnic*'.
set -euo pipefail

cluster="${1:?usage: add-veth-nics.sh CLUSTER N}"
count="${2:?usage: add-veth-nics.sh CLUSTER N}"

for node in $(kind get nodes --name "${cluster}" | grep worker); do
  for ((k = 0; k < count; k++)); do
    docker exec "${node}" sh -c "ip link show mnic${k} >/dev/null 2>&1 || \
      (ip link add mnic${k} type veth peer name mnic${k}p && ip link set mnic${k} up && ip link set mnic${k}p up)"
  done
  printf 'added %s veth NICs to %s\n' "${count}" "${node}"
done
