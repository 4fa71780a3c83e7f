//! Row 10's reading of the node's logs and the plugin's metrics: the timestamps of the kubelet's,
//! containerd's and multinic-cni's lines about one pod, and the NodePrepareResources /
//! NodeUnprepareResources time the plugin spent on it. Pure: text in, times out.

/// Microseconds since the Unix epoch (UTC).
pub type Micros = i64;

/// Days from 1970-01-01 to the civil date `y-m-d` (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `HH:MM:SS[.fraction]` → microseconds into the day.
fn time_of_day(s: &str) -> Option<Micros> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut parts = hms.split(':');
    let (h, m, sec) = (num(parts.next()?)?, num(parts.next()?)?, num(parts.next()?)?);
    if parts.next().is_some() || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let us = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        num(&digits)?
    };
    Some(((h * 60 + m) * 60 + sec) * 1_000_000 + us)
}

fn civil(y: i64, mo: i64, d: i64) -> Option<i64> {
    ((1..=12).contains(&mo) && (1..=31).contains(&d)).then(|| days_from_civil(y, mo, d))
}

/// `2026-12-01T17:13:16.139574352Z`: RFC 3339 in UTC (`Z`), any number of fraction digits.
pub fn parse_rfc3339(s: &str) -> Option<Micros> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, mo, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if d.next().is_some() {
        return None;
    }
    Some(civil(y, mo, day)? * 86_400_000_000 + time_of_day(time)?)
}

/// The time of a klog line (`I1201 14:54:18.300154   29640 kubelet.go:2709] ...`), which has no
/// year: the year that puts it closest to `near`.
pub fn parse_klog(line: &str, near: Micros) -> Option<Micros> {
    let mut words = line.split_whitespace();
    let head = words.next()?;
    let clock = words.next()?;
    let mut chars = head.chars();
    if !matches!(chars.next()?, 'I' | 'W' | 'E' | 'F') {
        return None;
    }
    let mmdd = chars.as_str();
    if mmdd.len() != 4 {
        return None;
    }
    let (mo, d) = (num(mmdd.get(..2)?)?, num(mmdd.get(2..)?)?);
    let tod = time_of_day(clock)?;
    let near_year = 1970 + near.div_euclid(86_400_000_000 * 365);
    (near_year - 2..=near_year + 2)
        .filter_map(|y| Some(civil(y, mo, d)? * 86_400_000_000 + tod))
        .min_by_key(|t| (t - near).abs())
}

/// A containerd (logrus) line's `time="..."`.
fn containerd_time(line: &str) -> Option<Micros> {
    let rest = line.strip_prefix("time=\"")?;
    parse_rfc3339(rest.split('"').next()?)
}

/// A multinic-cni (tracing) line, as containerd copies the plugin's stderr into its log:
/// `2026-12-01T17:09:58.794078Z  INFO multinic_cni::plugin::add: moved into the pod ...`.
/// Its time and the text after the target.
fn cni_line(line: &str) -> Option<(Micros, &str)> {
    let (ts, rest) = line.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let (_level, rest) = rest.split_once(char::is_whitespace)?;
    let (target, text) = rest.trim_start().split_once(": ")?;
    target
        .starts_with("multinic_cni::plugin")
        .then_some(())
        .and(parse_rfc3339(ts).map(|t| (t, text)))
}

/// `key=value` of a tracing or logrus line (value up to the next space).
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(&format!(" {key}="))? + key.len() + 2;
    text.get(start..)?.split(' ').next()
}

/// The pod whose lines are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// What the node's components logged about one pod, each the time of the first such line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NodeEvents {
    /// kubelet `"SyncLoop ADD"` naming the pod.
    pub sync_add: Option<Micros>,
    /// containerd `RunPodSandbox for name:"…" uid:"…"` (before the network is set up).
    pub sandbox_start: Option<Micros>,
    /// multinic-cni's first device line of ADD (`moved into the pod` / `created child in the pod`).
    pub cni_first_device: Option<Micros>,
    /// multinic-cni's last ADD line for the sandbox (`attached`, or `no multinic plan`).
    pub cni_done: Option<Micros>,
    /// containerd `RunPodSandbox … returns sandbox id`.
    pub sandbox_ready: Option<Micros>,
    pub sandbox_id: Option<String>,
    /// kubelet `"SyncLoop DELETE"` naming the pod.
    pub sync_delete: Option<Micros>,
    /// containerd `StopPodSandbox for "<id>"`.
    pub stop_sandbox: Option<Micros>,
    /// multinic-cni's first and last DEL line after that.
    pub cni_del_first: Option<Micros>,
    pub cni_del_last: Option<Micros>,
    /// containerd `TearDown network for sandbox "<id>" successfully`.
    pub teardown: Option<Micros>,
}

fn first(slot: &mut Option<Micros>, t: Micros) {
    slot.get_or_insert(t);
}

/// Reads the kubelet's lines (klog) about `pod`; `near` picks the year.
pub fn scan_kubelet(log: &str, pod: &PodRef, ev: &mut NodeEvents, near: Micros) {
    let named = format!("\"{}/{}\"", pod.namespace, pod.name);
    for line in log.lines() {
        if !line.contains(&named) {
            continue;
        }
        let slot = if line.contains("\"SyncLoop ADD\"") {
            &mut ev.sync_add
        } else if line.contains("\"SyncLoop DELETE\"") {
            &mut ev.sync_delete
        } else {
            continue;
        };
        if let Some(t) = parse_klog(line, near) {
            first(slot, t);
        }
    }
}

/// Reads containerd's lines about `pod`, and the multinic-cni lines among them: device lines
/// between the sandbox's start and its `returns sandbox id` line are this pod's (the bench starts
/// one pod at a time); the ADD's last line and the containerd stop lines carry the sandbox id.
pub fn scan_containerd(log: &str, pod: &PodRef, ev: &mut NodeEvents) {
    let start = format!("RunPodSandbox for name:\\\"{}\\\"  uid:\\\"{}\\\"", pod.name, pod.uid);
    // (time, container) of multinic-cni's last ADD lines seen before the sandbox id is known.
    let mut done: Vec<(Micros, String)> = Vec::new();
    for line in log.lines() {
        if let Some((t, text)) = cni_line(line) {
            if ev.sandbox_start.is_none() {
                continue;
            }
            if ev.sandbox_ready.is_none() {
                if text.starts_with("moved into the pod") || text.starts_with("created child in the pod") {
                    first(&mut ev.cni_first_device, t);
                } else if (text.starts_with("attached") || text.starts_with("no multinic plan"))
                    && let Some(c) = field(text, "container")
                {
                    done.push((t, c.to_string()));
                }
            } else if ev.stop_sandbox.is_some()
                && ev.teardown.is_none()
                && (text.starts_with("returned to the host") || text.starts_with("deleted the attachment"))
            {
                first(&mut ev.cni_del_first, t);
                ev.cni_del_last = Some(t);
            }
            continue;
        }
        let Some(t) = containerd_time(line) else { continue };
        if ev.sandbox_ready.is_none() {
            if !line.contains(&start) {
                continue;
            }
            match line.split_once("returns sandbox id \\\"") {
                Some((_, rest)) => {
                    let id = rest.split('\\').next().unwrap_or_default().to_string();
                    ev.cni_done = done.iter().find(|(_, c)| *c == id).map(|(t, _)| *t);
                    ev.sandbox_ready = Some(t);
                    ev.sandbox_id = Some(id);
                }
                None => first(&mut ev.sandbox_start, t),
            }
            continue;
        }
        let Some(id) = ev.sandbox_id.as_deref() else { continue };
        let quoted = format!("\\\"{id}\\\"");
        if line.contains(&format!("StopPodSandbox for {quoted}")) && !line.contains("returns") {
            first(&mut ev.stop_sandbox, t);
        } else if line.contains(&format!("TearDown network for sandbox {quoted} successfully")) {
            first(&mut ev.teardown, t);
        }
    }
}

/// `sum` and `count` of the plugin's `multinic_grpc_request_seconds` histogram for `method`.
pub fn rpc_seconds(metrics: &str, method: &str) -> Option<(f64, u64)> {
    let labels = format!("{{method=\"{method}\"}} ");
    let value = |name: &str| {
        let prefix = format!("multinic_grpc_request_seconds_{name}{labels}");
        metrics.lines().find_map(|l| l.strip_prefix(&prefix)).map(str::trim)
    };
    let count = match value("count") {
        Some(c) => c.parse().ok()?,
        None => 0,
    };
    let sum = match value("sum") {
        Some(s) => s.parse().ok()?,
        None => 0.0,
    };
    Some((sum, count))
}

/// The time (ms) of the one `method` call between two scrapes, `None` unless exactly one call
/// happened in between.
pub fn one_call_ms(before: (f64, u64), after: (f64, u64)) -> Option<f64> {
    (after.1.checked_sub(before.1) == Some(1)).then_some((after.0 - before.0) * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines captured from the e2e cluster (test.sh, scenario 3's pod-c with 2 host-device NICs):
    /// containerd's log with multinic-cni's stderr in it; other pods' lines in between.
    const CONTAINERD: &str = r#"time="2026-12-01T17:09:58.765251905Z" level=info msg="RunPodSandbox for name:\"pod-c\"  uid:\"81afa4c7-0f29-4e78-8282-4418ef7effdc\"  namespace:\"e2e\""
2026-12-01T17:09:58.794078Z  INFO multinic_cni::plugin::add: moved into the pod device=mnic0 pod_if=net1
2026-12-01T17:09:58.822059Z  INFO multinic_cni::plugin::add: moved into the pod device=mnic1 pod_if=net2
2026-12-01T17:09:58.822324Z  INFO multinic_cni::plugin::add: attached container=35bcf5245b1d6f0c631b990c35d91a94c0332397a4db11aa252a6c4e3e145cf0 devices=2
time="2026-12-01T17:09:58.834660432Z" level=info msg="connecting to shim 35bcf5245b1d6f0c631b990c35d91a94c0332397a4db11aa252a6c4e3e145cf0" address="unix:///run/containerd/s/bf32015db35762b35fe4cbe43fed608864c3078a636474614603643f1f99d189" namespace=k8s.io protocol=ttrpc version=3
time="2026-12-01T17:09:58.910206776Z" level=info msg="RunPodSandbox for name:\"pod-c\"  uid:\"81afa4c7-0f29-4e78-8282-4418ef7effdc\"  namespace:\"e2e\" returns sandbox id \"35bcf5245b1d6f0c631b990c35d91a94c0332397a4db11aa252a6c4e3e145cf0\""
time="2026-12-01T17:09:58.915929328Z" level=info msg="CreateContainer within sandbox \"35bcf5245b1d6f0c631b990c35d91a94c0332397a4db11aa252a6c4e3e145cf0\" for container name:\"app\""
time="2026-12-01T17:10:01.998564148Z" level=info msg="StopPodSandbox for \"35bcf5245b1d6f0c631b990c35d91a94c0332397a4db11aa252a6c4e3e145cf0\""
time="2026-12-01T17:10:02.005920384Z" level=info msg="received sandbox exit event container_id:\"35bcf5245b1d6f0c631b990c35d91a94c0332397a4db11aa252a6c4e3e145cf0\"  id:\"35bcf5245b1d6f0c631b990c35d91a94c0332397a4db11aa252a6c4e3e145cf0\"  exit_status:137  exited_at:{seconds:1796145002  nanos:5772986}" monitor_name=podsandbox
2026-12-01T17:10:02.058506Z  INFO multinic_cni::plugin::del: returned to the host device=mnic0
2026-12-01T17:10:02.076269Z  INFO multinic_cni::plugin::del: returned to the host device=mnic1
time="2026-12-01T17:10:02.102232373Z" level=info msg="TearDown network for sandbox \"35bcf5245b1d6f0c631b990c35d91a94c0332397a4db11aa252a6c4e3e145cf0\" successfully"
time="2026-12-01T17:10:02.102327975Z" level=info msg="StopPodSandbox for \"35bcf5245b1d6f0c631b990c35d91a94c0332397a4db11aa252a6c4e3e145cf0\" returns successfully"
time="2026-12-01T17:10:07.414166559Z" level=info msg="RunPodSandbox for name:\"pod-d\"  uid:\"93acf90c-4c1a-47bf-837d-48dae5f98ba3\"  namespace:\"e2e\""
2026-12-01T17:10:07.445917Z  INFO multinic_cni::plugin::add: moved into the pod device=mnic0 pod_if=net1
time="2026-12-01T17:11:05.714657423Z" level=info msg="StopPodSandbox for \"35bcf5245b1d6f0c631b990c35d91a94c0332397a4db11aa252a6c4e3e145cf0\""
time="2026-12-01T17:11:05.725508826Z" level=info msg="TearDown network for sandbox \"35bcf5245b1d6f0c631b990c35d91a94c0332397a4db11aa252a6c4e3e145cf0\" successfully"
"#;

    /// The kubelet's lines about pod-h (test.sh scenario 8), with another pod's line.
    const KUBELET: &str = r#"I1201 14:54:18.300154   29640 kubelet.go:2709] "SyncLoop ADD" source="api" pods=["e2e/pod-h"]
I1201 14:54:18.301743   29640 util.go:34] "No sandbox for pod can be found. Need to start a new one" pod="e2e/pod-h"
I1201 14:54:18.836458   29640 pod_startup_latency_tracker.go:148] "Observed pod startup duration" pod="e2e/pod-h" podStartSLOduration=0.836447302 podStartE2EDuration="836.447302ms"
I1201 14:54:19.002000   29640 kubelet.go:2709] "SyncLoop ADD" source="api" pods=["e2e/pod-hh"]
I1201 14:54:20.632172   29640 kubelet.go:2725] "SyncLoop DELETE" source="api" pods=["e2e/pod-h"]
I1201 14:54:22.164472   29640 kubelet.go:2725] "SyncLoop DELETE" source="api" pods=["e2e/pod-h"]
"#;

    fn t(s: &str) -> Micros {
        parse_rfc3339(s).unwrap_or_default()
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-02T00:00:01.5Z"), Some(86_401_500_000));
        // date -d 2026-12-01T17:09:58Z +%s = 1796144998
        assert_eq!(
            parse_rfc3339("2026-12-01T17:09:58.765251905Z"),
            Some(1_796_144_998_765_251)
        );
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800_000_000));
        for bad in [
            "2026-12-01T17:09:58",
            "2026-13-01T00:00:00Z",
            "x",
            "2026-12-01T25:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        let near = t("2026-12-01T12:00:00Z");
        assert_eq!(
            parse_klog("I1201 14:54:18.300154   29640 kubelet.go:2709] x", near),
            Some(t("2026-12-01T14:54:18.300154Z"))
        );
        // Around new year the year is the one closest to the bench's clock.
        assert_eq!(
            parse_klog("I1231 23:59:59.000000 1 a.go:1] x", t("2027-01-01T00:00:01Z")),
            Some(t("2026-12-31T23:59:59Z"))
        );
        assert_eq!(parse_klog("time=\"2026\" level=info", near), None);
    }

    #[test]
    fn a_pods_start_and_delete_from_real_lines() {
        let pod = PodRef {
            namespace: "e2e".into(),
            name: "pod-c".into(),
            uid: "81afa4c7-0f29-4e78-8282-4418ef7effdc".into(),
        };
        let mut ev = NodeEvents::default();
        scan_containerd(CONTAINERD, &pod, &mut ev);
        assert_eq!(
            ev,
            NodeEvents {
                sandbox_start: Some(t("2026-12-01T17:09:58.765251905Z")),
                cni_first_device: Some(t("2026-12-01T17:09:58.794078Z")),
                cni_done: Some(t("2026-12-01T17:09:58.822324Z")),
                sandbox_ready: Some(t("2026-12-01T17:09:58.910206776Z")),
                sandbox_id: Some("35bcf5245b1d6f0c631b990c35d91a94c0332397a4db11aa252a6c4e3e145cf0".into()),
                stop_sandbox: Some(t("2026-12-01T17:10:01.998564148Z")),
                cni_del_first: Some(t("2026-12-01T17:10:02.058506Z")),
                cni_del_last: Some(t("2026-12-01T17:10:02.076269Z")),
                teardown: Some(t("2026-12-01T17:10:02.102232373Z")),
                ..NodeEvents::default()
            }
        );
        let h = PodRef {
            name: "pod-h".into(),
            ..pod
        };
        let mut ev = NodeEvents::default();
        scan_kubelet(KUBELET, &h, &mut ev, t("2026-12-01T00:00:00Z"));
        assert_eq!(ev.sync_add, Some(t("2026-12-01T14:54:18.300154Z")));
        assert_eq!(ev.sync_delete, Some(t("2026-12-01T14:54:20.632172Z")));
    }

    #[test]
    fn a_macvlan_pod_and_a_pod_without_a_plan() {
        // Captured from row 10's run on the e2e cluster (8 rails): a macvlan pod with 8 children
        // (children 3-7 left out), then a pod with no claim.
        let log = r#"time="2026-12-01T18:37:36.478630659Z" level=info msg="RunPodSandbox for name:\"podstart-mv-61\"  uid:\"848ba754-41a0-4983-ba3a-ffda7a2b1087\"  namespace:\"multinic-bench\""
2026-12-01T18:37:36.499438Z  INFO multinic_cni::plugin::add: created child in the pod device=mnic0 pod_if=net1 mode="macvlan"
2026-12-01T18:37:36.500149Z  INFO multinic_cni::plugin::add: created child in the pod device=mnic1 pod_if=net2 mode="macvlan"
2026-12-01T18:37:36.503099Z  INFO multinic_cni::plugin::add: created child in the pod device=mnic7 pod_if=net8 mode="macvlan"
2026-12-01T18:37:36.503250Z  INFO multinic_cni::plugin::add: attached container=cbd27ba8e9d9d45a15953788227cf12c9f194464a59da252c8c43d2e1177d408 devices=8
time="2026-12-01T18:37:36.518591918Z" level=info msg="connecting to shim cbd27ba8e9d9d45a15953788227cf12c9f194464a59da252c8c43d2e1177d408" address="unix:///run/containerd/s/3410157ec88120259a73958c1963111dfd6d4191228296bf4c74dadf24679acd" namespace=k8s.io protocol=ttrpc version=3
time="2026-12-01T18:37:36.604544864Z" level=info msg="RunPodSandbox for name:\"podstart-mv-61\"  uid:\"848ba754-41a0-4983-ba3a-ffda7a2b1087\"  namespace:\"multinic-bench\" returns sandbox id \"cbd27ba8e9d9d45a15953788227cf12c9f194464a59da252c8c43d2e1177d408\""
time="2026-12-01T18:37:37.158358518Z" level=info msg="StopPodSandbox for \"cbd27ba8e9d9d45a15953788227cf12c9f194464a59da252c8c43d2e1177d408\""
2026-12-01T18:37:37.229740Z  INFO multinic_cni::plugin::del: deleted the attachment's children in one request group=1807277837 children=8
time="2026-12-01T18:37:37.254726170Z" level=info msg="TearDown network for sandbox \"cbd27ba8e9d9d45a15953788227cf12c9f194464a59da252c8c43d2e1177d408\" successfully"
time="2026-12-01T18:37:37.254790185Z" level=info msg="StopPodSandbox for \"cbd27ba8e9d9d45a15953788227cf12c9f194464a59da252c8c43d2e1177d408\" returns successfully"
time="2026-12-01T18:37:38.486377128Z" level=info msg="RunPodSandbox for name:\"podstart-base-62\"  uid:\"10b0aa5d-0a64-49cc-b71d-07fb88932436\"  namespace:\"multinic-bench\""
2026-12-01T18:37:38.505184Z  INFO multinic_cni::plugin::add: no multinic plan for this pod; passing prevResult through container=068ab5388c6656ba82fc2ca44f4fda7246232f1de87b943a6e619bbf36bf3289
time="2026-12-01T18:37:38.638559309Z" level=info msg="RunPodSandbox for name:\"podstart-base-62\"  uid:\"10b0aa5d-0a64-49cc-b71d-07fb88932436\"  namespace:\"multinic-bench\" returns sandbox id \"068ab5388c6656ba82fc2ca44f4fda7246232f1de87b943a6e619bbf36bf3289\""
"#;
        let mv = PodRef {
            namespace: "multinic-bench".into(),
            name: "podstart-mv-61".into(),
            uid: "848ba754-41a0-4983-ba3a-ffda7a2b1087".into(),
        };
        let mut ev = NodeEvents::default();
        scan_containerd(log, &mv, &mut ev);
        assert_eq!(ev.cni_first_device, Some(t("2026-12-01T18:37:36.499438Z")));
        assert_eq!(ev.cni_done, Some(t("2026-12-01T18:37:36.503250Z")));
        assert_eq!(ev.sandbox_ready, Some(t("2026-12-01T18:37:36.604544864Z")));
        assert_eq!(ev.cni_del_first, Some(t("2026-12-01T18:37:37.229740Z")));
        assert_eq!(ev.cni_del_last, ev.cni_del_first);
        assert_eq!(ev.teardown, Some(t("2026-12-01T18:37:37.254726170Z")));
        // The pod with no claim: multinic-cni only passes its result through; the macvlan pod's
        // lines before it are not its own.
        let base = PodRef {
            namespace: "multinic-bench".into(),
            name: "podstart-base-62".into(),
            uid: "10b0aa5d-0a64-49cc-b71d-07fb88932436".into(),
        };
        let mut ev = NodeEvents::default();
        scan_containerd(log, &base, &mut ev);
        assert_eq!(ev.sandbox_start, Some(t("2026-12-01T18:37:38.486377128Z")));
        assert_eq!(ev.cni_first_device, None);
        assert_eq!(ev.cni_done, Some(t("2026-12-01T18:37:38.505184Z")));
        assert_eq!(ev.stop_sandbox, None);
        // Another uid: nothing.
        let mut other = NodeEvents::default();
        scan_containerd(
            log,
            &PodRef {
                uid: "u2".into(),
                ..base
            },
            &mut other,
        );
        assert_eq!(other, NodeEvents::default());
    }

    #[test]
    fn prepare_time_from_the_plugins_metrics() {
        let metrics = multinic_kubelet_plugin::metrics::Metrics::new();
        let empty = metrics.encode();
        assert_eq!(rpc_seconds(&empty, "NodePrepareResources"), Some((0.0, 0)));
        metrics.record_rpc("NodePrepareResources", "ok", 0.0125);
        metrics.record_rpc("NodeUnprepareResources", "ok", 0.5);
        let one = rpc_seconds(&metrics.encode(), "NodePrepareResources");
        assert_eq!(one, Some((0.0125, 1)));
        let ms = one.and_then(|after| one_call_ms((0.0, 0), after));
        assert!(ms.is_some_and(|ms| (ms - 12.5).abs() < 1e-9), "{ms:?}");
        metrics.record_rpc("NodePrepareResources", "ok", 0.001);
        let two = rpc_seconds(&metrics.encode(), "NodePrepareResources");
        assert_eq!(two.and_then(|after| one_call_ms((0.0, 0), after)), None);
    }
}
