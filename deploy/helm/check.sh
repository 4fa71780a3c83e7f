#!/usr/bin/env bash
# Checks that the Helm chart renders the same objects as the kustomize manifests:
#   helm template (default values)            == kubectl kustomize deploy/
#   helm template -f e2e/cluster/values.yaml  == kubectl kustomize e2e/cluster/
# Both streams are parsed, the kustomize Namespace is dropped (`helm install --create-namespace`
# makes it), so are the labels the chart adds (chart, managed-by, instance, part-of, version) on
# objects and pod templates; numbers are compared as JSON numbers (kustomize prints the CRDs'
# `minimum: 0.0` as 0, Helm copies crds/ verbatim), and so is the namespace kustomize gives the
# admission policy (cluster-scoped, which kustomize does not know); the rest is sorted by
# kind/namespace/name and diffed. Exits non-zero on any difference. Needs helm and kubectl (env
# HELM, KUBECTL, default: on PATH) and python3-yaml.
# usage: deploy/helm/check.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
helm=${HELM:-helm}
kubectl=${KUBECTL:-kubectl}
chart=$repo/deploy/helm/multinic-dra
ns=multinic-system
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

normalize() {
	python3 -c '
import sys, yaml
HELM_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance",
               "app.kubernetes.io/part-of", "app.kubernetes.io/version"}
def strip(meta):
    labels = meta.get("labels") or {}
    for k in HELM_LABELS:
        labels.pop(k, None)
    if labels:
        meta["labels"] = labels
    else:
        meta.pop("labels", None)
def numbers(v):
    if isinstance(v, dict):
        return {k: numbers(x) for k, x in v.items()}
    if isinstance(v, list):
        return [numbers(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v
# Cluster-scoped kinds kustomize (v5.8.1) does not know as such: its namespace transformer gives
# them metadata.namespace, which the API server drops on create (rest.BeforeCreate).
CLUSTER_SCOPED = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
objs = [numbers(d) for d in yaml.safe_load_all(sys.stdin) if d and d.get("kind") != "Namespace"]
for o in objs:
    strip(o["metadata"])
    if o["kind"] in CLUSTER_SCOPED:
        o["metadata"].pop("namespace", None)
    template = o.get("spec", {}).get("template")
    if isinstance(template, dict) and "metadata" in template:
        strip(template["metadata"])
objs.sort(key=lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]))
yaml.safe_dump_all(objs, sys.stdout, sort_keys=True, default_flow_style=False)
'
}

# compare NAME KUSTOMIZE_DIR HELM_ARGS...
compare() {
	local name=$1 kdir=$2
	shift 2
	"$kubectl" kustomize "$kdir" | normalize >"$tmp/$name.kustomize.yaml"
	"$helm" template multinic-dra "$chart" -n "$ns" --include-crds "$@" | normalize >"$tmp/$name.helm.yaml"
	if diff -u "$tmp/$name.kustomize.yaml" "$tmp/$name.helm.yaml"; then
		echo "check.sh: $name: helm template == kubectl kustomize ($(grep -c '^kind:' "$tmp/$name.helm.yaml") objects)"
	else
		echo "check.sh: $name: the chart and ${kdir#"$repo"/} differ (- kustomize, + helm)" >&2
		return 1
	fi
}

compare deploy "$repo/deploy"
compare e2e "$repo/e2e/cluster" -f "$repo/e2e/cluster/values.yaml"
