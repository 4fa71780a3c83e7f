#!/usr/bin/env bash
# The scenarios of issue 12 against the cluster of up.sh (real API server, scheduler, kcm, kubelet,
# containerd; the driver installed from deploy/). Each check prints PASS/FAIL; the script exits
# non-zero when any check failed. For every scenario it prints `kubectl describe resourceclaim`
# of the claims it made and `ip -br addr` of its pods. Objects live in namespace e2e (deleted at
# the start and at the end). Scenario 7 runs testkit/tests/api (cargo, feature real-cluster) against
# this API server with the admin kubeconfig, one check per test.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "test.sh needs root (it reads the fabric netns and the node's links)"
NS=e2e
NET=e2e-rails
failures=0
t0=$SECONDS

pass() { printf 'PASS: %s\n' "$*"; }
fail() {
	printf 'FAIL: %s\n' "$*"
	failures=$((failures + 1))
}
# check DESCRIPTION CMD...: PASS when CMD succeeds.
check() {
	local what=$1
	shift
	if "$@"; then pass "$what"; else fail "$what"; fi
}
scenario() { printf '\n######## %s (t=%ss)\n' "$*" "$((SECONDS - t0))"; }

ip2int() {
	local IFS=. a b c d
	read -r a b c d <<<"$1"
	echo $(((a << 24) | (b << 16) | (c << 8) | d))
}
int2ip() { echo "$((($1 >> 24) & 255)).$((($1 >> 16) & 255)).$((($1 >> 8) & 255)).$(($1 & 255))"; }
# in_cidr IP CIDR
in_cidr() {
	[ -n "$1" ] && [ -n "$2" ] || return 1
	local net=${2%/*} len=${2#*/} mask
	mask=$(((0xffffffff << (32 - len)) & 0xffffffff))
	[ $(($(ip2int "$1") & mask)) -eq $(($(ip2int "$net") & mask)) ]
}
# last_usable CIDR: the address before the broadcast address.
last_usable() {
	local net=${1%/*} len=${1#*/}
	int2ip $((($(ip2int "$net") | ((1 << (32 - len)) - 1)) - 1))
}

# The node's devices: "device railIndex ifName" lines, from the published ResourceSlices.
# Recorded in scenario 1 (all NICs on the node) into $DEVMAP, which later checks use.
DEVMAP=$STATE/e2e-devices
devmap() { cat "$DEVMAP"; }
slice_devices() {
	kc get resourceslices -o json | jq -r '.items[] | select(.spec.driver == "multinic.dev") | .spec.devices[] |
		[.name, ((.attributes["multinic.dev/railIndex"] // .attributes.railIndex).int),
		 ((.attributes["multinic.dev/ifName"] // .attributes.ifName).string)] | @tsv'
}
# The block of rail K for this node, as recorded in scenario 1 ($BLOCKMAP: "rail cidr" lines).
BLOCKMAP=$STATE/e2e-blocks
rail_block() { awk -v k="$2" '$1 == k {print $2}' "$BLOCKMAP.$1"; }
record_blocks() { # network
	kc get nicnodeblocks "$1.$NODE" -o json | jq -r '.spec.blocks[] | "\(.railIndex) \(.cidr)"' >"$BLOCKMAP.$1"
}

pod_yaml() { # name template [extra-claim-source]
	cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $NS}
spec:
  terminationGracePeriodSeconds: 1
  resourceClaims:
    - {name: nics, resourceClaimTemplateName: $2}
  containers:
    - name: app
      image: $BUSYBOX_IMAGE
      imagePullPolicy: Never
      command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
      resources:
        claims: [{name: nics}]
EOF
}
template_yaml() { # name count [claim-config-json]
	cat <<EOF
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: $1, namespace: $NS}
spec:
  spec:
    devices:
      requests:
        - name: nics
          exactly: {deviceClassName: ${4:-$NET}, count: $2}
EOF
	if [ -n "${3:-}" ]; then
		cat <<EOF
      config:
        - requests: [nics]
          opaque: {driver: multinic.dev, parameters: $3}
EOF
	fi
}

# rail3_macvlan_network NAME SUBNET: a macvlan network on rail 3 only (the NIC stays on the host),
# applied and checked Ready.
rail3_macvlan_network() {
	kc apply -f - >/dev/null <<EOF
apiVersion: multinic.dev/v1alpha1
kind: MultiNicNetwork
metadata: {name: $1}
spec:
  selector: 'device.attributes["multinic.dev"].railIndex == 3'
  attachment: {mode: macvlan}
  ipam: {type: rails, subnet: $2, hostBlock: 8, interfaceBlock: 2}
EOF
	check "network $1 Ready" kc wait --for=condition=Ready "multinicnetwork/$1" --timeout=90s
}

claim_of() { kc -n "$NS" get pod "$1" -o jsonpath='{.status.resourceClaimStatuses[0].resourceClaimName}'; }
pod_running() { [ "$(kc -n "$NS" get pod "$1" -o jsonpath='{.status.phase}' 2>/dev/null)" = Running ]; }
# running SECONDS POD: waits for POD to run; if it does not, prints why (pod conditions, events of
# the pod and its claim, the claim's allocation, node conditions and taints, the plugin's last
# warnings) right below the FAIL line, so a CI log excerpt shows the cause.
running() {
	local t=$1 p=$2 c
	wait_for "$t" "$p Running" pod_running "$p" && return 0
	echo "--- why $p is not Running"
	kc -n "$NS" get pod "$p" -o json 2>&1 | jq -r '"phase \(.status.phase // "-") node \(.spec.nodeName // "-")",
		(.status.conditions[]? | "condition \(.type)=\(.status) \(.reason // "") \(.message // "")"),
		(.status.containerStatuses[]? | "container \(.name) \(.state | tostring)")' 2>&1
	c=$(claim_of "$p")
	kc -n "$NS" get events -o json 2>&1 | jq -r --arg p "$p" --arg c "$c" '.items[] |
		select(.involvedObject.name == $p or .involvedObject.name == $c) |
		"event \(.involvedObject.kind)/\(.involvedObject.name) \(.type) \(.reason) x\(.count // 1): \(.message)"' 2>&1 | tail -n 12
	[ -n "$c" ] && kc -n "$NS" get resourceclaim "$c" -o json 2>&1 | jq -r '"claim \(.metadata.name) allocated=\(.status.allocation != null) reservedFor=\([.status.reservedFor[]?.name] | join(","))"' 2>&1
	kc get node "$NODE" -o json 2>&1 | jq -r '(.status.conditions[]? | select((.type == "Ready") != (.status == "True")) | "node \(.type)=\(.status) \(.message)"),
		(.spec.taints[]? | "node taint \(.key):\(.effect)")' 2>&1
	plugin_log | grep -E "WARN|ERROR" | tail -n 8
	grep -F "$p" "$LOGS/kube-scheduler.log" 2>/dev/null | tail -n 4
	return 1
}
pod_gone() { ! kc -n "$NS" get pod "$1" >/dev/null 2>&1; }
pexec() {
	local p=$1
	shift
	kc -n "$NS" exec "$p" -- "$@"
}
show() { # pods...: the claims' descriptions and the pods' addresses
	local p c
	for p in "$@"; do
		c=$(claim_of "$p")
		[ -n "$c" ] && { echo "--- kubectl describe resourceclaim $c (pod $p)"; kc -n "$NS" describe resourceclaim "$c"; }
		echo "--- pod $p: ip -br addr"
		pexec "$p" ip -br addr 2>&1
	done
}

# check_pod_nics POD COUNT: net1..netCOUNT exist in rail order, each with the address of block
# (this host, its rail), the MAC and IP of the claim's networkData, and reach their rail's gateway.
check_pod_nics() {
	local p=$1 n=$2 c claim devs k ifn dev rail prev=-1 block ip nd_ip nd_mac mac gw ok
	c=$(claim_of "$p")
	claim=$(kc -n "$NS" get resourceclaim "$c" -o json)
	devs=$(devmap)
	for ((k = 1; k <= n; k++)); do
		ifn=net$k ok=1
		dev=$(jq -r --arg i "$ifn" '.status.devices[]? | select(.networkData.interfaceName == $i) | .device' <<<"$claim")
		[ -n "$dev" ] || { fail "$p: claim $c has no status.devices entry for $ifn"; continue; }
		rail=$(awk -v d="$dev" '$1 == d {print $2}' <<<"$devs")
		block=$(rail_block "$NET" "$rail")
		nd_ip=$(jq -r --arg i "$ifn" '.status.devices[] | select(.networkData.interfaceName == $i) | .networkData.ips[0]' <<<"$claim")
		nd_mac=$(jq -r --arg i "$ifn" '.status.devices[] | select(.networkData.interfaceName == $i) | .networkData.hardwareAddress' <<<"$claim")
		ip=$(pexec "$p" ip -o -4 addr show dev "$ifn" 2>/dev/null | awk '{print $4}' | head -n1)
		mac=$(pexec "$p" cat "/sys/class/net/$ifn/address" 2>/dev/null)
		[ -n "$ip" ] || { fail "$p: no $ifn (or no IPv4 on it)"; continue; }
		[ "$rail" -gt "$prev" ] || { fail "$p: $ifn has rail $rail, not after rail $prev (rail order)"; ok=0; }
		prev=$rail
		in_cidr "${ip%/*}" "$block" || { fail "$p: $ifn $ip is not in block $block of (host $NODE, rail $rail)"; ok=0; }
		[ "$ip" = "$nd_ip" ] || { fail "$p: $ifn has $ip, networkData says $nd_ip"; ok=0; }
		[ "$mac" = "$nd_mac" ] || { fail "$p: $ifn has MAC $mac, networkData says $nd_mac"; ok=0; }
		gw=$(last_usable "$block")
		pexec "$p" ping -c 1 -W 3 -I "$ifn" "$gw" >/dev/null 2>&1 || { fail "$p: $ifn cannot ping rail $rail's gateway $gw"; ok=0; }
		[ "$ok" = 1 ] && pass "$p: $ifn = device $dev, rail $rail, $ip in $block, MAC $mac = networkData, pings $gw"
	done
	[ "$(pexec "$p" ls /sys/class/net | grep -c '^net[0-9]')" = "$n" ] || fail "$p: not exactly $n netK interfaces"
}

# The NICs (host interface names) a pod's claim holds.
claim_nics() {
	local devs
	devs=$(devmap)
	kc -n "$NS" get resourceclaim "$1" -o json | jq -r '.status.allocation.devices.results[].device' |
		while read -r d; do awk -v d="$d" '$1 == d {print $3}' <<<"$devs"; done
}
# The plugin container's log, read from the node's pod log dir (works while the kubelet is down).
plugin_log() { cat "$STATE"/pod-logs/multinic-system_multinic-kubelet-plugin-*/plugin/*.log 2>/dev/null; }
plans() { find /var/lib/multinic/plans -maxdepth 1 -name '*.json' 2>/dev/null | wc -l; }

# The plugin's --shared-pods N ("" for none), rolled out (scenarios 9 and 12).
shared_pods() { # N, or "" for none: the plugin's --shared-pods, rolled out
	kc -n multinic-system get ds multinic-kubelet-plugin -o json |
		jq --arg n "$1" '.spec.template.spec.containers[0].args |= (map(select(startswith("--shared-pods") | not)) +
			(if $n == "" then [] else ["--shared-pods=\($n)"] end))' | kc replace -f - >/dev/null &&
		kc -n multinic-system rollout status ds/multinic-kubelet-plugin --timeout=120s >/dev/null
}

# ------------------------------------------------------------------------------------------------
kc delete ns "$NS" --ignore-not-found --wait=true >/dev/null 2>&1
kc delete multinicnetwork "$NET" e2e-impossible ipvlan-l3 e2e-health quickstart e2e-shared dual-stack --ignore-not-found --wait=true >/dev/null 2>&1
kc create ns "$NS" >/dev/null

scenario "1. MultiNicNetwork -> DeviceClass + NicNodeBlocks; an impossible spec is rejected at admission"
kc apply -f - <<EOF
apiVersion: multinic.dev/v1alpha1
kind: MultiNicNetwork
metadata: {name: $NET}
spec:
  attachment: {mode: host-device}
  ipam: {type: rails, subnet: 10.77.0.0/16, hostBlock: 8, interfaceBlock: 2}
EOF
check "network $NET Ready" kc wait --for=condition=Ready "multinicnetwork/$NET" --timeout=90s
check "DeviceClass $NET exists" kc get deviceclass "$NET"
check "NicNodeBlocks $NET.$NODE exists" wait_for 60 "NicNodeBlocks" kc get nicnodeblocks "$NET.$NODE"
kc get deviceclass "$NET" -o yaml | sed -n '/^spec:/,$p'
kc get nicnodeblocks "$NET.$NODE" -o yaml | sed -n '/^spec:/,$p'
record_blocks "$NET"
nblocks=$(wc -l <"$BLOCKMAP.$NET")
check "4 rail blocks for the node (got $nblocks)" [ "$nblocks" = 4 ]
slice_devices | tee "$DEVMAP"
check "the node publishes $RAILS devices" [ "$(wc -l <"$DEVMAP")" = "$RAILS" ]
# The fabric: each rail's gateway = the last usable address of the rail's block, on the fabric peer
# of the NIC with that railIndex.
while read -r _ rail ifn; do
	block=$(rail_block "$NET" "$rail")
	[ -n "$block" ] || continue
	gw=$(last_usable "$block")
	ip -n "$FABRIC_NS" addr replace "$gw/${block#*/}" dev "${ifn}f"
	echo "fabric: rail $rail ($ifn) gateway $gw/${block#*/} on ${ifn}f"
done < <(devmap)
out=$(kc apply -f - 2>&1 <<EOF
apiVersion: multinic.dev/v1alpha1
kind: MultiNicNetwork
metadata: {name: e2e-impossible}
spec:
  ipam: {type: rails, subnet: 10.0.0.0/16, hostBlock: 12, interfaceBlock: 4}
EOF
)
rc=$?
echo "$out"
check "impossible network rejected by the API server (exit $rc)" [ "$rc" -ne 0 ]
check "the rejection names the rule" grep -q "Invalid value" <<<"$out"

scenario "2. pods A and B, 2 NICs each, Running, rail-ordered blocks, gateways reachable, networkData = pod"
template_yaml two-nics 2 | kc apply -f - >/dev/null
pod_yaml pod-a two-nics | kc apply -f - >/dev/null
pod_yaml pod-b two-nics | kc apply -f - >/dev/null
for p in pod-a pod-b; do
	check "$p Running" running 180 "$p"
done
show pod-a pod-b
for p in pod-a pod-b; do pod_running "$p" && check_pod_nics "$p" 2; done
kc -n "$NS" get resourceclaims -o yaml | grep -A8 networkData
# design.md §9: a NIC that is in a pod stays published (the scheduler keeps seeing it).
check "NicNodeBlocks $NET.$NODE still exists while pods hold its addresses" kc get nicnodeblocks "$NET.$NODE"
check "NICs in pods stay published ($(slice_devices | wc -l) of $RAILS devices in the slices)" \
	[ "$(slice_devices | wc -l)" = "$RAILS" ]
# `multinic status` in the plugin pod: the node ledger as a table naming both pods, and as JSON.
status_table=$(kc -n multinic-system exec ds/multinic-kubelet-plugin -c plugin -- multinic status 2>&1)
echo "$status_table"
for p in pod-a pod-b; do check "multinic status names $NS/$p" grep -q "$NS/$p" <<<"$status_table"; done
status_nics=$(kc -n multinic-system exec ds/multinic-kubelet-plugin -c plugin -- multinic status -o json | jq '.nics | length')
check "multinic status -o json lists $RAILS NICs (got ${status_nics:-none})" [ "$status_nics" = "$RAILS" ]

scenario "3. pod A deleted: NICs back under their names, addresses free, status gone; pod C gets the right blocks"
claim_a=$(claim_of pod-a)
uid_a=$(kc -n "$NS" get resourceclaim "$claim_a" -o jsonpath='{.metadata.uid}')
nics_a=$(claim_nics "$claim_a")
ips_a=$(kc -n "$NS" get resourceclaim "$claim_a" -o json | jq -r '[.status.devices[].networkData.ips[0]] | sort | join(" ")')
echo "pod-a held: $(echo "$nics_a" | tr '\n' ' ') with $ips_a"
kc -n "$NS" delete pod pod-a --wait=true --timeout=90s >/dev/null
for n in $nics_a; do
	check "$n back in the node's netns" ip link show "$n"
done
check "pod-a's plan file is gone" [ ! -e "/var/lib/multinic/plans/$uid_a.json" ]
check "pod-a's claim (and its status entries) is gone" wait_for 60 "claim deleted" \
	sh -c "! '$K8S_BIN/kubectl' -n $NS get resourceclaim $claim_a"
pod_yaml pod-c two-nics | kc apply -f - >/dev/null
check "pod-c Running" running 180 pod-c
show pod-c
pod_running pod-c && check_pod_nics pod-c 2
ips_c=$(kc -n "$NS" get resourceclaim "$(claim_of pod-c)" -o json | jq -r '[.status.devices[].networkData.ips[0]] | sort | join(" ")')
check "pod-c reuses the addresses pod-a freed ($ips_c vs $ips_a)" [ "$ips_c" = "$ips_a" ]

scenario "4a. kubelet restart while B runs: plugin registers again, B keeps its interfaces, a new pod starts"
kc -n "$NS" delete pod pod-c --wait=true --timeout=90s >/dev/null
before=$(pexec pod-b ip -br addr)
klog_lines=$(wc -l <"$LOGS/kubelet.log")
regs=$(plugin_log | grep -c 'registered with the kubelet')
more_regs() { [ "$(plugin_log | grep -c 'registered with the kubelet')" -gt "$regs" ]; }
kubelet_connected() {
	tail -n +$((klog_lines + 1)) "$LOGS/kubelet.log" | grep 'Connection changed' | grep 'driverName="multinic.dev"' | grep -q 'connected=true'
}
stop kubelet
kubelet_start
check "node Ready after the kubelet restart" wait_for 120 "node Ready" sh -c \
	"'$K8S_BIN/kubectl' get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
check "the plugin registered again after the kubelet restart (plugin log)" wait_for 60 "registration" more_regs
check "the kubelet connected to multinic.dev again (kubelet log)" wait_for 60 "kubelet connection" kubelet_connected
plugin_log | grep 'registered with the kubelet' | tail -n 2 | cut -c1-200
tail -n +$((klog_lines + 1)) "$LOGS/kubelet.log" | grep 'Connection changed' | grep 'multinic.dev' | head -n 2
check "ResourceSlices published again after the kubelet restart" wait_for 90 "slices" \
	sh -c "[ \"\$('$K8S_BIN/kubectl' get resourceslices -o name | wc -l)\" -gt 0 ]"
# Right after its restart the kubelet has not synced pod-b yet: exec answers "unable to upgrade
# connection: pod does not exist" for a few seconds.
check "pod-b can be exec'd into after the kubelet restart" wait_for 60 "exec into pod-b" pexec pod-b true
after=$(pexec pod-b ip -br addr)
check "pod-b kept its interfaces across the kubelet restart" [ "$before" = "$after" ]
pod_yaml pod-d two-nics | kc apply -f - >/dev/null
check "pod-d Running after the kubelet restart" running 90 pod-d
show pod-d
pod_running pod-d && check_pod_nics pod-d 2

scenario "4b. plugin pod deleted while a pod is prepared: the DaemonSet brings it back, the retry completes"
kc -n "$NS" delete pod pod-d --wait=true --timeout=90s >/dev/null
pod_yaml pod-e two-nics | kc apply -f - >/dev/null
wait_for 60 "pod-e bound" sh -c "[ -n \"\$('$K8S_BIN/kubectl' -n $NS get pod pod-e -o jsonpath='{.spec.nodeName}')\" ]"
kc -n multinic-system delete pod -l app.kubernetes.io/name=multinic-kubelet-plugin --wait=false >/dev/null
check "pod-e Running after the plugin pod was deleted" running 240 pod-e
check "plugin DaemonSet ready again" kc -n multinic-system rollout status daemonset/multinic-kubelet-plugin --timeout=120s
kc -n "$NS" get events --field-selector involvedObject.name=pod-e -o custom-columns=REASON:.reason,MESSAGE:.message | tail -n 8
show pod-e
pod_running pod-e && check_pod_nics pod-e 2
check "one plan per running claim pod ($(plans) plans for pod-b, pod-e)" [ "$(plans)" = 2 ]

scenario "5. unsatisfiable claim stays Pending with the scheduler's reason; invalid opaque config -> event"
template_yaml five-nics 5 | kc apply -f - >/dev/null
pod_yaml pod-f five-nics | kc apply -f - >/dev/null
wait_for 60 "pod-f unschedulable" sh -c \
	"'$K8S_BIN/kubectl' -n $NS get pod pod-f -o jsonpath='{.status.conditions[?(@.type==\"PodScheduled\")].reason}' | grep -qx Unschedulable"
msg=$(kc -n "$NS" get pod pod-f -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].message}')
echo "pod-f PodScheduled: $msg"
check "pod-f Pending" [ "$(kc -n "$NS" get pod pod-f -o jsonpath='{.status.phase}')" = Pending ]
check "the scheduler's reason names the claim" grep -qi "claim" <<<"$msg"
kc -n "$NS" delete pod pod-e --wait=true --timeout=90s >/dev/null
template_yaml bad-config 2 '{"ipam": {"type": "rails", "noSuchField": 1}}' | kc apply -f - >/dev/null
pod_yaml pod-g bad-config | kc apply -f - >/dev/null
check "pod-g has a FailedPrepareDynamicResources event" wait_for 120 "prepare event" sh -c \
	"'$K8S_BIN/kubectl' -n $NS get events --field-selector involvedObject.name=pod-g,reason=FailedPrepareDynamicResources -o name | grep -q ."
kc -n "$NS" get events --field-selector involvedObject.name=pod-g,reason=FailedPrepareDynamicResources \
	-o custom-columns=REASON:.reason,MESSAGE:.message | head -n 3
check "the event carries the plugin's error (the bad field)" sh -c \
	"'$K8S_BIN/kubectl' -n $NS get events --field-selector involvedObject.name=pod-g -o jsonpath='{.items[*].message}' | grep -q noSuchField"
cg=$(claim_of pod-g)
check "claim $cg has the plugin's Warning event PrepareFailed naming the bad field" wait_for 60 "claim event" sh -c \
	"'$K8S_BIN/kubectl' -n $NS get events --field-selector involvedObject.name=$cg,reason=PrepareFailed -o jsonpath='{.items[*].message}' | grep -q noSuchField"
echo "--- kubectl describe resourceclaim $cg: its events"
kc -n "$NS" describe resourceclaim "$cg" | sed -n '/^Events:/,$p'
kc -n "$NS" delete pod pod-f pod-g --wait=true --timeout=90s >/dev/null

scenario "6. every YAML under examples/ passes --dry-run=server; the veth-capable ones run"
kc delete pod -n "$NS" pod-b --wait=true --timeout=90s >/dev/null
for f in $(find "$REPO/examples" -name '*.yaml' | sort); do
	out=$(kc apply -n "$NS" --dry-run=server -f "$f" 2>&1)
	rc=$?
	check "dry-run=server ${f#"$REPO"/}" [ "$rc" = 0 ] || echo "$out"
done
# Which examples can run on veth NICs: rdma-rails, macvlan-shared and gpu-aligned select RDMA NICs
# or a GPU driver, sriov-vf selects VFs; only ipvlan-l3 selects by railIndex. It needs the
# kernel's ipvlan link type (probed on a scratch veth); then its network and claim template run
# with a pod of ours.
if ip link add e2e-probe0 type veth peer name e2e-probe1 2>/dev/null &&
	ip link add e2e-probe2 link e2e-probe0 type ipvlan mode l3 2>/dev/null; then
	ip link del e2e-probe0 2>/dev/null
	kc apply -f "$REPO/examples/ipvlan-l3/network.yaml" -n "$NS" >/dev/null
	check "ipvlan-l3 network Ready" kc wait --for=condition=Ready multinicnetwork/ipvlan-l3 --timeout=90s
	pod_yaml pod-ipvlan two-ipvlan | kc apply -f - >/dev/null
	check "pod-ipvlan Running (examples/ipvlan-l3)" running 180 pod-ipvlan
	show pod-ipvlan
	kc -n "$NS" delete pod pod-ipvlan --wait=true --timeout=90s >/dev/null
else
	ip link del e2e-probe0 2>/dev/null
	echo "SKIP: examples/ipvlan-l3 not run: this kernel has no ipvlan link type ('ip link add ... type ipvlan' fails)"
fi
# examples/quickstart runs as the README's quick start says, its files unchanged.
kc apply -n "$NS" -f "$REPO/examples/quickstart/network.yaml" >/dev/null
check "quickstart network Ready" kc wait --for=condition=Ready multinicnetwork/quickstart --timeout=90s
kc apply -n "$NS" -f "$REPO/examples/quickstart/pod.yaml" >/dev/null
check "pod quickstart Running (examples/quickstart)" running 180 quickstart
# Its first command is `ip addr`: both NICs with an address of 10.66.0.0/16 (the log can lag the
# Running phase by a moment).
quickstart_nics() {
	local l i
	l=$(kc -n "$NS" logs quickstart 2>&1)
	for i in net1 net2; do grep -A3 ": ${i}[:@]" <<<"$l" | grep -q 'inet 10\.66\.' || return 1; done
}
check "quickstart's log shows net1 and net2 with 10.66.0.0/16 addresses" wait_for 30 "quickstart log" quickstart_nics
kc -n "$NS" logs quickstart 2>&1 | grep -E '^[0-9]+: net|inet 10\.66\.'
kc -n "$NS" delete -f "$REPO/examples/quickstart/pod.yaml" --wait=true --timeout=90s >/dev/null
kc delete -f "$REPO/examples/quickstart/network.yaml" -n "$NS" --wait=true --timeout=90s >/dev/null

scenario "7. testkit/tests/api against this API server (the semantics the fake API server imitates)"
# Built with the cargo of the environment (CARGO_TARGET_DIR if set, else the clone's target/, where
# CI's `cargo test --workspace` has just built the same dependencies). Each test is one check.
suite_log=$LOGS/realapi-suite.log
suite() { (cd "$REPO" && cargo test -p multinic-testkit --features real-cluster --test api --locked "$@"); }
if suite --no-run >"$suite_log" 2>&1; then
	# The suite writes MultiNicNetworks, which the controller would reconcile: it is stopped meanwhile.
	replicas=$(kc -n multinic-system get deployment multinic-controller -o jsonpath='{.spec.replicas}')
	kc -n multinic-system scale deployment/multinic-controller --replicas=0 >/dev/null
	controller_stopped() {
		! kc -n multinic-system get pods -l app.kubernetes.io/name=multinic-controller \
			-o jsonpath='{.items[*].status.phase}' | grep -qw Running
	}
	check "controller scaled to 0 for the suite" wait_for 90 "controller pods stopped" controller_stopped
	t_suite=$SECONDS
	MULTINIC_E2E_KUBECONFIG=$KUBECONFIG suite >>"$suite_log" 2>&1
	rc=$?
	echo "the real-API suite ran in $((SECONDS - t_suite))s (exit $rc), log $suite_log"
	sed -nE 's/^test (.*) \.\.\. ok$/PASS: real API: \1/p' "$suite_log"
	while read -r name; do fail "real API: $name"; done < <(sed -nE 's/^test (.*) \.\.\. FAILED$/\1/p' "$suite_log")
	[ "$rc" = 0 ] || sed -n '/^failures:$/,/^test result:/p' "$suite_log" | head -n 200
	grep '^test result:' "$suite_log"
	check "the real-API suite passed (exit $rc)" [ "$rc" = 0 ]
	kc -n multinic-system scale deployment/multinic-controller --replicas="${replicas:-1}" >/dev/null
	check "controller Deployment back to ${replicas:-1} replicas" \
		kc -n multinic-system rollout status deployment/multinic-controller --timeout=120s
	left=$(kc get resourceslices,deviceclasses,multinicnetworks,nicnodeblocks -o name | grep -c -- '-rapi')
	check "the suite left no cluster-scoped object (found $left)" [ "$left" = 0 ]
	check "the suite's namespaces are gone" wait_for 120 "rapi-* namespaces deleted" sh -c \
		"! '$K8S_BIN/kubectl' get namespaces -o name | grep -q '^namespace/rapi-'"
else
	tail -n 60 "$suite_log"
	fail "the real-API suite does not build (log $suite_log)"
fi

scenario "8. NIC health: rail 3 loses its carrier -> the pod's allocatedResourcesStatus is Unhealthy and the slice taints the device; carrier back -> Healthy, no taint"
# A macvlan network on rail 3 only: the NIC stays on the host, where the plugin sees its carrier.
# Taking the fabric end of the veth down drops the carrier of the node's end.
HNET=e2e-health
rail3_macvlan_network "$HNET" 10.78.0.0/16
template_yaml one-macvlan 1 "" "$HNET" | kc apply -f - >/dev/null
pod_yaml pod-h one-macvlan | kc apply -f - >/dev/null
check "pod-h Running (macvlan on rail 3)" running 180 pod-h
hdev=$(awk '$2 == 3 {print $1}' "$DEVMAP")
nic_health() {
	kc -n "$NS" get pod pod-h -o json |
		jq -r '[.status.containerStatuses[]?.allocatedResourcesStatus[]?.resources[]?.health] | join(",")'
}
nic_taint() {
	kc get resourceslices -o json | jq -r --arg d "$hdev" '[.items[] | select(.spec.driver == "multinic.dev") |
		.spec.devices[] | select(.name == $d) | .taints[]? | "\(.key)=\(.value):\(.effect)"] | join(",")'
}
health_is() { [ "$(nic_health)" = "$1" ]; }
taint_is() { [ "$(nic_taint)" = "$1" ]; }
check "pod-h reports its NIC ($hdev) Healthy" wait_for 60 "Healthy" health_is Healthy
check "no taint on $hdev while its carrier is up" taint_is ""
ip -n "$FABRIC_NS" link set "${NIC_PREFIX}3f" down
check "carrier down: pod-h reports its NIC Unhealthy" wait_for 30 "Unhealthy" health_is Unhealthy
check "carrier down: $hdev tainted multinic.dev/unhealthy=CarrierDown:NoSchedule" wait_for 30 "taint" \
	taint_is "multinic.dev/unhealthy=CarrierDown:NoSchedule"
echo "pod-h allocatedResourcesStatus: $(kc -n "$NS" get pod pod-h -o jsonpath='{.status.containerStatuses[0].allocatedResourcesStatus}')"
echo "slice device $hdev taints: $(nic_taint)"
net_status() { kc get multinicnetwork "$HNET" -o jsonpath='{.status.readyNodes}/{.status.nodes} {.status.unhealthyDevices}/{.status.devices}'; }
status_is() { [ "$(net_status)" = "$1" ]; }
check "carrier down: $HNET counts 0/1 ready nodes and 1/1 unhealthy devices" wait_for 30 "network status" status_is "0/1 1/1"
kc describe multinicnetwork "$HNET"
ip -n "$FABRIC_NS" link set "${NIC_PREFIX}3f" up
check "carrier back: pod-h reports its NIC Healthy" wait_for 30 "Healthy again" health_is Healthy
check "carrier back: the taint is gone" wait_for 30 "no taint" taint_is ""
check "carrier back: $HNET counts 1/1 ready nodes and 0/1 unhealthy devices" wait_for 30 "network status" status_is "1/1 0/1"
kc -n "$NS" delete pod pod-h --wait=true --timeout=90s >/dev/null
kc delete multinicnetwork "$HNET" --wait=true --timeout=60s >/dev/null

scenario "9. shared NICs (consumable capacity): macvlan pods on one parent; --shared-pods 2 leaves the third Pending, 3 runs it"
# The plugin restarted with --shared-pods N publishes every NIC with allowMultipleAllocations and
# capacity multinic.dev/pods = N (a claim consumes 1 unless it asks for more).
SNET=e2e-shared
sdev=$(awk '$2 == 3 {print $1}' "$DEVMAP")
published_share() {
	kc get resourceslices -o json | jq -r --arg d "$sdev" '[.items[] | select(.spec.driver == "multinic.dev") |
		.spec.devices[] | select(.name == $d) |
		"\(.allowMultipleAllocations // false) \(.capacity["multinic.dev/pods"].value // "-")"] | join(",")'
}
share_is() { [ "$(published_share)" = "$1" ]; }
claim_shares() { # CLAIM: "ok" when its allocation result and its status entry carry one shareID
	kc -n "$NS" get resourceclaim "$1" -o json | jq -r '(.status.allocation.devices.results[0].shareID // "") as $s |
		if $s != "" and .status.devices[0].shareID == $s then "ok" else "no" end'
}
check "plugin rolled out with --shared-pods=2" shared_pods 2
check "$sdev published with allowMultipleAllocations and multinic.dev/pods 2" wait_for 60 "shared slice" share_is "true 2"
kc get resourceslices -o json | jq -c --arg d "$sdev" '.items[] | select(.spec.driver == "multinic.dev") |
	.spec.devices[] | select(.name == $d) | {name, allowMultipleAllocations, capacity}'
rail3_macvlan_network "$SNET" 10.79.0.0/16
template_yaml one-shared 1 "" "$SNET" | kc apply -f - >/dev/null
for p in pod-s1 pod-s2; do pod_yaml "$p" one-shared | kc apply -f - >/dev/null; done
for p in pod-s1 pod-s2; do check "$p Running (macvlan child of $sdev)" running 180 "$p"; done
pod_yaml pod-s3 one-shared | kc apply -f - >/dev/null
s3_reason() { kc -n "$NS" get pod pod-s3 -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].reason}'; }
s3_unschedulable() { [ "$(s3_reason)" = Unschedulable ]; }
check "pod-s3 unschedulable: $sdev has no multinic.dev/pods left" wait_for 60 "pod-s3 unschedulable" s3_unschedulable
echo "pod-s3 PodScheduled: $(kc -n "$NS" get pod pod-s3 -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].message}')"
check "pod-s3 Pending" [ "$(kc -n "$NS" get pod pod-s3 -o jsonpath='{.status.phase}')" = Pending ]
check "plugin rolled out with --shared-pods=3" shared_pods 3
check "pod-s3 Running once $sdev has room for 3" running 180 pod-s3
share_addrs=""
for p in pod-s1 pod-s2 pod-s3; do
	c=$(claim_of "$p")
	kc -n "$NS" get resourceclaim "$c" -o json | jq -c '{allocated: [.status.allocation.devices.results[] |
		{device, shareID, consumedCapacity}], status: [.status.devices[]? | {device, shareID, ips: .networkData.ips}]}'
	check "$p's claim: allocation result and status entry carry the same shareID" [ "$(claim_shares "$c")" = ok ]
	a=$(pexec "$p" ip -4 -o addr show net1 | awk '{print $4}')
	check "$p has net1 with an address of 10.79.0.0/16 (${a:-none})" grep -q '^10\.79\.' <<<"$a"
	share_addrs="$share_addrs $a"
done
distinct=$(tr ' ' '\n' <<<"$share_addrs" | sed '/^$/d' | sort -u | wc -l)
check "three pods on one parent, three addresses:$share_addrs" [ "$distinct" = 3 ]
kc -n "$NS" delete pod pod-s1 pod-s2 pod-s3 --wait=true --timeout=90s >/dev/null
check "plugin rolled out without --shared-pods" shared_pods ""
check "$sdev published unshared again" wait_for 60 "unshared slice" share_is "false -"
kc delete multinicnetwork "$SNET" --wait=true --timeout=60s >/dev/null
scenario "bench: multinic bench --rows 10 (pods with $RAILS NICs, host-device and macvlan, vs no claim), 2 runs"
# The cluster build's binary on the node; it applies and deletes its own networks and namespace.
# Timings are printed for the log, not checked.
bench_log=$LOGS/bench-podstart.log
"$TARGET_DIR/release/multinic" bench --rows 10 --runs 2 --nics "$RAILS" --kubeconfig "$KUBECONFIG" \
	--node "$NODE" --pod-image "$BUSYBOX_IMAGE" --kubelet-log "$LOGS/kubelet.log" \
	--containerd-log "$LOGS/containerd.log" --plot "$LOGS/bench-podstart.svg" >"$bench_log" 2>&1
rc=$?
cat "$bench_log"
check "it drew the pod-start panel of the figure (4 bars)" [ "$(grep -c 'data-bar=' "$LOGS/bench-podstart.svg")" = 4 ]
check "multinic bench --rows 10 exited 0 (exit $rc)" [ "$rc" = 0 ]
check "it printed the 6 rows of row 10" [ "$(grep -c '^| 10 ' "$bench_log")" = 6 ]
check "no row FAILED" sh -c "! grep -q FAILED '$bench_log'"
check "it left no namespace multinic-bench" sh -c "! '$K8S_BIN/kubectl' get ns multinic-bench"
check "it left no multinic-bench-* network" sh -c "! '$K8S_BIN/kubectl' get multinicnetworks -o name | grep -q multinic-bench"

# 10. Kueue queues Jobs with NIC claims (cpu quota, then Kueue's DRA quota mode).
# shellcheck source-path=SCRIPTDIR source=kueue.sh
. "$E2E_DIR/kueue.sh"

scenario "11. dual stack (examples/dual-stack): one pod, 2 NICs, an IPv4 and an IPv6 address on each, both in networkData"
kc apply -n "$NS" -f "$REPO/examples/dual-stack/network.yaml" >/dev/null
check "network dual-stack Ready" kc wait --for=condition=Ready multinicnetwork/dual-stack --timeout=90s
ds_blocks() { kc get nicnodeblocks "dual-stack.$NODE" -o json 2>/dev/null | jq -r '.spec.blocks[] | "\(.railIndex) \(.cidr)"'; }
ds_have_blocks() { [ "$(ds_blocks | wc -l)" -gt 0 ]; }
check "NicNodeBlocks dual-stack.$NODE written" wait_for 60 "dual-stack blocks" ds_have_blocks
ds_blocks
check "an IPv6 block (fd00:79::/64, /74) next to each IPv4 one" \
	[ "$(ds_blocks | grep -c ':.*/74$')" = "$(ds_blocks | grep -c '^[0-9]* 10\.79\.')" ]
pod_yaml pod-ds two-dual-stack | kc apply -f - >/dev/null
check "pod-ds Running" running 180 pod-ds
show pod-ds
if pod_running pod-ds; then
	ds_claim=$(kc -n "$NS" get resourceclaim "$(claim_of pod-ds)" -o json)
	jq '.status.devices' <<<"$ds_claim"
	# ds_match ND V4 V6: networkData lists the pod's IPv4 then its IPv6 address.
	ds_match() { [ -n "$2" ] && [ -n "$3" ] && [ "$1" = "$2 $3" ]; }
	ds_in_subnet6() { [[ $1 == fd00:79:*/74 ]]; }
	ds_usable() { [ -n "$1" ] && ! grep -Eq 'tentative|dadfailed' <<<"$1"; }
	for k in 1 2; do
		ifn=net$k
		nd=$(jq -r --arg i "$ifn" '.status.devices[] | select(.networkData.interfaceName == $i) | .networkData.ips | join(" ")' <<<"$ds_claim")
		v4=$(pexec pod-ds ip -o -4 addr show dev "$ifn" 2>/dev/null | awk '{print $4}' | head -n1)
		a6=$(pexec pod-ds ip -o -6 addr show dev "$ifn" 2>/dev/null | grep -v 'scope link')
		v6=$(awk '{print $4}' <<<"$a6" | head -n1)
		check "pod-ds: $ifn has $v4 and $v6 = networkData [$nd]" ds_match "$nd" "$v4" "$v6"
		check "pod-ds: $ifn's IPv6 address $v6 is in fd00:79::/64 with the /74 block prefix" ds_in_subnet6 "$v6"
		check "pod-ds: $ifn's IPv6 address is usable (not tentative, not dadfailed)" ds_usable "$a6"
		table=$((100 + k))
		check "pod-ds: $ifn routes fd00:79::/64 in its policy table $table" \
			sh -c "'$K8S_BIN/kubectl' -n $NS exec pod-ds -- ip -6 route show table $table | grep -q 'fd00:79::/64 dev $ifn'"
	done
fi
kc -n "$NS" delete pod pod-ds --wait=true --timeout=90s >/dev/null
kc -n "$NS" delete resourceclaimtemplate two-dual-stack --ignore-not-found >/dev/null
kc delete multinicnetwork dual-stack --wait=true --timeout=60s >/dev/null
check "NicNodeBlocks dual-stack.$NODE gone with its network" wait_for 60 "dual-stack blocks deleted" \
	sh -c "! '$K8S_BIN/kubectl' get nicnodeblocks dual-stack.$NODE >/dev/null 2>&1"

# Scenarios 12 (pool IPAM, examples/graphcore), 13 (examples/rail-gateways and
# examples/static-pod-addresses), 14 (bench rows 11-13 at a small size) and 15 (the admission
# policy that keeps each plugin pod to its own node's objects).
# shellcheck source-path=SCRIPTDIR source=pool.sh
. "$E2E_DIR/pool.sh"
# shellcheck source-path=SCRIPTDIR source=gateways.sh
. "$E2E_DIR/gateways.sh"
# shellcheck source-path=SCRIPTDIR source=scale.sh
. "$E2E_DIR/scale.sh"
# shellcheck source-path=SCRIPTDIR source=node-scope.sh
. "$E2E_DIR/node-scope.sh"

scenario "end: nothing leaked"
check "no plan files left" [ "$(plans)" = 0 ]
for ((k = 0; k < RAILS; k++)); do check "$NIC_PREFIX$k on the node" ip link show "$NIC_PREFIX$k"; done
kc delete ns "$NS" --wait=true --timeout=120s >/dev/null
kc delete multinicnetwork "$NET" ipvlan-l3 --wait=true --timeout=60s >/dev/null

echo
echo "test.sh: $failures failed check(s) in $((SECONDS - t0))s"
[ "$failures" = 0 ]
