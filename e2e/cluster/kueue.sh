# shellcheck shell=bash
# Scenario 10 of test.sh (sourced by it: uses check, scenario, running, show, check_pod_nics, $NS,
# $NET): Kueue v0.17.0, which up.sh runs as a host process, queues batch/v1 Jobs whose pods take
# 2 NICs each from a ResourceClaimTemplate of the network $NET.
#   10a. cpu quota (Kueue's default, its DynamicResourceAllocation gate off, claims not counted):
#       a ClusterQueue with cpu for one Job. The second Job's Workload is not admitted while the
#       first runs (QuotaReserved=False, Job suspended, no pod); once the first completes, the second
#       is admitted and its pod gets its NICs.
#   10b. DRA quota (gate on, resources.deviceClassMappings: DeviceClass $NET -> resource `nics`):
#       the same with quota for 2 NICs and a plain template (exactly: deviceClassName + count);
#       templates with `config`, `constraints` or CEL `selectors` are inadmissible (Kueue's messages
#       are printed). Kueue is back in cpu mode afterwards.
# Each Job's container prints `ip -br addr` (iproute2's /bin/ip of the image: busybox's sh would run
# its own ip applet for a bare `ip`, which has no -br) and fails unless net1 and net2 have IPv4
# addresses, then waits for /tmp/release, which this script creates: "the first Job still runs" is
# a fact while the second is checked, not a timing. Kueue's webhooks are not registered (up.sh), so Jobs are created with
# `suspend: true` and the label kueue.x-k8s.io/queue-name, as Kueue's Job webhook would make them.
# Deletes what it creates.

kq_not() { ! "$@"; }
# Kueue restarted with $KUEUE_DIR/MODE.yaml.
kq_restart() { # cpu | dra
	stop kueue
	kueue_start "$1" >/dev/null 2>&1
	wait_for 120 "Kueue /readyz" kueue_ready
}
kq_queues() { # name covered-resources-list resources-yaml-lines
	cat <<EOF
apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueue
metadata: {name: $1}
spec:
  namespaceSelector: {}
  resourceGroups:
    - coveredResources: [$2]
      flavors:
        - name: e2e-flavor
          resources: $3
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: LocalQueue
metadata: {name: $1, namespace: $NS}
spec: {clusterQueue: $1}
EOF
}
kq_job() { # name local-queue template
	cat <<EOF
apiVersion: batch/v1
kind: Job
metadata:
  name: $1
  namespace: $NS
  labels: {kueue.x-k8s.io/queue-name: $2}
spec:
  suspend: true
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      resourceClaims:
        - {name: nics, resourceClaimTemplateName: $3}
      containers:
        - name: app
          image: $BUSYBOX_IMAGE
          imagePullPolicy: Never
          command:
            - sh
            - -c
            - |
              /bin/ip -br addr
              for i in net1 net2; do
                /bin/ip -o -4 addr show dev \$i | grep -q inet || { echo "no IPv4 on \$i"; exit 1; }
              done
              until [ -e /tmp/release ]; do sleep 1; done
              echo "released"
          resources:
            requests: {cpu: 100m}
            claims: [{name: nics}]
EOF
}
# A template for 2 NICs of $NET with one thing Kueue's DRA mode refuses: config | constraints | selectors.
kq_template() { # name kind
	case $2 in
	config) template_yaml "$1" 2 '{"interfaceNames": [data0, data1]}' ;;
	selectors)
		template_yaml "$1" 2 | sed 's|count: 2}|count: 2, selectors: [{cel: {expression: '"'"'device.attributes["multinic.dev"].railIndex >= 0'"'"'}}]}|'
		;;
	constraints)
		template_yaml "$1" 2
		cat <<EOF
      constraints:
        - requests: [nics]
          matchAttribute: resource.kubernetes.io/pcieRoot
EOF
		;;
	esac
}

kq_wl() { # job: its Workload's name
	kc -n "$NS" get workloads.kueue.x-k8s.io -o json 2>/dev/null | jq -r --arg j "$1" \
		'[.items[] | select(any(.metadata.ownerReferences[]?; .kind == "Job" and .name == $j)) | .metadata.name][0] // empty'
}
kq_cond() { # job type: "status reason: message" of the Workload's condition
	local wl
	wl=$(kq_wl "$1")
	[ -n "$wl" ] || return 1
	kc -n "$NS" get workloads.kueue.x-k8s.io "$wl" -o json |
		jq -r --arg t "$2" '.status.conditions[]? | select(.type == $t) | "\(.status) \(.reason): \(.message)"'
}
kq_is() { [ "$(kq_cond "$1" "$2" | cut -d' ' -f1)" = "$3" ]; } # job type status
kq_has() { # job type status text: the condition has this status and its "reason: message" has text
	local c
	c=$(kq_cond "$1" "$2")
	[ "${c%% *}" = "$3" ] && grep -qF -- "$4" <<<"$c"
}
kq_no_wl() { [ -z "$(kq_wl "$1")" ]; }
job_pods() { kc -n "$NS" get pods -l "batch.kubernetes.io/job-name=$1" -o jsonpath='{.items[*].metadata.name}'; }
job_has_pod() { [ -n "$(job_pods "$1")" ]; }
job_suspended() { [ "$(kc -n "$NS" get job "$1" -o jsonpath='{.spec.suspend}')" = true ]; }
job_complete() {
	[ "$(kc -n "$NS" get job "$1" -o jsonpath='{.status.conditions[?(@.type=="Complete")].status}')" = True ]
}
kq_gone() { # jobs...: deleted with their pods and Workloads
	kc -n "$NS" delete job "$@" --ignore-not-found --wait=true --timeout=90s >/dev/null
	local j
	for j in "$@"; do
		wait_for 90 "$j's pods gone" kq_not job_has_pod "$j" || return 1
		wait_for 60 "$j's Workload gone" kq_no_wl "$j" || return 1
	done
}

# kq_running_pod JOB: the Job is admitted, unsuspended, its pod runs with 2 NICs (checked against
# the claim's networkData and the rail blocks). The pod's name is left in KQ_POD.
kq_running_pod() {
	local j=$1 p
	check "$j: Workload Admitted" wait_for 90 "$j admitted" kq_is "$j" Admitted True
	echo "$j Workload $(kq_wl "$j"): Admitted $(kq_cond "$j" Admitted); usage $(kc -n "$NS" get \
		workloads.kueue.x-k8s.io "$(kq_wl "$j")" -o jsonpath='{.status.admission.podSetAssignments[*].resourceUsage}')"
	check "$j: Kueue unsuspended the Job" wait_for 60 "$j unsuspended" kq_not job_suspended "$j"
	wait_for 60 "$j's pod" job_has_pod "$j"
	p=$(job_pods "$j")
	KQ_POD=$p
	check "$j: pod ${p:-none} Running" running 180 "${p:-none}"
	pod_running "${p:-none}" || return 0
	show "$p"
	check_pod_nics "$p" 2
}
# kq_release JOB POD: the pod may finish; the Job completes (its container found net1, net2) and
# its Workload is Finished.
kq_release() {
	pexec "$2" touch /tmp/release
	check "$1: Job Complete (its container saw IPv4 on net1 and net2)" wait_for 90 "$1 complete" job_complete "$1"
	echo "--- kubectl logs $2"
	kc -n "$NS" logs "$2" 2>&1
	check "$1: Workload Finished" wait_for 60 "$1 finished" kq_is "$1" Finished True
}
# kq_pair QUEUE TEMPLATE JOB1 JOB2 RESOURCE: quota for one Job of the two.
kq_pair() {
	local q=$1 t=$2 j1=$3 j2=$4 res=$5 p1 p2 msg
	kq_job "$j1" "$q" "$t" | kc apply -f - >/dev/null
	kq_running_pod "$j1"
	p1=$KQ_POD
	kq_job "$j2" "$q" "$t" | kc apply -f - >/dev/null
	check "$j2: Workload not given quota while $j1 runs: QuotaReserved=False, insufficient unused quota for $res" \
		wait_for 60 "$j2 pending" kq_has "$j2" QuotaReserved False "insufficient unused quota for $res"
	echo "$j2 Workload $(kq_wl "$j2"): QuotaReserved $(kq_cond "$j2" QuotaReserved)"
	check "$j2: Workload not Admitted" kq_not kq_is "$j2" Admitted True
	check "$j2: Job suspended" job_suspended "$j2"
	check "$j2: no pod" kq_not job_has_pod "$j2"
	check "$j1: still Running meanwhile" pod_running "${p1:-none}"
	kc get clusterqueues.kueue.x-k8s.io "$q" -o json | jq -c '{clusterQueue: .metadata.name,
		pending: .status.pendingWorkloads, admitted: .status.admittedWorkloads,
		usage: [.status.flavorsUsage[]?.resources[]? | "\(.name)=\(.total)"]}'
	[ -n "$p1" ] && kq_release "$j1" "$p1"
	kq_running_pod "$j2"
	p2=$KQ_POD
	pod_running "${p2:-none}" && kq_release "$j2" "$p2"
	check "$j1, $j2 deleted with their pods and Workloads" kq_gone "$j1" "$j2"
}

# ------------------------------------------------------------------------------------------------
scenario "10a. $(basename "${KUEUE_BIN%/bin}") (cpu quota): of two Jobs with 2 NICs each and quota for one, the second waits until the first completes, then runs with its NICs"
kc delete clusterqueues.kueue.x-k8s.io e2e-cpu e2e-dra --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1
kc delete resourceflavors.kueue.x-k8s.io e2e-flavor --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1
check "Kueue ready (cpu mode: $KUEUE_DIR/cpu.yaml)" kq_restart cpu
template_yaml kueue-nics 2 | kc apply -f - >/dev/null
kc apply -f - >/dev/null <<EOF
apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata: {name: e2e-flavor}
EOF
kq_queues e2e-cpu cpu '[{name: cpu, nominalQuota: 100m}]' | kc apply -f - >/dev/null
check "ClusterQueue e2e-cpu Active" kc wait --for=condition=Active clusterqueues.kueue.x-k8s.io/e2e-cpu --timeout=60s
kq_pair e2e-cpu kueue-nics kq-job-1 kq-job-2 cpu

scenario "10b. Kueue DRA quota (gate DynamicResourceAllocation, deviceClassMappings $NET -> nics): plain template queued by NIC count; config, constraints, CEL selectors inadmissible"
kueue_config ", DynamicResourceAllocation: true" "resources:
  deviceClassMappings:
    - {name: nics, deviceClassNames: [$NET]}" >"$KUEUE_DIR/dra.yaml"
check "Kueue ready (DRA mode: $KUEUE_DIR/dra.yaml)" kq_restart dra
kq_queues e2e-dra "cpu, nics" '[{name: cpu, nominalQuota: "1"}, {name: nics, nominalQuota: "2"}]' | kc apply -f - >/dev/null
check "ClusterQueue e2e-dra Active" kc wait --for=condition=Active clusterqueues.kueue.x-k8s.io/e2e-dra --timeout=60s
kq_pair e2e-dra kueue-nics kq-job-3 kq-job-4 nics
declare -A kq_refusal=([config]="device config is not supported" [constraints]="device constraints (MatchAttribute) are not supported"
	[selectors]="CEL selectors are not supported")
for kind in config constraints selectors; do
	kq_template "kueue-$kind" "$kind" | kc apply -f - >/dev/null
	kq_job "kq-$kind" e2e-dra "kueue-$kind" | kc apply -f - >/dev/null
	check "kq-$kind (template with $kind): Workload QuotaReserved=False, reason Inadmissible" \
		wait_for 60 "kq-$kind inadmissible" kq_has "kq-$kind" QuotaReserved False "Inadmissible: "
	msg=$(kq_cond "kq-$kind" QuotaReserved)
	echo "kq-$kind Workload $(kq_wl "kq-$kind"): QuotaReserved $msg"
	check "kq-$kind: Kueue's message: ${kq_refusal[$kind]}" grep -qF -- "${kq_refusal[$kind]}" <<<"$msg"
	check "kq-$kind: Job suspended" job_suspended "kq-$kind"
	check "kq-$kind: no pod" kq_not job_has_pod "kq-$kind"
done
check "the refused Jobs deleted" kq_gone kq-config kq-constraints kq-selectors

check "Kueue back in cpu mode" kq_restart cpu
kc -n "$NS" delete localqueues.kueue.x-k8s.io e2e-cpu e2e-dra --wait=true --timeout=60s >/dev/null
kc delete clusterqueues.kueue.x-k8s.io e2e-cpu e2e-dra --wait=true --timeout=60s >/dev/null
kc delete resourceflavors.kueue.x-k8s.io e2e-flavor --wait=true --timeout=60s >/dev/null
kc -n "$NS" delete resourceclaimtemplates kueue-nics kueue-config kueue-constraints kueue-selectors --wait=true >/dev/null
left=$(kc get clusterqueues.kueue.x-k8s.io,resourceflavors.kueue.x-k8s.io -o name | wc -l)
check "no ClusterQueue or ResourceFlavor left ($left)" [ "$left" = 0 ]
