#!/usr/bin/env bash
# CI entry (.ci/run): build -> up -> test -> down on this machine, as root. The upstream components
# come from build.sh's cache (MULTINIC_E2E_CACHE, default /var/cache/multinic-e2e) when it holds
# them; a cold cache builds them first. down.sh runs whatever happened; on failure the tails of the
# component logs are printed (all logs stay in $MULTINIC_E2E_STATE/logs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
state=${MULTINIC_E2E_STATE:-/var/lib/multinic-e2e}

export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends gcc libc6-dev libseccomp-dev pkg-config busybox-static \
	containernetworking-plugins iptables iproute2 openssl jq curl >/dev/null

t0=$SECONDS
"$here/build.sh"
t_build=$((SECONDS - t0))

on_exit() {
	rc=$?
	if [ "$rc" != 0 ]; then
		for f in "$state"/logs/*.log; do
			[ -e "$f" ] || continue
			echo "--- tail $f"
			tail -n 25 "$f"
		done
	fi
	"$here/down.sh" || rc=1
	echo "e2e/cluster: build ${t_build}s, up ${t_up:-?}s, test ${t_test:-?}s, total $((SECONDS - t0))s"
	exit "$rc"
}
trap on_exit EXIT

t1=$SECONDS
"$here/up.sh"
t_up=$((SECONDS - t1))
t2=$SECONDS
rc_test=0
"$here/test.sh" || rc_test=$?
t_test=$((SECONDS - t2))
[ "$rc_test" = 0 ]
