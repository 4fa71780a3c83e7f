# shellcheck shell=bash
# Scenario 13 of test.sh (sourced by it: uses check, scenario, running, pexec, claim_of, kc, $NS,
# $NODE, $FABRIC_NS, $NIC_PREFIX): examples/rail-gateways and examples/static-pod-addresses, their
# files unchanged, on rails 0 and 1 (macvlan children of mnic0/mnic1).
#   13a. gatewayIndex 1 + defaultRoute: the fabric side of each rail gets the rail's gateway (the
#        first usable address of this node's block) and the fabric's loopback 198.51.100.1/32,
#        an address no pod subnet holds. The pod's default route is via rail 0's gateway on net1;
#        it pings 198.51.100.1 (only the gateway routes it), and the claim's networkData lists
#        the addresses after the gateways.
#   13b. podAddresses: the named pod default/rendezvous gets 10.68.255.1/16 and .2/16 (in the
#        network's excluded range) on net1 and net2, in networkData and in the pod.
# Deletes what it creates (the fabric addresses too).

gw_blocks() { kc get nicnodeblocks "rail-gateways.$NODE" -o json 2>/dev/null | jq -r '.spec.blocks[] | "\(.railIndex) \(.cidr)"'; }
gw_have_blocks() { [ "$(gw_blocks | wc -l)" -ge 2 ]; }
# first_usable CIDR (IPv4): the address after the network address.
first_usable() { int2ip $(($(ip2int "${1%/*}") + 1)); }
# The pod's default route: "default via GW dev IF".
gw_default() { pexec rail-gateways ip -4 route show default 2>/dev/null | head -n1; }
# in_default CMD...: CMD with test.sh's namespace helpers pointed at namespace default (dynamic scope).
in_default() {
	local NS=default
	"$@"
}
gw_nd_ips() { kc -n "$NS" get resourceclaim "$(claim_of rail-gateways)" -o json | jq -r '[.status.devices[].networkData.ips[]] | join(" ")'; }

scenario "13a. examples/rail-gateways: gatewayIndex 1 is each rail's gateway, the pod's default route goes via rail 0's"
kc apply -n "$NS" -f "$REPO/examples/rail-gateways/network.yaml" >/dev/null
check "network rail-gateways Ready" kc wait --for=condition=Ready multinicnetwork/rail-gateways --timeout=90s
check "NicNodeBlocks rail-gateways.$NODE written" wait_for 60 "rail-gateways blocks" gw_have_blocks
gw_fabric=()
for k in 0 1; do
	block=$(gw_blocks | awk -v k="$k" '$1 == k {print $2}')
	gw=$(first_usable "$block")
	ip -n "$FABRIC_NS" addr replace "$gw/${block#*/}" dev "${NIC_PREFIX}${k}f"
	gw_fabric+=("$gw/${block#*/} dev ${NIC_PREFIX}${k}f")
	echo "fabric: rail $k block $block, gateway $gw on ${NIC_PREFIX}${k}f"
done
rail0_gw=$(first_usable "$(gw_blocks | awk '$1 == 0 {print $2}')")
ip -n "$FABRIC_NS" addr replace 198.51.100.1/32 dev lo
kc apply -n "$NS" -f "$REPO/examples/rail-gateways/pod.yaml" >/dev/null
check "pod rail-gateways Running" running 180 rail-gateways
if pod_running rail-gateways; then
	pexec rail-gateways ip -4 route
	check "pod's default route is via rail 0's gateway $rail0_gw on net1 ($(gw_default))" \
		[ "$(gw_default | awk '{print $3, $5}')" = "$rail0_gw net1" ]
	check "pod reaches 198.51.100.1 (routed only by the gateway)" \
		pexec rail-gateways ping -c 1 -W 3 198.51.100.1
	nd=$(gw_nd_ips)
	echo "networkData ips: $nd"
	gw_not_given() {
		local g
		for g in "${gw_fabric[@]}"; do
			g=${g%%/*}
			grep -qw "$g" <<<"$nd" && return 1
		done
		[ -n "$nd" ]
	}
	check "no pod address is a gateway ($nd)" gw_not_given
fi
kc -n "$NS" delete -f "$REPO/examples/rail-gateways/pod.yaml" --wait=true --timeout=90s >/dev/null
kc delete -n "$NS" -f "$REPO/examples/rail-gateways/network.yaml" --wait=true --timeout=60s >/dev/null
for a in "${gw_fabric[@]}"; do
	read -r -a del <<<"$a"
	ip -n "$FABRIC_NS" addr del "${del[@]}" 2>/dev/null
done
ip -n "$FABRIC_NS" addr del 198.51.100.1/32 dev lo 2>/dev/null

scenario "13b. examples/static-pod-addresses: the named pod default/rendezvous gets its listed addresses"
kc apply -f "$REPO/examples/static-pod-addresses/network.yaml" >/dev/null
check "network static-pod-addresses Ready" kc wait --for=condition=Ready multinicnetwork/static-pod-addresses --timeout=90s
kc apply -f "$REPO/examples/static-pod-addresses/pod.yaml" >/dev/null
check "pod default/rendezvous Running" in_default running 180 rendezvous
if in_default pod_running rendezvous; then
	in_default pexec rendezvous ip -br addr
	for pair in "net1 10.68.255.1/16" "net2 10.68.255.2/16"; do
		read -r ifn want <<<"$pair"
		got=$(in_default pexec rendezvous ip -o -4 addr show dev "$ifn" 2>/dev/null | awk '{print $4}' | head -n1)
		check "rendezvous: $ifn has $want ($got)" [ "$got" = "$want" ]
	done
	st_nd=$(kc -n default get resourceclaim "$(in_default claim_of rendezvous)" -o json |
		jq -r '[.status.devices[] | "\(.networkData.interfaceName)=\(.networkData.ips | join(","))"] | sort | join(" ")')
	check "networkData lists them ($st_nd)" [ "$st_nd" = "net1=10.68.255.1/16 net2=10.68.255.2/16" ]
fi
kc delete -f "$REPO/examples/static-pod-addresses/pod.yaml" --wait=true --timeout=90s >/dev/null
kc delete -f "$REPO/examples/static-pod-addresses/network.yaml" --wait=true --timeout=60s >/dev/null
