# shellcheck shell=bash
# Scenario 15 of test.sh (sourced by it: uses check, scenario, kc, plugin_log, $NODE, $NET, $PKI,
# $STATE, $K8S_BIN): deploy/kubelet-plugin-policy.yaml on the real API server. Every write below is
# a server dry run (admission runs, nothing is stored), made with a token of the plugin's
# ServiceAccount and nothing else:
#   15a. bound to the plugin's DaemonSet pod (so naming this node): the status of this node's
#        NicNodeBlocks and a ResourceSlice of this node are accepted;
#   15b. the same token: another node's NicNodeBlocks status and ResourceSlice are refused, by the
#        policy, naming both nodes;
#   15c. a token bound to no pod (no node in it): refused even for this node;
#   15d. the plugin's own writes since it started were never refused.
# Deletes the other node's NicNodeBlocks it creates.

OTHER=node-scope-other
scope_pod=$(kc -n multinic-system get pods -l app.kubernetes.io/name=multinic-kubelet-plugin \
	-o jsonpath='{.items[0].metadata.name}')
scope_kubeconfig="$STATE/node-scope.kubeconfig"
# as TOKEN ARGS...: kubectl with that token as the only credential (the admin kubeconfig's client
# certificate would authenticate first).
as() {
	local token=$1
	shift
	cat >"$scope_kubeconfig" <<-KC
		apiVersion: v1
		kind: Config
		clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", certificate-authority: "$PKI/ca.crt"}}]
		users: [{name: u, user: {token: "$token"}}]
		contexts: [{name: c, context: {cluster: c, user: u}}]
		current-context: c
	KC
	"$K8S_BIN/kubectl" --kubeconfig="$scope_kubeconfig" "$@"
}
# status_write TOKEN NODE: dry-run server-side apply (the plugin's write: RBAC grants it patch,
# not get) of the status of NicNodeBlocks $NET.NODE, wantBlocks 0.
status_write() {
	as "$1" apply --server-side --subresource=status --field-manager=node-scope --dry-run=server \
		-f - 2>&1 <<-STATUS
		{"apiVersion": "multinic.dev/v1alpha1", "kind": "NicNodeBlocks", "metadata": {"name": "$NET.$2"},
		 "status": {"wantBlocks": 0}}
	STATUS
}
# slice_write TOKEN NODE: dry-run create of a ResourceSlice of NODE in the driver's own pool.
slice_write() {
	as "$1" create --dry-run=server -o name -f - 2>&1 <<-SLICE
		{"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
		 "metadata": {"name": "node-scope-$2"},
		 "spec": {"driver": "multinic.dev", "nodeName": "$2",
		          "pool": {"name": "$2", "generation": 1, "resourceSliceCount": 1}, "devices": []}}
	SLICE
}
# refused_by_policy OUTPUT...: the API server's answer names the policy and the two nodes.
refused_by_policy() {
	local out="$1" want
	shift
	echo "$out"
	for want in "ValidatingAdmissionPolicy 'multinic-kubelet-plugin-own-node'" "$@"; do
		grep -qF -- "$want" <<<"$out" || return 1
	done
}

scenario "15a. the plugin pod's own token writes its own node's slice and NicNodeBlocks status"
pod_token=$(kc -n multinic-system create token multinic-kubelet-plugin --duration=10m \
	--bound-object-kind=Pod --bound-object-name="$scope_pod")
kc apply -f - >/dev/null <<-OBJ
	{"apiVersion": "multinic.dev/v1alpha1", "kind": "NicNodeBlocks", "metadata": {"name": "$NET.$OTHER"},
	 "spec": {"network": "$NET", "nodeName": "$OTHER", "hostIndex": 0, "blocks": []}}
OBJ
out=$(status_write "$pod_token" "$NODE")
echo "$out"
check "status of NicNodeBlocks $NET.$NODE accepted" grep -q "serverside-applied" <<<"$out"
out=$(slice_write "$pod_token" "$NODE")
echo "$out"
check "ResourceSlice of node $NODE accepted" grep -q "resourceslice.resource.k8s.io/node-scope-$NODE" <<<"$out"

scenario "15b. the same token is refused another node's NicNodeBlocks status and slice"
check "status of NicNodeBlocks $NET.$OTHER refused by the policy" \
	refused_by_policy "$(status_write "$pod_token" "$OTHER")" "on node $NODE" "of node \"$OTHER\""
check "ResourceSlice of node $OTHER refused by the policy" \
	refused_by_policy "$(slice_write "$pod_token" "$OTHER")" "on node $NODE" "of node \"$OTHER\""

scenario "15c. a token of the ServiceAccount bound to no pod names no node: refused"
bare_token=$(kc -n multinic-system create token multinic-kubelet-plugin --duration=10m)
check "status of NicNodeBlocks $NET.$NODE refused without a node in the token" \
	refused_by_policy "$(status_write "$bare_token" "$NODE")" "this token names no node"

scenario "15d. nothing the plugin wrote was refused"
check "no refusal by the policy in the plugin's log" \
	sh -c "! grep -F multinic-kubelet-plugin-own-node '$STATE'/pod-logs/multinic-system_multinic-kubelet-plugin-*/plugin/*.log"
kc delete nicnodeblocks "$NET.$OTHER" --ignore-not-found >/dev/null
rm -f "$scope_kubeconfig"
