#!/usr/bin/env bash
# Builds the upstream components of the e2e cluster from their Go modules, one
# tiny module per component under build/<component>/ (go.mod + go.sum pinned),
# into $MULTINIC_E2E_CACHE/<component>-<version>/bin (default
# /var/cache/multinic-e2e). GOCACHE and GOMODCACHE live next to bin, so a warm
# run is a no-op and a rebuild after a version bump starts from a clean cache.
# A component whose binaries all exist is skipped.
#
# usage: build.sh [component...]   (default: etcd containerd runc kubernetes helm kueue)
#        build.sh --bindir COMPONENT   (prints where its binaries are)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${MULTINIC_E2E_CACHE:-/var/cache/multinic-e2e}
export GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=readonly"
# The machine image has Go in /usr/local/go; it need not be on PATH.
command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"

# version_of COMPONENT MODULE: the version build/COMPONENT/go.mod requires.
version_of() {
	awk -v m="$2" '($1 == "require" && $2 == m) { print $3; exit }
		($1 == m && $2 ~ /^v/) { print $2; exit }' "$here/build/$1/go.mod"
}

# Per component: main module, binaries it yields.
module_of() {
	case $1 in
	kubernetes) echo k8s.io/kubernetes ;;
	etcd) echo go.etcd.io/etcd/server/v3 ;;
	containerd) echo github.com/containerd/containerd/v2 ;;
	runc) echo github.com/opencontainers/runc ;;
	helm) echo helm.sh/helm/v3 ;;
	kueue) echo sigs.k8s.io/kueue ;;
	*) echo "build.sh: unknown component $1" >&2; return 1 ;;
	esac
}
bins_of() {
	case $1 in
	kubernetes) echo kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl ;;
	etcd) echo etcd ;;
	containerd) echo containerd containerd-shim-runc-v2 ctr ;;
	runc) echo runc ;;
	helm) echo helm ;;
	kueue) echo kueue crd ;; # crd: the directory of its CRDs, copied from the module
	esac
}

# bindir COMPONENT: where its binaries are (for up.sh).
bindir() {
	local mod ver
	mod=$(module_of "$1")
	ver=$(version_of "$1" "$mod")
	echo "$cache/$1-$ver/bin"
}

build_one() {
	local c=$1 mod ver dir out b missing=0
	mod=$(module_of "$c")
	ver=$(version_of "$c" "$mod")
	[ -n "$ver" ] || { echo "build.sh: no version of $mod in build/$c/go.mod" >&2; return 1; }
	dir=$cache/$c-$ver
	for b in $(bins_of "$c"); do [ -x "$dir/bin/$b" ] || missing=1; done
	if [ "$missing" = 0 ]; then
		echo "build.sh: $c $ver cached in $dir/bin"
		return 0
	fi
	mkdir -p "$dir"
	export GOCACHE=$dir/gocache GOMODCACHE=$dir/gomodcache
	out=$dir/bin.tmp
	rm -rf "$out"
	mkdir -p "$out"
	echo "build.sh: building $c $ver into $dir/bin (log: $dir/build.log)"
	local start=$SECONDS
	(
		cd "$here/build/$c"
		if [ ! -s go.sum ]; then
			echo "build.sh: build/$c/go.sum missing, running go mod tidy (commit the result)"
			GOFLAGS=-buildvcs=false go mod tidy
		fi
		case $c in
		kubernetes)
			local ld="" p minor
			minor=$(echo "$ver" | cut -d. -f2)
			for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
				ld="$ld -X $p.gitVersion=$ver -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
			done
			# One invocation so the five binaries share compiled packages.
			CGO_ENABLED=0 go build -trimpath -ldflags "-s -w$ld" -o "$out/" \
				k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
				k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
				k8s.io/kubernetes/cmd/kubectl
			;;
		etcd)
			CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
			;;
		containerd)
			local ld="-s -w -X $mod/version.Version=$ver"
			CGO_ENABLED=0 go build -trimpath -tags "urfave_cli_no_docs no_btrfs" -ldflags "$ld" -o "$out/" \
				"$mod/cmd/containerd" "$mod/cmd/ctr"
			CGO_ENABLED=0 go build -trimpath -tags "urfave_cli_no_docs no_grpc" -ldflags "$ld" -o "$out/" \
				"$mod/cmd/containerd-shim-runc-v2"
			;;
		runc)
			# nsenter is C and seccomp links libseccomp: CGO on.
			CGO_ENABLED=1 go build -trimpath -tags "seccomp urfave_cli_no_docs" \
				-ldflags "-s -w -X main.version=${ver#v}" -o "$out/runc" "$mod"
			;;
		helm)
			# The ldflags of helm's Makefile: its version, and the Kubernetes version that
			# `helm lint` and .Capabilities assume, taken from the client-go it links (v0.N -> 1.N).
			local kminor ld
			kminor=$(go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)
			ld="-s -w -X $mod/internal/version.version=$ver -X $mod/internal/version.metadata="
			ld="$ld -X $mod/internal/version.gitTreeState=clean"
			for p in pkg/lint/rules pkg/chartutil; do
				ld="$ld -X $mod/$p.k8sVersionMajor=1 -X $mod/$p.k8sVersionMinor=$kminor"
			done
			CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$out/helm" "$mod/cmd/helm"
			;;
		kueue)
			# The version variables of Kueue's Makefile (LD_FLAGS: pkg/version.GitVersion).
			CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X $mod/pkg/version.GitVersion=$ver" \
				-o "$out/kueue" "$mod/cmd/kueue"
			# The CRDs without the kustomize patches (those add the conversion webhook).
			cp -r "$(go list -m -f '{{.Dir}}' "$mod")/config/components/crd/bases" "$out/crd"
			chmod -R u+w "$out/crd"
			;;
		esac
	) >"$dir/build.log" 2>&1 || { echo "build.sh: $c failed, tail of $dir/build.log:" >&2; tail -n 30 "$dir/build.log" >&2; return 1; }
	rm -rf "${dir:?}/bin"
	mv "$out" "$dir/bin"
	echo "$c $ver cold build: $((SECONDS - start))s on $(nproc) cores, $(date -u +%FT%TZ)" | tee -a "$dir/build-time.txt"
}

if [ "${1:-}" = --bindir ]; then
	bindir "$2"
	exit 0
fi
comps=("$@")
[ ${#comps[@]} -gt 0 ] || comps=(etcd containerd runc kubernetes helm kueue)
# Two builds into one cache (CI and a developer, say) would share bin.tmp: the second one waits.
mkdir -p "$cache"
exec 9>"$cache/.build.lock"
if ! flock -n 9; then
	echo "build.sh: another build holds $cache/.build.lock, waiting"
	flock 9
fi
for c in "${comps[@]}"; do build_one "$c"; done
