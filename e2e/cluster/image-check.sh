#!/usr/bin/env bash
# Checks the multinic image (issue 15.1), from the release binaries images.sh built (run after
# e2e/cluster/ci.sh, or after `images.sh multinic`):
#   1. reproducible: its archive built twice from the same inputs has the same layer and config
#      digests;
#   2. the Dockerfile describes the same image: its build stage runs rootfs.sh, its last stage is
#      `FROM scratch` with only that tree copied in, and its USER, ENV and ENTRYPOINT equal
#      images.sh's MULTINIC_IMAGE_CONFIG;
#   3. prints the image's size and its files.
# Needs no containerd and no Docker. Exit 1 on any difference.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() {
	echo "FAIL: $*"
	fail=1
}

digests=()
for run in 1 2; do
	digests+=("$(MULTINIC_E2E_STATE=$tmp/state IMAGES_ARCHIVE_ONLY=$tmp/$run MULTINIC_E2E_NO_CARGO=1 \
		"$here/images.sh" multinic 2>/dev/null | tail -n 1)")
done
echo "build 1: layer sha256:${digests[0]% *} config sha256:${digests[0]#* }"
echo "build 2: layer sha256:${digests[1]% *} config sha256:${digests[1]#* }"
if [ -z "${digests[0]}" ] || [ "${digests[0]}" != "${digests[1]}" ]; then bad "two builds from the same inputs differ"; fi
cmp -s "$tmp/1/multinic.tar" "$tmp/2/multinic.tar" || bad "the two archives differ byte for byte"

config=$(sed -n "s/^MULTINIC_IMAGE_CONFIG='\(.*\)'$/\1/p" "$here/images.sh")
dockerfile=$repo/Dockerfile
last_stage=$(awk '/^FROM /{n=NR} {l[NR]=$0} END{for (i=n; i<=NR; i++) print l[i]}' "$dockerfile")
[ "$(head -n 1 <<<"$last_stage")" = "FROM scratch" ] || bad "the Dockerfile's last stage is not FROM scratch"
copies=$(grep -E '^(COPY|ADD|RUN) ' <<<"$last_stage" || true)
[ "$copies" = "COPY --from=build /rootfs/ /" ] || bad "the last stage adds more than rootfs.sh's tree: $copies"
grep -q '&& e2e/cluster/rootfs.sh /rootfs target/release$' "$dockerfile" || bad "the build stage does not run rootfs.sh"
user=$(sed -n 's/^USER //p' <<<"$last_stage")
env=$(sed -n 's/^ENV //p' <<<"$last_stage")
entrypoint=$(sed -n 's/^ENTRYPOINT //p' <<<"$last_stage" | jq -c .)
[ "$user" = "$(jq -r .User <<<"$config")" ] || bad "USER $user, images.sh $(jq -r .User <<<"$config")"
[ "$env" = "$(jq -r '.Env | join(" ")' <<<"$config")" ] || bad "ENV $env, images.sh $(jq -r '.Env | join(" ")' <<<"$config")"
[ "$entrypoint" = "$(jq -c .Entrypoint <<<"$config")" ] || bad "ENTRYPOINT $entrypoint, images.sh $(jq -c .Entrypoint <<<"$config")"

tar -xOf "$tmp/1/multinic.tar" layer.tar >"$tmp/layer.tar"
echo "image: $(stat -c %s "$tmp/1/multinic.tar") bytes ($(du -h "$tmp/1/multinic.tar" | cut -f1)), $(tar -tf "$tmp/layer.tar" | grep -vc '/$') files:"
tar -tvf "$tmp/layer.tar" | awk '$1 !~ /^d/ {printf "  %10s  %s\n", $3, $6}'
[ "$fail" = 0 ] && echo "image-check: reproducible, and the Dockerfile describes the same image"
exit "$fail"
