#!/usr/bin/env bash
# Builds the cluster's three images without Docker or a registry and imports them into containerd
# (namespace k8s.io, pinned so the kubelet's image GC keeps them):
#   pause    - images/pause.c, gcc -static
#   busybox  - Debian's busybox-static plus iproute2's `ip` (for `ip -br addr`) and its libraries
#   multinic - stage 1: cargo build --release of the four binaries from MULTINIC_E2E_SRC (default:
#              this clone) into MULTINIC_E2E_TARGET_DIR (default /work/target-cluster); not
#              --locked, the unit-test step checks the lock; MULTINIC_E2E_NO_CARGO=1 skips it.
#              Stage 2: the rootfs of rootfs.sh (the Dockerfile's last stage copies the same
#              tree), with the config of MULTINIC_IMAGE_CONFIG below.
# Each image is a hand-made docker-archive (manifest.json + config.json + one layer tar), the same
# bytes for the same inputs (sorted entries, mtime 0, numeric owners; image-check.sh builds it
# twice and compares the digests).
# usage: images.sh [pause|busybox|multinic]...   (default: all three). Needs containerd up.
#        IMAGES_ARCHIVE_ONLY=DIR images.sh multinic: only writes DIR/multinic.tar and prints its
#        layer and config digests (no containerd needed).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

work=$STATE/images

# shellcheck source-path=SCRIPTDIR source=copy-libs.sh
. "$E2E_DIR/copy-libs.sh"

# The multinic image's config; the Dockerfile's USER, ENV and ENTRYPOINT say the same
# (image-check.sh compares them).
MULTINIC_IMAGE_CONFIG='{"Entrypoint":["/usr/local/bin/multinic"],"User":"65532","Env":["PATH=/usr/local/bin:/usr/bin:/bin"]}'

# archive REF ROOTFS CONFIG_JSON OUT: docker-archive of ROOTFS at OUT; prints "layer config"
# digests.
archive() {
	local ref=$1 root=$2 config=$3 out=$4 d sum
	d=$out.d
	rm -rf "$d"
	mkdir -p "$d"
	tar -C "$root" --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 -cf "$d/layer.tar" .
	sum=$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
	printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
		"$config" "$sum" >"$d/config.json"
	printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$ref" >"$d/manifest.json"
	tar -C "$d" --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 -cf "$out" manifest.json config.json layer.tar
	echo "$sum $(sha256sum "$d/config.json" | cut -d' ' -f1)"
	rm -rf "$d"
}

# pack REF ROOTFS CONFIG_JSON: docker-archive of ROOTFS, imported as REF.
pack() {
	local ref=$1 root=$2 config=$3 out sums
	out=$work/$(echo "$ref" | tr '/:' '__').tar
	sums=$(archive "$ref" "$root" "$config" "$out")
	ctr_ images import --label io.cri-containerd.pinned=pinned "$out" >/dev/null
	log "imported $ref ($(du -h "$out" | cut -f1), layer sha256:${sums:0:12}, config sha256:${sums:65:12})"
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
	local root=$work/multinic-rootfs
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
	"$E2E_DIR/rootfs.sh" "$root" "$TARGET_DIR/release"
	if [ -n "${IMAGES_ARCHIVE_ONLY:-}" ]; then
		mkdir -p "$IMAGES_ARCHIVE_ONLY"
		archive "$IMAGE" "$root" "$MULTINIC_IMAGE_CONFIG" "$IMAGES_ARCHIVE_ONLY/multinic.tar"
	else
		pack "$IMAGE" "$root" "$MULTINIC_IMAGE_CONFIG"
	fi
	rm -rf "$root"
}

mkdir -p "$work"
which=("$@")
[ ${#which[@]} -gt 0 ] || which=(pause busybox multinic)
for i in "${which[@]}"; do "image_$i"; done
