//! Crash test of the plan store's batch path (issue 17): a writer process commits batches of new
//! and rewritten plans in a loop and is killed (SIGKILL) at varied moments, mid-batch. After every
//! kill the store holds only whole plans (no torn or foreign content under a plan's name), every
//! plan the writer was told is written is there with its pod index marker, and a new writer
//! commits over whatever temp files the dead one left.
//!
//! A process kill keeps the page cache, so this shows the order of the steps (markers, temp file,
//! rename) and the reporting; what survives a power loss rests on the syncs documented at
//! `PlanStore::write_batch`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use multinic_api::plan::{PLAN_VERSION, Plan, PlanStore, PlannedDevice, PodRef};

const CHILD_ENV: &str = "MULTINIC_PLAN_CRASH_DIR";
const TEST: &str = "killed_batch_writer_leaves_only_whole_plans";
const BATCH: usize = 24;
/// Plans every batch rewrites (a rename over an existing plan).
const FIXED: usize = 4;

/// The plan `uid` gets in generation `generation`; the content says which it is.
fn plan_for(uid: &str, generation: u64) -> Plan {
    Plan {
        version: PLAN_VERSION,
        claim_uid: uid.into(),
        namespace: "crash".into(),
        name: format!("gen-{generation}"),
        pods: vec![PodRef {
            uid: format!("pod-{uid}"),
            name: format!("pod-{uid}"),
        }],
        network: Some("rails".into()),
        devices: (0..8)
            .map(|k| PlannedDevice {
                request: "nics".into(),
                pool: "node".into(),
                device: format!("nic-{k}"),
                host_if_name: format!("ens{k}"),
                rail_index: Some(k),
                pod_if_name: format!("net{}", k + 1),
                mode: multinic_api::AttachmentMode::HostDevice,
                mtu: Some(9000),
                mac: None,
                ips: vec![
                    format!("10.{k}.{}.{}/24", generation % 200, 1 + generation % 250)
                        .parse()
                        .unwrap(),
                ],
                gateway: None,
                routes: Vec::new(),
                table: Some(101 + k),
                rdma_device: None,
            })
            .collect(),
    }
}

/// The writer: batches of new plans plus rewrites of the fixed ones; after each batch one line
/// per plan reported written, `<uid> <generation>`.
fn writer(dir: &Path) {
    let store = PlanStore::new(dir);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = std::io::stdout().lock();
    for generation in 0u64.. {
        if Instant::now() > deadline {
            return;
        }
        let mut plans: Vec<Plan> = (0..BATCH - FIXED)
            .map(|k| plan_for(&format!("c-{generation}-{k}"), generation))
            .collect();
        plans.extend((0..FIXED).map(|k| plan_for(&format!("fixed-{k}"), generation)));
        let refs: Vec<&Plan> = plans.iter().collect();
        for (plan, result) in plans.iter().zip(store.write_batch(&refs)) {
            result.unwrap_or_else(|e| panic!("writer: {e}"));
            let _ = writeln!(out, "{} {generation}", plan.claim_uid);
        }
        let _ = out.flush();
    }
}

fn generation_of(plan: &Plan) -> u64 {
    plan.name
        .strip_prefix("gen-")
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("{}: name {:?} is not a generation", plan.claim_uid, plan.name))
}

/// Checks the store a dead writer left; `reported` are the (uid, generation) it was told written.
fn check(dir: &Path, reported: &[(String, u64)], round: usize) {
    let store = PlanStore::new(dir);
    let (plans, errors) = store.load_all().unwrap();
    assert!(
        errors.is_empty(),
        "round {round}: unreadable plans after the kill: {errors:?}"
    );
    for plan in &plans {
        let generation = generation_of(plan);
        assert_eq!(
            plan,
            &plan_for(&plan.claim_uid, generation),
            "round {round}: {} holds content that was never written under its name",
            plan.claim_uid
        );
        let (for_pod, _) = store.load_for_pod(&format!("pod-{}", plan.claim_uid)).unwrap();
        assert_eq!(
            for_pod.len(),
            1,
            "round {round}: {} has no pod index marker",
            plan.claim_uid
        );
    }
    let have: BTreeSet<&str> = plans.iter().map(|p| p.claim_uid.as_str()).collect();
    for (uid, generation) in reported {
        assert!(
            have.contains(uid.as_str()),
            "round {round}: {uid} was reported written but is gone"
        );
        let plan = plans.iter().find(|p| &p.claim_uid == uid).map(generation_of);
        assert!(
            plan >= Some(*generation),
            "round {round}: {uid} went back from generation {generation} to {plan:?}"
        );
    }
    // A new writer commits over the dead one's leftovers.
    let next = plan_for("after-crash", 1);
    store.write_batch(&[&next]).remove(0).unwrap();
    assert_eq!(store.load("after-crash").unwrap(), Some(next));
}

#[test]
fn killed_batch_writer_leaves_only_whole_plans() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        writer(Path::new(&dir));
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(&exe)
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let parse = |l: &str| -> Option<(String, u64)> {
            let (uid, generation) = l.split_once(' ')?;
            Some((uid.to_string(), generation.parse::<u64>().ok()?))
        };
        let mut lines = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok);
        // Wait for the first committed batch, so every round kills a writer that is writing.
        let first = lines
            .by_ref()
            .find_map(|l| parse(&l))
            .expect("the writer committed nothing");
        let reader = std::thread::spawn(move || {
            std::iter::once(first)
                .chain(lines.filter_map(|l| parse(&l)))
                .collect::<Vec<_>>()
        });
        // Then kill at a different point of a batch each round.
        std::thread::sleep(Duration::from_millis(3 + 7 * round as u64));
        child.kill().unwrap();
        child.wait().unwrap();
        let reported = reader.join().unwrap();
        check(dir.path(), &reported, round);
    }
}
