# shellcheck shell=bash
# Scenario 14 of test.sh, bench rows 11-13 (sourced by it: uses check, scenario, kc, $TARGET_DIR,
# $KUBECONFIG, $NODE, $RAILS, $BUSYBOX_IMAGE, $LOGS): `multinic bench --rows 11,12,13` at a small
# size — 100 fake nodes (Node + the ResourceSlice of 8 RoCE NICs each, written by the bench's load
# tool; no kubelet), 50 pods per batch of row 12, 3 pod starts per size of row 13 on this node.
# It checks that the bench exits 0, prints its rows with none FAILED, and leaves nothing behind
# (fake nodes, their slices, pods, claims, templates, networks, NicNodeBlocks, DeviceClasses, the
# namespace). Timings are printed for the log, not checked. The full-size numbers (1,000 and 7,500
# nodes, 500 pods) are measured by hand: docs/benchmarks.md, rows 11-13.

scenario "14. bench: multinic bench --rows 11,12,13 (100 fake nodes × 8 NICs, 50 pods, 3 starts)"
scale_log=$LOGS/bench-scale.log
"$TARGET_DIR/release/multinic" bench --rows 11,12,13 --kubeconfig "$KUBECONFIG" --node "$NODE" \
	--nics "$RAILS" --pod-image "$BUSYBOX_IMAGE" --scale-nodes 100 --scale-pods 50 --scale-starts 3 \
	--scale-timeout 300 >"$scale_log" 2>&1
rc=$?
cat "$scale_log"
check "multinic bench --rows 11,12,13 exited 0 (exit $rc)" [ "$rc" = 0 ]
# Row 11: time, requests, the controller's and the API server's memory; 12: one; 13: two.
check "it printed the 4 rows of row 11" [ "$(grep -c '^| 11 ' "$scale_log")" = 4 ]
check "it printed the row of row 12" [ "$(grep -c '^| 12 ' "$scale_log")" = 1 ]
check "it printed the 2 rows of row 13" [ "$(grep -c '^| 13 ' "$scale_log")" = 2 ]
check "no row FAILED" sh -c "! grep -q FAILED '$scale_log'"
scale_left() { # kind [namespace]: the multinic-bench objects of that kind still there
	kc get "$1" ${2:+-n "$2"} -l app.kubernetes.io/part-of=multinic-bench -o name 2>/dev/null
}
check "it left no fake node" [ -z "$(scale_left nodes)" ]
check "it left no fake ResourceSlice" [ -z "$(scale_left resourceslices)" ]
check "it left no namespace multinic-bench" sh -c "! '$K8S_BIN/kubectl' get ns multinic-bench"
check "it left no multinic-bench-* network" sh -c "! '$K8S_BIN/kubectl' get multinicnetworks -o name | grep -q multinic-bench"
check "it left no NicNodeBlocks of them" sh -c "! '$K8S_BIN/kubectl' get nicnodeblocks -o name | grep -q multinic-bench"
check "it left no DeviceClass of them" sh -c "! '$K8S_BIN/kubectl' get deviceclasses -o name | grep -q multinic-bench"
check "$NODE is the only node" [ "$(kc get nodes -o name)" = "node/$NODE" ]
