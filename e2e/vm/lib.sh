# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this
# Shared settings of the e2e/vm scripts (sourced, not run).
#
# MULTINIC_VM_CACHE  where kernels and base initramfs images are cached, outside the clone
#                    (default /var/cache/multinic-vm)
# MULTINIC_VM_KERNEL the Debian kernel package version to boot (default: what linux-image-amd64
#                    depends on in the configured apt sources, e.g. 6.1.0-57-amd64)

VM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$VM_DIR/../.." && pwd)"
CACHE="${MULTINIC_VM_CACHE:-/var/cache/multinic-vm}"

# Modules the guest loads (their dependency closure is added by build-initramfs.sh).
VM_MODULES=(igb igbvf ipvlan macvlan dummy crc32_generic rdma_rxe ib_uverbs rdma_ucm
  virtio_pci virtio_net 9p 9pnet_virtio)

log() { printf '[vm %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The kernel ABI version (6.1.0-57-amd64) that linux-image-amd64 points at, unless pinned.
kernel_version() {
  if [ -n "${MULTINIC_VM_KERNEL:-}" ]; then
    echo "$MULTINIC_VM_KERNEL"
    return
  fi
  local dep
  dep="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
  [ -n "$dep" ] || die "apt-cache knows no linux-image-amd64 (run apt-get update)"
  echo "${dep#linux-image-}"
}

# Reads the MULTINIC-RESULT lines of a guest's console, prints them (prefixed with LABEL) and adds
# to the globals PASSED, FAILED, KNOWN. Every EXPECTED check must be present; the guest must have
# reached MULTINIC-DONE.
PASSED=0
FAILED=0
KNOWN=0
parse_results() {
  local label="$1" console="$2" results status name
  shift 2
  results="$(tr -d '\r' <"$console" | grep -E '^MULTINIC-(RESULT|DONE)' || true)"
  printf '%s\n' "$results" | sed "s/^/$label /"
  while read -r _ status _; do
    case "$status" in
      ok) PASSED=$((PASSED + 1)) ;;
      known-gap) KNOWN=$((KNOWN + 1)) ;;
      "") ;;
      *) FAILED=$((FAILED + 1)) ;;
    esac
  done < <(printf '%s\n' "$results" | grep '^MULTINIC-RESULT')
  for name in "$@"; do
    if ! printf '%s\n' "$results" | grep -qE "^MULTINIC-RESULT (ok|fail|known-gap) $name:"; then
      echo "$label MULTINIC-RESULT fail $name: no result (guest stopped early? see $console)"
      FAILED=$((FAILED + 1))
    fi
  done
  if ! printf '%s\n' "$results" | grep -q '^MULTINIC-DONE'; then
    echo "$label: the guest did not finish; last console lines:"
    tail -n 30 "$console"
    FAILED=$((FAILED + 1))
  fi
}
