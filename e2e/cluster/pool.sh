# shellcheck shell=bash
# Scenario 12 of test.sh (sourced by it: uses check, scenario, running, show, pexec, pod_yaml,
# template_yaml, shared_pods, $NS, $NODE, $REPO, $LOGS, $KUBECONFIG): `pool` IPAM, one subnet
# shared by all nodes and granted to them in blocks on demand (issue 16 item 5), and the
# Graphcore example (item 7).
#   12a. testkit/tests/pool.rs against this API server with the deployed controller: three Node
#        objects of its own, a range too small for fixed per-host blocks, three node-side clients
#        built on the plugin's pool code drawing until exhausted, then giving blocks back.
#   12b. a real pod on the node: a macvlan child of rail 3 with an address of the pool, from the
#        block granted to the node (NicNodeBlocks spec.grantedBlocks), its request in the status.
#   12c. examples/graphcore: every file server-dry-run as is; then applied with its selector
#        overlaid by rail 3 (the e2e NICs are veths, not RDMA), the plugin with --shared-pods (the
#        claim template asks for a multinic.dev/pods slot), and its pod gets 10.5.0.128/24.
# Deletes what it creates.

scenario "12a. pool IPAM: 3 nodes share a range too small for fixed blocks (testkit/tests/pool.rs, deployed controller)"
pool_log=$LOGS/pool-suite.log
(cd "$REPO" && MULTINIC_E2E_KUBECONFIG=$KUBECONFIG cargo test -p multinic-testkit --features real-cluster \
	--test pool --locked -- --nocapture) >"$pool_log" 2>&1
rc=$?
grep -E '^(drawn in|grants:|after a freed)|^test |^test result:|panicked' "$pool_log"
[ "$rc" = 0 ] || tail -n 40 "$pool_log"
check "testkit/tests/pool.rs passed against the real API server (exit $rc, log $pool_log)" [ "$rc" = 0 ]
check "it left no pool-rapi node" sh -c "! '$K8S_BIN/kubectl' get nodes -o name | grep -q pool-rapi"

scenario "12b. pool IPAM: a pod on the node gets an address of the pool from the node's granted block"
PNET=e2e-pool
kc apply -f - >/dev/null <<YAML
apiVersion: multinic.dev/v1alpha1
kind: MultiNicNetwork
metadata: {name: $PNET}
spec:
  selector: 'device.attributes["multinic.dev"].railIndex == 3'
  attachment: {mode: macvlan}
  ipam: {type: pool, subnet: 10.97.0.0/24, blockPrefix: 28, exclude: [10.97.0.0/25]}
YAML
check "network $PNET Ready" kc wait --for=condition=Ready "multinicnetwork/$PNET" --timeout=90s
pool_granted() { kc get nicnodeblocks "$PNET.$NODE" -o jsonpath='{.spec.grantedBlocks[*]}' 2>/dev/null; }
pool_has_block() { [ -n "$(pool_granted)" ]; }
check "the node asked for a block before any pod and got one" wait_for 60 "a grant" pool_has_block
kc get nicnodeblocks "$PNET.$NODE" -o json | jq -c '{spec: {grantedBlocks: .spec.grantedBlocks}, status}'
template_yaml one-pool 1 "" "$PNET" | kc apply -f - >/dev/null
pod_yaml pod-p one-pool | kc apply -f - >/dev/null
check "pod-p Running (macvlan on rail 3, pool IPAM)" running 180 pod-p
show pod-p
pa=$(pexec pod-p ip -4 -o addr show net1 | awk '{print $4}')
pnd=$(kc -n "$NS" get resourceclaim "$(claim_of pod-p)" -o jsonpath='{.status.devices[0].networkData.ips[0]}')
same_addr() { [ -n "$1" ] && [ "$1" = "$2" ]; }
check "pod-p's net1 has ${pa:-none} = networkData ${pnd:-none}" same_addr "$pa" "$pnd"
pblock=$(pool_granted | awk '{print $1}')
check "its address is the first of the first granted block $pblock, with the pool's /24 prefix" \
	[ "$pa" = "${pblock%/28}/24" ]
kc -n "$NS" delete pod pod-p --wait=true --timeout=90s >/dev/null
kc -n "$NS" delete resourceclaimtemplate one-pool --ignore-not-found >/dev/null
kc delete multinicnetwork "$PNET" --wait=true --timeout=60s >/dev/null
check "NicNodeBlocks $PNET.$NODE gone with its network" wait_for 60 "pool blocks deleted" \
	sh -c "! '$K8S_BIN/kubectl' get nicnodeblocks $PNET.$NODE >/dev/null 2>&1"

scenario "12c. examples/graphcore: server dry-run as is, then a pod on rail 3 (selector overlay: the NICs are veths) with --shared-pods"
GC=$REPO/examples/graphcore
check "examples/graphcore/*.yaml accepted by the API server (--dry-run=server)" \
	kc apply -n "$NS" --dry-run=server -f "$GC/network.yaml" -f "$GC/claim-template.yaml" -f "$GC/pod.yaml"
check "plugin rolled out with --shared-pods=2" shared_pods 2
sed 's|^  selector: .*|  selector: '"'"'device.attributes["multinic.dev"].railIndex == 3'"'"'|' "$GC/network.yaml" |
	kc apply -f - >/dev/null
check "network graphcore-rdma Ready" kc wait --for=condition=Ready multinicnetwork/graphcore-rdma --timeout=90s
kc apply -n "$NS" -f "$GC/claim-template.yaml" -f "$GC/pod.yaml" >/dev/null
check "graphcore-worker Running (not privileged, IPC_LOCK only)" running 180 graphcore-worker
show graphcore-worker
gl() { kc -n "$NS" logs graphcore-worker 2>&1 | grep -q 'inet 10\.5\.0\.128/24'; }
check "graphcore-worker's log shows net1 10.5.0.128/24 (the first address past the excluded /25)" \
	wait_for 30 "graphcore log" gl
kc -n "$NS" logs graphcore-worker 2>&1 | grep -E 'net1|inet '
kc -n "$NS" delete -f "$GC/pod.yaml" --wait=true --timeout=90s >/dev/null
kc -n "$NS" delete -f "$GC/claim-template.yaml" --ignore-not-found >/dev/null
kc delete multinicnetwork graphcore-rdma --wait=true --timeout=60s >/dev/null
check "plugin rolled out without --shared-pods" shared_pods ""
