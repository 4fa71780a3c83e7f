#!/usr/bin/env bash
# The multinic image's root filesystem, in one place for both builds of the image: images.sh (no
# Docker: a hand-made archive imported into containerd) and the Dockerfile (its last stage copies
# this tree onto `scratch`). Contents: the four binaries under /usr/local/bin, the shared libraries
# they load (as ldd names them), CA certificates, an /etc/passwd with root and nonroot (65532, the
# image's user) and an empty /tmp. File modes are fixed so the tree does not depend on the umask.
# usage: rootfs.sh ROOT RELEASE_DIR   (RELEASE_DIR holds the four release binaries)
set -euo pipefail
[ $# = 2 ] || {
	echo "usage: $0 ROOT RELEASE_DIR" >&2
	exit 2
}
root=$1 release=$2

# shellcheck source-path=SCRIPTDIR source=copy-libs.sh
. "$(dirname "$0")/copy-libs.sh"

rm -rf "$root"
install -d -m 0755 "$root" "$root/etc" "$root/etc/ssl" "$root/etc/ssl/certs"
install -d -m 1777 "$root/tmp"
for b in multinic-kubelet-plugin multinic-cni multinic-controller multinic; do
	[ -x "$release/$b" ] || {
		echo "rootfs.sh: $release/$b is missing: cargo build --release the four binaries first" >&2
		exit 1
	}
	copy_with_libs "$root" "$release/$b" "/usr/local/bin/$b"
done
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$root/etc/passwd"
chmod 0644 "$root/etc/passwd"
