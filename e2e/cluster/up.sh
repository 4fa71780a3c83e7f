#!/usr/bin/env bash
# Brings up a one-node Kubernetes on loopback, as root: etcd, kube-apiserver (Node,RBAC authz,
# ServiceAccount tokens), kube-controller-manager, kube-scheduler, containerd (CDI on) + runc, a
# kubelet on cgroupfs (node name 127.0.0.1); Kueue v0.17 as a host process (CRDs, no webhooks; for
# kueue.sh); veth "NICs" mnic0..mnic{RAILS-1} whose peers sit in netns multinic-e2e-fabric; a
# bridge+host-local primary conflist; then installs the driver, so
# the plugin runs as the DaemonSet pod and chains multinic-cni into the conflist:
#   MULTINIC_E2E_INSTALL=kustomize (default): deploy/ through the overlay here (`kubectl apply -k`)
#   MULTINIC_E2E_INSTALL=helm: `helm upgrade --install` of deploy/helm/multinic-dra with values.yaml
#     here (the overlay's settings; deploy/helm/check.sh checks both render the same objects).
# Idempotent: what runs is left alone (switching the install method needs down.sh first).
# Binaries come from build.sh's cache (run it first; up.sh runs it, a no-op when cached).
# State, logs and PIDs: $MULTINIC_E2E_STATE (default /var/lib/multinic-e2e). Undo: down.sh.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "up.sh needs root"
t0=$SECONDS
"$E2E_DIR/build.sh"

mkdir -p "$STATE" "$LOGS" "$RUN" "$PKI"
chmod 0700 "$STATE"

# --- host preparation --------------------------------------------------------------------------
[ -e /dev/kmsg ] || die "/dev/kmsg is missing (the kubelet's OOM watcher needs it)"
[ -s /etc/machine-id ] || die "/etc/machine-id is empty"
# What down.sh restores: mount propagation of every mount, the iptables rules, ip_forward.
[ -s "$STATE/mounts.before" ] || findmnt -rno TARGET,PROPAGATION >"$STATE/mounts.before"
[ -s "$STATE/iptables.before" ] || iptables-save >"$STATE/iptables.before"
[ "$(findmnt -no PROPAGATION /)" = shared ] || mount --make-rshared /
# Sysctls the bridge plugin (ip_forward) and the kubelet (protectKernelDefaults: false) change.
for k in $HOST_SYSCTLS; do
	v=$(sysctl -n "$k" 2>/dev/null) && record "sysctl.$k" "$v"
done
for d in /var/lib/kubelet /etc/cni/net.d /opt/cni/bin /var/run/cdi /var/lib/multinic \
	/run/containerd /var/log/containers /var/lib/cni; do
	ensure_dir "$d"
done

# --- PKI: one CA, one client cert per identity, one SA key -------------------------------------
sign() { # name subject extensions
	[ -s "$PKI/$1.crt" ] && return 0
	openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$PKI/$1.key" -out "$PKI/$1.csr" 2>/dev/null
	openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
		-days 30 -out "$PKI/$1.crt" -extfile <(printf '%b' "$3") 2>/dev/null
	rm -f "$PKI/$1.csr"
}
kubeconfig() { # name cert-name
	cat >"$PKI/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "https://127.0.0.1:6443", certificate-authority: "$PKI/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$PKI/$2.crt", client-key: "$PKI/$2.key"}
contexts:
- name: e2e
  context: {cluster: e2e, user: $1}
current-context: e2e
EOF
}
if [ ! -s "$PKI/ca.crt" ]; then
	openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=multinic-e2e-ca \
		-keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
fi
sign apiserver /CN=kube-apiserver "subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:$SERVICE_IP\nextendedKeyUsage=serverAuth"
sign admin "/O=system:masters/CN=multinic-e2e-admin" extendedKeyUsage=clientAuth
sign kcm /CN=system:kube-controller-manager extendedKeyUsage=clientAuth
sign scheduler /CN=system:kube-scheduler extendedKeyUsage=clientAuth
sign kubelet "/O=system:nodes/CN=system:node:$NODE" extendedKeyUsage=clientAuth
sign apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client" extendedKeyUsage=clientAuth
[ -s "$PKI/sa.key" ] || openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
kubeconfig admin admin
kubeconfig kcm kcm
kubeconfig scheduler scheduler
kubeconfig kubelet kubelet

# --- control plane ------------------------------------------------------------------------------
start etcd "$ETCD_BIN/etcd" --name=e2e --data-dir="$STATE/etcd" \
	--listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
	--listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
	--initial-cluster=e2e=http://127.0.0.1:2380 --log-level=warn --unsafe-no-fsync
wait_for 60 "etcd health" curl -fsS http://127.0.0.1:2379/health

start kube-apiserver "$K8S_BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
	--bind-address=127.0.0.1 --secure-port=6443 --endpoint-reconciler-type=none \
	--tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
	--client-ca-file="$PKI/ca.crt" \
	--kubelet-client-certificate="$PKI/apiserver-kubelet.crt" --kubelet-client-key="$PKI/apiserver-kubelet.key" \
	--service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$PKI/sa.key" \
	--service-account-signing-key-file="$PKI/sa.key" --service-cluster-ip-range=10.0.0.0/24 \
	--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
	--allow-privileged=true --v=1
wait_for 120 "kube-apiserver /readyz" kc get --raw /readyz

start kube-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig="$PKI/kcm.kubeconfig" \
	--authentication-kubeconfig="$PKI/kcm.kubeconfig" --authorization-kubeconfig="$PKI/kcm.kubeconfig" \
	--bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials \
	--controllers='*' --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
	--cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" --v=1

cat >"$STATE/scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection: {kubeconfig: "$PKI/scheduler.kubeconfig"}
leaderElection: {leaderElect: false}
EOF
start kube-scheduler "$K8S_BIN/kube-scheduler" --config="$STATE/scheduler.yaml" \
	--authentication-kubeconfig="$PKI/scheduler.kubeconfig" \
	--authorization-kubeconfig="$PKI/scheduler.kubeconfig" --bind-address=127.0.0.1 --v=1

# --- Kueue v0.17 as a host process (kueue.sh): CRDs, namespace, serving certs, config ---------
# With internalCertManagement off, kubernetes-sigs/kueue v0.17.0 cmd/kueue/main.go reads the
# metrics cert from the fixed /etc/kueue/metrics/certs/tls.{crt,key}; the webhook server (no
# webhook is registered in the API server) reads webhook.certDir.
kc apply --server-side --force-conflicts -f "$KUEUE_BIN/crd" >"$LOGS/kueue-crds.log"
# Before Kueue starts: it exits when a kind is not served yet ("Unable to setup indexes ... no
# matches for kind \"Workload\"", seen on a fresh API server right after the apply).
kc wait --for=condition=Established -f "$KUEUE_BIN/crd" --timeout=60s >>"$LOGS/kueue-crds.log"
kc get ns kueue-system >/dev/null 2>&1 || kc create ns kueue-system >/dev/null
sign kueue /CN=kueue "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"
ensure_dir /etc/kueue/metrics/certs
mkdir -p "$KUEUE_DIR/certs"
for d in /etc/kueue/metrics/certs "$KUEUE_DIR/certs"; do
	install -m 0600 "$PKI/kueue.crt" "$d/tls.crt"
	install -m 0600 "$PKI/kueue.key" "$d/tls.key"
done
kueue_config "" >"$KUEUE_DIR/cpu.yaml"
kueue_start cpu
wait_for 120 "Kueue /readyz" kueue_ready || { tail -n 30 "$LOGS/kueue.log" >&2; die "Kueue is not ready"; }

# --- node network: primary bridge, the kubernetes Service, veth NICs ----------------------------
# No kube-proxy: the kubernetes Service's ClusterIP is DNATed to the loopback API server, so the
# in-cluster config of deploy/'s pods works unchanged (hostNetwork pods via OUTPUT, pod-network
# pods via PREROUTING on cni0, which needs route_localnet there). The bridge exists before the
# first pod so the sysctl can be set; the bridge plugin adopts it.
ip link show cni0 >/dev/null 2>&1 || ip link add cni0 type bridge
ip link set cni0 up
sysctl -qw net.ipv4.conf.cni0.route_localnet=1
for chain in OUTPUT PREROUTING; do
	args=(-d "$SERVICE_IP/32" -p tcp --dport 443 -m comment --comment multinic-e2e -j DNAT --to-destination 127.0.0.1:6443)
	[ "$chain" = PREROUTING ] && args=(-i cni0 "${args[@]}")
	iptables -t nat -C "$chain" "${args[@]}" 2>/dev/null || iptables -t nat -A "$chain" "${args[@]}"
done

ip netns list | grep -qw "$FABRIC_NS" || ip netns add "$FABRIC_NS"
ip -n "$FABRIC_NS" link set lo up
for ((k = 0; k < RAILS; k++)); do
	nic=$NIC_PREFIX$k
	# A NIC may be inside a pod right now (a rerun of up.sh): its fabric peer exists then.
	if ! ip link show "$nic" >/dev/null 2>&1 && ! ip -n "$FABRIC_NS" link show "${nic}f" >/dev/null 2>&1; then
		# Created in the root netns, then moved. (The plugin ignores a veth's IFLA_LINK when
		# IFLA_LINK_NETNSID says the peer is in another netns; it once read it as a local
		# parent and excluded a NIC whose peer's ifindex equalled the uplink's.)
		ip link add "$nic" type veth peer name "${nic}f"
		ip link set "${nic}f" netns "$FABRIC_NS"
	fi
	ip link show "$nic" >/dev/null 2>&1 && ip link set "$nic" up
	ip -n "$FABRIC_NS" link set "${nic}f" up
done

mkdir -p "$STATE/cni-ipam"
conflist=/etc/cni/net.d/10-multinic-e2e.conflist
if [ ! -e "$conflist" ]; then
	cat >"$conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "multinic-e2e",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
      "ipam": {
        "type": "host-local", "dataDir": "$STATE/cni-ipam",
        "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
fi

# --- containerd + runc -------------------------------------------------------------------------
mkdir -p "$CTRD"
cat >"$CTRD/config.toml" <<EOF
version = 3
root = "$CTRD/root"
state = "$CTRD/state"
[grpc]
  address = "$CTRD_SOCK"
[plugins.'io.containerd.internal.v1.opt']
  path = "$CTRD/opt"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '$PAUSE_IMAGE'
[plugins.'io.containerd.cri.v1.runtime']
  enable_cdi = true
  cdi_spec_dirs = ['/etc/cdi', '/var/run/cdi']
  disable_apparmor = true
  # Root here lacks CAP_SYS_RESOURCE, so runc cannot lower oom_score_adj (the sandbox's -998
  # fails with "failed to update /proc/self/oom_score_adj: Permission denied"); clamp it to ours.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '$RUNC_BIN/runc'
        Root = '$CTRD/runc'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/opt/cni/bin', '/usr/lib/cni']
    conf_dir = '/etc/cni/net.d'
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
EOF
start containerd "$CTRD_BIN/containerd" --config "$CTRD/config.toml"
wait_for 60 "containerd socket" ctr_ version

have_image() { ctr_ images ls -q | grep -qxF "$1"; }
have_image "$PAUSE_IMAGE" || "$E2E_DIR/images.sh" pause
have_image "$BUSYBOX_IMAGE" || "$E2E_DIR/images.sh" busybox
# The examples name upstream's busybox (examples/quickstart/pod.yaml, imagePullPolicy IfNotPresent);
# here that name is the local busybox image, so they run unchanged with no registry.
if ! have_image "$EXAMPLES_BUSYBOX"; then
	ctr_ images tag "$BUSYBOX_IMAGE" "$EXAMPLES_BUSYBOX" >/dev/null
	ctr_ images label "$EXAMPLES_BUSYBOX" io.cri-containerd.pinned=pinned >/dev/null
fi
# The driver image is rebuilt every run (cargo is incremental); the DaemonSet and the Deployment
# are restarted below when its content changed.
old_image=$(ctr_ images ls | awk -v r="$IMAGE" '$1 == r {print $3}')
if [ "${MULTINIC_E2E_KEEP_IMAGE:-0}" = 1 ] && [ -n "$old_image" ]; then
	log "MULTINIC_E2E_KEEP_IMAGE=1: keeping the imported $IMAGE"
else
	"$E2E_DIR/images.sh" multinic
fi
new_image=$(ctr_ images ls | awk -v r="$IMAGE" '$1 == r {print $3}')

# --- kubelet -----------------------------------------------------------------------------------
cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
readOnlyPort: 0
containerRuntimeEndpoint: unix://$CTRD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: /
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
rotateCertificates: false
podLogsDir: $STATE/pod-logs
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
kubelet_start
wait_for 120 "node $NODE Ready" sh -c "'$K8S_BIN/kubectl' get node '$NODE' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"

# --- the driver, installed the way a user installs it -------------------------------------------
installed=$(cat "$STATE/install" 2>/dev/null || true)
[ -z "$installed" ] || [ "$installed" = "$INSTALL" ] ||
	die "the driver was installed with $installed, not $INSTALL: run down.sh first"
case $INSTALL in
kustomize) install_cmd=(kc apply -k "$E2E_DIR") ;;
helm)
	install_cmd=(helm_ upgrade --install "$RELEASE" "$CHART" --namespace multinic-system --create-namespace
		--values "$E2E_DIR/values.yaml")
	;;
*) die "MULTINIC_E2E_INSTALL must be kustomize or helm, not $INSTALL" ;;
esac
echo "$INSTALL" >"$STATE/install"
log "installing the driver with $INSTALL"
"${install_cmd[@]}" >"$LOGS/install.log" 2>&1 || { cat "$LOGS/install.log" >&2; die "$INSTALL install failed"; }
if [ -n "$old_image" ] && [ "$old_image" != "$new_image" ]; then
	log "driver image changed ($old_image -> $new_image): restarting the driver pods"
	kc -n multinic-system rollout restart daemonset/multinic-kubelet-plugin deployment/multinic-controller >/dev/null
fi
kc -n multinic-system rollout status daemonset/multinic-kubelet-plugin --timeout=180s ||
	{ kc -n multinic-system describe pods >&2; die "the plugin DaemonSet did not roll out"; }
kc -n multinic-system rollout status deployment/multinic-controller --timeout=180s ||
	{ kc -n multinic-system describe pods >&2; die "the controller Deployment did not roll out"; }

log "cluster up in $((SECONDS - t0))s; KUBECONFIG=$KUBECONFIG; kubectl: $K8S_BIN/kubectl"
log "logs: $(for f in etcd kube-apiserver kube-controller-manager kube-scheduler kueue containerd kubelet; do printf '%s ' "$LOGS/$f.log"; done)"
log "driver logs: kubectl -n multinic-system logs ds/multinic-kubelet-plugin | deploy/multinic-controller (files under $STATE/pod-logs)"
