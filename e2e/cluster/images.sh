#!/usr/bin/env bash
# Builds the cluster's three images without Docker or a registry and imports them into containerd
# (namespace k8s.io, pinned so the kubelet's image GC keeps them):
#   pause    - images/pause.c, gcc -static
#   busybox  - Debian's busybox-static plus iproute2's `ip` (for `ip -br addr`) and its libraries
#   multinic - stage 1: cargo build --release of the four binaries from MULTINIC_E2E_SRC (default:
#              this clone) into MULTINIC_E2E_TARGET_DIR (default /work/target-cluster); not
#              --locked, the unit-test step checks the lock; MULTINIC_E2E_NO_CARGO=1 skips it.
#              Stage 2: a rootfs of those binaries, the shared libraries they load (ldd) and
#              CA certificates.
# Each image is a hand-made docker-archive (manifest.json + config.json + one layer tar).
# usage: images.sh [pause|busybox|multinic]...   (default: all three). Needs containerd up.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

work=$STATE/images

# copy_with_libs ROOTFS FILE DEST: FILE into ROOTFS at DEST plus every library ldd names.
copy_with_libs() {
	local root=$1 file=$2 dest=$3 lib
	install -D -m 0755 "$file" "$root$dest"
	for lib in $(ldd "$file" 2>/dev/null | grep -o '/[^ ]*' || true); do
		[ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
	done
}

# pack REF ROOTFS CONFIG_JSON: docker-archive of ROOTFS, imported as REF.
pack() {
	local ref=$1 root=$2 config=$3 d sum
	d=$work/$(echo "$ref" | tr '/:' '__')
	rm -rf "$d"
	mkdir -p "$d"
	tar -C "$root" --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 -cf "$d/layer.tar" .
	sum=$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
	printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
		"$config" "$sum" >"$d/config.json"
	printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$ref" >"$d/manifest.json"
	tar -C "$d" -cf "$d.tar" manifest.json config.json layer.tar
	ctr_ images import --label io.cri-containerd.pinned=pinned "$d.tar" >/dev/null
	rm -rf "$d"
	log "imported $ref ($(du -h "$d.tar" | cut -f1), layer sha256:${sum:0:12})"
}

image_pause() {
	local root=$work/pause-rootfs
	rm -rf "$root"
	mkdir -p "$root"
	gcc -Os -static -s -o "$root/pause" "$E2E_DIR/images/pause.c"
	pack "$PAUSE_IMAGE" "$root" '{"Entrypoint":["/pause"],"User":"65535:65535"}'
	rm -rf "$root"
}

image_busybox() {
	local root=$work/busybox-rootfs a
	rm -rf "$root"
	mkdir -p "$root/bin" "$root/tmp" "$root/etc"
	install -m 0755 /bin/busybox "$root/bin/busybox"
	for a in $(/bin/busybox --list); do
		[ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"
	done
	# iproute2's ip, for `ip -br addr` (busybox's ip has no -br).
	rm -f "$root/bin/ip"
	copy_with_libs "$root" "$(command -v ip)" /bin/ip
	echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
	pack "$BUSYBOX_IMAGE" "$root" '{"Entrypoint":["/bin/sh"],"Env":["PATH=/bin"]}'
	rm -rf "$root"
}

image_multinic() {
	local root=$work/multinic-rootfs b
	if [ "${MULTINIC_E2E_NO_CARGO:-0}" = 1 ]; then
		log "stage 1 skipped (MULTINIC_E2E_NO_CARGO=1): using the binaries in $TARGET_DIR/release"
	else
		log "stage 1: cargo build --release (CARGO_TARGET_DIR=$TARGET_DIR)"
		# The CNI on its own, as the Dockerfile does: built with the others, cargo's feature
		# unification would link kube and hyper into it.
		(cd "$SRC" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -q --locked -p multinic-cni &&
			CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -q --locked \
				-p multinic-kubelet-plugin -p multinic-controller -p multinic-cli)
	fi
	log "stage 2: rootfs"
	rm -rf "$root"
	mkdir -p "$root/etc/ssl/certs" "$root/tmp"
	for b in multinic-kubelet-plugin multinic-cni multinic-controller multinic; do
		copy_with_libs "$root" "$TARGET_DIR/release/$b" "/usr/local/bin/$b"
	done
	cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
	printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$root/etc/passwd"
	pack "$IMAGE" "$root" \
		'{"Entrypoint":["/usr/local/bin/multinic"],"User":"65532","Env":["PATH=/usr/local/bin:/usr/bin:/bin"]}'
	rm -rf "$root"
}

mkdir -p "$work"
which=("$@")
[ ${#which[@]} -gt 0 ] || which=(pause busybox multinic)
for i in "${which[@]}"; do "image_$i"; done
