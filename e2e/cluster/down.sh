#!/usr/bin/env bash
# Stops what up.sh started and undoes what it changed: pods are deleted through the API first (so
# CNI DEL and NodeUnprepareResources run; the driver by `helm uninstall` when up.sh installed it
# with Helm, then `kubectl delete -k`), then the kubelet, containerd and the control plane are
# stopped by PID; whatever a crash left behind is swept: container processes (by their kubepods
# cgroup), mounts, netns, links, iptables rules and chains, cgroups, sysctls, mount propagation and
# the host directories up.sh created. Keeps the build cache and $STATE/logs; removes the rest of
# $STATE. Safe to run twice, or after a failed up.sh.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "down.sh needs root"
[ -d "$STATE" ] || { log "nothing to do ($STATE does not exist)"; exit 0; }
t0=$SECONDS

# --- 1. graceful: pods go away through the kubelet while everything runs ------------------------
if alive kube-apiserver && alive kubelet && kc get --raw /readyz >/dev/null 2>&1; then
	log "deleting workload namespaces, then the driver"
	for ns in $(kc get ns -o name 2>/dev/null | sed 's|namespace/||'); do
		case $ns in kube-system | kube-public | kube-node-lease | multinic-system) continue ;; esac
		kc -n "$ns" delete pods --all --wait=false >/dev/null 2>&1
	done
	wait_for 90 "workload pods to go" sh -c \
		"! '$K8S_BIN/kubectl' get pods -A --no-headers 2>/dev/null | grep -v '^multinic-system '" ||
		kc get pods -A -o wide >&2
	# A Helm release first (Helm keeps the CRDs and does not own the namespace); then the objects
	# of the overlay, which for a Helm install are just those two.
	if [ "$(cat "$STATE/install" 2>/dev/null)" = helm ]; then
		helm_ uninstall "$RELEASE" --namespace multinic-system >/dev/null 2>&1 || log "helm uninstall failed"
	fi
	kc delete -k "$E2E_DIR" --ignore-not-found --wait=false >/dev/null 2>&1
	wait_for 60 "driver pods to go" sh -c \
		"[ -z \"\$('$K8S_BIN/kubectl' get pods -A --no-headers 2>/dev/null)\" ]" || kc get pods -A -o wide >&2
fi

# --- 2. processes, in reverse start order ------------------------------------------------------
stop kueue
stop kubelet
if alive containerd; then
	# Sandboxes the kubelet did not stop: kill their tasks so the shims exit.
	for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1; done
	sleep 1
	for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id" >/dev/null 2>&1; done
fi
stop containerd
for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$name"; done

# Container processes and shims that outlived containerd: found by their kubepods cgroup and by
# the shim binary of our cache, killed by PID.
pids=""
while read -r procs; do pids="$pids $(cat "$procs")"; done < <(find /sys/fs/cgroup/*/kubepods -name cgroup.procs 2>/dev/null)
for p in /proc/[0-9]*; do
	[ "$(readlink "$p/exe" 2>/dev/null)" = "$CTRD_BIN/containerd-shim-runc-v2" ] && pids="$pids ${p#/proc/}"
done
pids=$(echo "$pids" | tr ' ' '\n' | sort -un | grep -v '^$' || true)
if [ -n "$pids" ]; then
	log "killing leftover container processes and shims: $(echo "$pids" | tr '\n' ' ')"
	# shellcheck disable=SC2086
	kill -KILL $pids 2>/dev/null
	sleep 1
fi

# --- 3. mounts (deepest first), netns, links ---------------------------------------------------
while read -r m; do
	umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
done < <(awk '{print $5}' /proc/self/mountinfo |
	grep -E "^(/var/lib/kubelet|$STATE|/run/containerd|/run/netns/cni-|/var/run/netns/cni-)" | sort -r)
for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
	case $ns in cni-* | "$FABRIC_NS") ip netns delete "$ns" 2>/dev/null || log "cannot delete netns $ns" ;; esac
done
for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
	case $l in cni0 | "$NIC_PREFIX"[0-9]*) ip link delete "$l" 2>/dev/null ;; esac
done

# --- 4. iptables: our rules, and chains that did not exist before up.sh -------------------------
for table in nat filter mangle; do
	while read -r rule; do
		# shellcheck disable=SC2086
		[ -n "$rule" ] && iptables -t "$table" ${rule/-A/-D}
	done < <(iptables -t "$table" -S 2>/dev/null | grep -e '--comment multinic-e2e' || true)
done
if [ -s "$STATE/iptables.before" ]; then
	for table in nat filter mangle; do
		for chain in $(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" {print $2}'); do
			grep -q "^:$chain " <(sed -n "/^\*$table\$/,/^COMMIT/p" "$STATE/iptables.before") && continue
			# Rules jumping to it first, then the chain.
			while read -r rule; do
				# shellcheck disable=SC2086
				[ -n "$rule" ] && iptables -t "$table" ${rule/-A/-D}
			done < <(iptables -t "$table" -S 2>/dev/null | grep -E -- "-j $chain( |\$)" || true)
			iptables -t "$table" -F "$chain" 2>/dev/null
			iptables -t "$table" -X "$chain" 2>/dev/null || log "cannot delete chain $table/$chain"
		done
	done
fi

# --- 5. cgroups the kubelet made (deepest first) -----------------------------------------------
for c in /sys/fs/cgroup/*/kubepods; do
	[ -d "$c" ] || continue
	find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || log "cannot remove all of $c"
done

# --- 6. sysctls, mount propagation, host directories --------------------------------------------
for k in $HOST_SYSCTLS; do
	v=$(recorded "sysctl.$k")
	[ -n "$v" ] && [ "$(sysctl -n "$k" 2>/dev/null)" != "$v" ] && sysctl -qw "$k=$v"
done
if [ -s "$STATE/mounts.before" ]; then
	while read -r target prop; do
		now=$(findmnt -no PROPAGATION --mountpoint "$target" 2>/dev/null | head -n1)
		[ -n "$now" ] && [ "$now" != "$prop" ] && mount --make-"$prop" "$target"
	done <"$STATE/mounts.before"
fi
# Files up.sh and the init container write into directories that may have existed before.
rm -f /etc/cni/net.d/10-multinic-e2e.conflist /opt/cni/bin/multinic-cni
if [ -s "$STATE/created.list" ]; then
	while read -r d; do
		[ -n "$d" ] && [ "$d" != / ] && rm -rf --one-file-system "$d"
	done <"$STATE/created.list"
fi
find "$STATE" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf --one-file-system {} +
log "down in $((SECONDS - t0))s; logs kept in $LOGS"
