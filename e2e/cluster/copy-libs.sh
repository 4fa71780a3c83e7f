# shellcheck shell=bash
# copy_with_libs ROOT FILE DEST: FILE into the tree ROOT at DEST (mode 0755) plus every shared
# library ldd names for it. Sourced by images.sh and rootfs.sh.
copy_with_libs() {
	local root=$1 file=$2 dest=$3 lib
	install -D -m 0755 "$file" "$root$dest"
	for lib in $(ldd "$file" 2>/dev/null | grep -o '/[^ ]*' || true); do
		[ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
	done
}
