# shellcheck shell=bash
# shellcheck disable=SC2034  # variables for the scripts that source this file
# Shared by up.sh, down.sh, test.sh: paths, logging, process supervision by PID.
# Everything the cluster writes is under $STATE (MULTINIC_E2E_STATE, default /var/lib/multinic-e2e),
# except the host paths the DaemonSet and the kubelet insist on; those are recorded in
# $STATE/created.list when up.sh creates them, and down.sh removes exactly those.

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_DIR/../.." && pwd)
CACHE=${MULTINIC_E2E_CACHE:-/var/cache/multinic-e2e}
STATE=${MULTINIC_E2E_STATE:-/var/lib/multinic-e2e}
export MULTINIC_E2E_CACHE=$CACHE
LOGS=$STATE/logs
RUN=$STATE/run
PKI=$STATE/pki
CTRD=$STATE/containerd
CTRD_SOCK=$CTRD/containerd.sock
NODE=127.0.0.1
FABRIC_NS=multinic-e2e-fabric
RAILS=${MULTINIC_E2E_RAILS:-4}
NIC_PREFIX=mnic
IMAGE=localhost/multinic-e2e/multinic:e2e
PAUSE_IMAGE=localhost/multinic-e2e/pause:1
BUSYBOX_IMAGE=localhost/multinic-e2e/busybox:1
EXAMPLES_BUSYBOX=docker.io/library/busybox:1.36
# The driver image is built from SRC (default: this clone) into TARGET_DIR.
SRC=${MULTINIC_E2E_SRC:-$REPO}
TARGET_DIR=${MULTINIC_E2E_TARGET_DIR:-/work/target-cluster}
HOST_SYSCTLS="net.ipv4.ip_forward vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes"
# The kubernetes Service's ClusterIP (first address of --service-cluster-ip-range).
SERVICE_IP=10.0.0.1

K8S_BIN=$("$E2E_DIR/build.sh" --bindir kubernetes)
ETCD_BIN=$("$E2E_DIR/build.sh" --bindir etcd)
CTRD_BIN=$("$E2E_DIR/build.sh" --bindir containerd)
RUNC_BIN=$("$E2E_DIR/build.sh" --bindir runc)
HELM_BIN=$("$E2E_DIR/build.sh" --bindir helm)
KUEUE_BIN=$("$E2E_DIR/build.sh" --bindir kueue)
export PATH="$K8S_BIN:$CTRD_BIN:$RUNC_BIN:$ETCD_BIN:$PATH"
export KUBECONFIG=$PKI/admin.kubeconfig
# How up.sh installs the driver (MULTINIC_E2E_INSTALL): `kustomize` (kubectl apply -k of the overlay
# in this directory) or `helm` (the chart deploy/helm/multinic-dra with values.yaml here, the same
# settings). up.sh records the one it used in $STATE/install, for down.sh.
INSTALL=${MULTINIC_E2E_INSTALL:-kustomize}
RELEASE=multinic-dra
CHART=$REPO/deploy/helm/multinic-dra
# Helm's cache, config and data (it keeps the release itself in the cluster) under $STATE.
export HELM_CACHE_HOME=$STATE/helm/cache HELM_CONFIG_HOME=$STATE/helm/config HELM_DATA_HOME=$STATE/helm/data

log() { printf '==> %s\n' "$*" >&2; }
die() {
	printf 'FAIL: %s\n' "$*" >&2
	exit 1
}

kc() { "$K8S_BIN/kubectl" "$@"; }
helm_() { "$HELM_BIN/helm" "$@"; }
ctr_() { "$CTRD_BIN/ctr" --address "$CTRD_SOCK" -n k8s.io "$@" 2> >(grep -v "DEPRECATION: The support for cgroup v1" >&2); }

# alive NAME: the process recorded in $RUN/NAME.pid runs.
alive() {
	local pid
	[ -s "$RUN/$1.pid" ] || return 1
	pid=$(cat "$RUN/$1.pid")
	kill -0 "$pid" 2>/dev/null
}

# start NAME CMD...: runs CMD in its own session, log in $LOGS/NAME.log, PID in $RUN/NAME.pid.
start() {
	local name=$1
	shift
	if alive "$name"; then
		log "$name already runs (pid $(cat "$RUN/$name.pid")), log $LOGS/$name.log"
		return 0
	fi
	mkdir -p "$LOGS" "$RUN"
	setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
	echo $! >"$RUN/$name.pid"
	log "$name started (pid $!), log $LOGS/$name.log"
}

# stop NAME: SIGTERM, then SIGKILL after 20 s, by the recorded PID only.
stop() {
	local name=$1 pid i
	[ -s "$RUN/$name.pid" ] || return 0
	pid=$(cat "$RUN/$name.pid")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 200; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "$name (pid $pid) ignored SIGTERM for 20 s, killing"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.5
		fi
	fi
	rm -f "$RUN/$name.pid"
}

# wait_for SECONDS DESCRIPTION CMD...: polls CMD every 0.5 s.
wait_for() {
	local t=$1 what=$2 deadline
	shift 2
	deadline=$((SECONDS + t))
	until "$@" >/dev/null 2>&1; do
		[ "$SECONDS" -lt "$deadline" ] || { log "timed out after ${t}s waiting for $what"; return 1; }
		sleep 0.5
	done
}

# ensure_dir PATH: mkdir -p, recording the topmost directory it created in $STATE/created.list.
ensure_dir() {
	local d=$1 top=""
	while [ ! -e "$d" ]; do
		top=$d
		d=$(dirname "$d")
	done
	if [ -n "$top" ]; then
		mkdir -p "$1"
		grep -qxF "$top" "$STATE/created.list" 2>/dev/null || echo "$top" >>"$STATE/created.list"
	fi
}

# record KEY VALUE: remember a host setting before up.sh changes it (first value wins).
record() {
	grep -q "^$1=" "$STATE/host.before" 2>/dev/null || echo "$1=$2" >>"$STATE/host.before"
}
recorded() { sed -n "s/^$1=//p" "$STATE/host.before" 2>/dev/null; }

kubelet_start() {
	start kubelet "$K8S_BIN/kubelet" --config="$STATE/kubelet.yaml" \
		--kubeconfig="$PKI/kubelet.kubeconfig" --hostname-override="$NODE" --v=2
}

# Kueue (host process, admin kubeconfig, no webhooks: Jobs are created suspended with the
# queue-name label). up.sh writes $KUEUE_DIR/{cpu,dra}.yaml; kueue.sh switches between the two.
KUEUE_DIR=$STATE/kueue
KUEUE_HEALTH=127.0.0.1:18081
# kueue_config EXTRA-FEATURE-GATES [EXTRA-YAML]: the Configuration (config.kueue.x-k8s.io/v1beta2,
# fields of kubernetes-sigs/kueue apis/config/v1beta2/configuration_types.go, v0.17.0).
# VisibilityOnDemand off: no visibility API server (it needs its own certs and an APIService).
kueue_config() {
	cat <<EOF
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
leaderElection: {leaderElect: false}
internalCertManagement: {enable: false}
health: {healthProbeBindAddress: "$KUEUE_HEALTH"}
metrics: {bindAddress: "127.0.0.1:18443"}
webhook: {host: 127.0.0.1, port: 19443, certDir: "$KUEUE_DIR/certs"}
integrations: {frameworks: ["batch/job"]}
featureGates: {VisibilityOnDemand: false$1}
${2:-}
EOF
}
kueue_start() { # cpu | dra
	start kueue "$KUEUE_BIN/kueue" --config="$KUEUE_DIR/$1.yaml" --kubeconfig="$PKI/admin.kubeconfig"
}
kueue_ready() { curl -fsS "http://$KUEUE_HEALTH/readyz" >/dev/null 2>&1; }
