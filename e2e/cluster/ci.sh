#!/usr/bin/env bash
# CI entry (.ci/run): build, then one cycle up -> test -> down per install method, as root: the
# driver installed with kustomize (`kubectl apply -k`), then with Helm (the chart); up.sh reads
# MULTINIC_E2E_INSTALL. MULTINIC_E2E_INSTALLS picks the cycles (default "kustomize helm"). The
# upstream components come from build.sh's cache (MULTINIC_E2E_CACHE, default
# /var/cache/multinic-e2e) when it holds them; a cold cache builds them first. The first cycle
# builds the driver binaries; later cycles pack the same binaries into the image again
# (MULTINIC_E2E_NO_CARGO=1), since down.sh removes containerd's store. down.sh runs after every
# cycle whatever happened; a failed cycle prints the tails of the component logs (all logs stay in
# $MULTINIC_E2E_STATE/logs) and the next cycle still runs; the exit status is non-zero when any
# cycle failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
state=${MULTINIC_E2E_STATE:-/var/lib/multinic-e2e}
read -r -a installs <<<"${MULTINIC_E2E_INSTALLS:-kustomize helm}"

export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends gcc libc6-dev libseccomp-dev pkg-config busybox-static \
	containernetworking-plugins iptables iproute2 openssl jq curl >/dev/null

t0=$SECONDS
"$here/build.sh"
t_build=$((SECONDS - t0))

summary=()
in_cycle=0
tails() {
	local f
	for f in "$state"/logs/*.log; do
		[ -e "$f" ] || continue
		echo "--- tail $f"
		tail -n 25 "$f"
	done
}
on_exit() {
	local rc=$?
	if [ "$in_cycle" = 1 ]; then
		tails
		"$here/down.sh" || true
		rc=1
	fi
	echo "e2e/cluster: build ${t_build}s, total $((SECONDS - t0))s"
	for line in "${summary[@]}"; do echo "e2e/cluster: $line"; done
	exit "$rc"
}
trap on_exit EXIT

failed=0
for install in "${installs[@]}"; do
	echo "=== e2e/cluster cycle: install with $install"
	in_cycle=1
	rc=0
	t1=$SECONDS
	MULTINIC_E2E_INSTALL=$install "$here/up.sh" || rc=$?
	t_up=$((SECONDS - t1))
	# The driver binaries are built now: later cycles only pack them into the image again.
	[ "$rc" != 0 ] || export MULTINIC_E2E_NO_CARGO=1
	out=$(mktemp)
	t2=$SECONDS
	if [ "$rc" = 0 ]; then
		"$here/test.sh" | tee "$out" || rc=$?
	fi
	t_test=$((SECONDS - t2))
	[ "$rc" = 0 ] || tails
	t3=$SECONDS
	"$here/down.sh" || rc=1
	in_cycle=0
	t_down=$((SECONDS - t3))
	summary+=("$install: up ${t_up}s, test ${t_test}s, down ${t_down}s; $(grep -c '^PASS:' "$out") passed, $(grep -c '^FAIL:' "$out") failed$([ "$rc" = 0 ] || echo ', CYCLE FAILED')")
	rm -f "$out"
	[ "$rc" = 0 ] || failed=1
done
[ "$failed" = 0 ]
