#!/usr/bin/env bash
# End-to-end on kind: build the image, create a DRA-enabled cluster, install deploy/, give each
# worker two veth "NICs", run a pod that claims 2 NICs and check its interfaces, its IPs and the
# claim's networkData. Needs docker, kind and kubectl; does not run on the CI machine (no Docker).
# KEEP=1 keeps the cluster, CLUSTER names it. The overlay's init container chains multinic-cni into
# each node's primary conflist.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
cluster="${CLUSTER:-multinic-e2e}"
image="ghcr.io/multinic-dra/multinic:e2e"
keep="${KEEP:-0}"

log() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

cleanup() {
  if [[ "${keep}" != "1" ]]; then
    log "deleting cluster ${cluster} (KEEP=1 keeps it)"
    kind delete cluster --name "${cluster}" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

for tool in docker kind kubectl; do
  command -v "${tool}" >/dev/null || fail "${tool} is required"
done

log "building ${image}"
docker build -t "${image}" "${repo}"

log "creating kind cluster ${cluster}"
kind create cluster --name "${cluster}" --config "${here}/kind-config.yaml"
kind load docker-image --name "${cluster}" "${image}"

log "adding veth NICs to the workers"
"${here}/add-veth-nics.sh" "${cluster}" 2

log "installing deploy/ with the e2e image (overlay e2e/kustomization.yaml)"
kubectl apply -k "${here}"
kubectl -n multinic-system rollout status daemonset/multinic-kubelet-plugin --timeout=180s
kubectl -n multinic-system rollout status deployment/multinic-controller --timeout=180s

log "creating the network and a 2-NIC pod"
kubectl apply -f "${here}/network.yaml"
kubectl wait --for=condition=Ready multinicnetwork/e2e-rails --timeout=120s
kubectl apply -f "${here}/pod.yaml"
kubectl wait --for=condition=Ready pod/two-nics --timeout=180s

log "checking the pod's interfaces"
addrs="$(kubectl exec two-nics -- ip -o -4 addr show)"
printf '%s\n' "${addrs}"
for ifname in net1 net2; do
  grep -q " ${ifname} " <<<"${addrs}" || fail "pod has no ${ifname}"
done

log "checking the claim's networkData"
claim="$(kubectl get pod two-nics -o jsonpath='{.status.resourceClaimStatuses[0].resourceClaimName}')"
kubectl describe resourceclaim "${claim}"
names="$(kubectl get resourceclaim "${claim}" -o jsonpath='{.status.devices[*].networkData.interfaceName}')"
[[ "${names}" == "net1 net2" ]] || fail "networkData interface names are '${names}', want 'net1 net2'"
ips="$(kubectl get resourceclaim "${claim}" -o jsonpath='{.status.devices[*].networkData.ips[0]}')"
for ip in ${ips}; do
  grep -q "${ip}" <<<"${addrs}" || fail "claim IP ${ip} is not in the pod"
done

log "deleting the pod: the NICs go back to the node"
kubectl delete pod two-nics --wait=true
log "PASS"
