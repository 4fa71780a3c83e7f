//! The node's IP leases: every plan in memory, with the addresses it holds (design.md §9).
//!
//! The plan file is the lease: an address is leased exactly when a durable plan file holds it.
//! A new plan is *reserved* under the lock (its addresses join the used set, so concurrent
//! prepares never pick them), then written outside the lock by the group committer: every plan
//! reserved while a batch is on its way to disk goes into the next batch, so one `syncfs` and one
//! directory `fsync` ([`PlanStore::write_batch`]) cover all of them and concurrent prepares do not
//! queue behind each other's syncs. A lone prepare is committed at once (a batch of one); nothing
//! waits for company. The committer, not the caller, settles each reservation, so a caller that is
//! cancelled mid-commit leaves no reservation behind.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use multinic_api::plan::{Plan, PlanError, PlanStore};
use tokio::sync::{Mutex, oneshot, watch};

/// Most plans in one batch; more wait for the next one.
const MAX_BATCH: usize = 256;

enum Entry {
    /// Durable.
    Committed(Plan),
    /// Reserved, its file on the way to disk; `done` flips once the commit is settled.
    Pending { done: watch::Receiver<bool> },
}

#[derive(Default)]
struct Book {
    plans: HashMap<String, Entry>,
    /// Ordered, so the allocator walks a block's leased addresses in order.
    used: BTreeSet<IpAddr>,
}

fn addrs(plan: &Plan) -> impl Iterator<Item = IpAddr> + '_ {
    plan.devices.iter().flat_map(|d| d.ips.iter().map(|n| n.addr()))
}

impl Book {
    fn take(&mut self, plan: &Plan) {
        self.used.extend(addrs(plan));
    }

    fn free(&mut self, plan: &Plan) {
        for ip in addrs(plan) {
            self.used.remove(&ip);
        }
    }
}

/// One reservation on its way to disk.
struct Job {
    plan: Plan,
    reply: oneshot::Sender<Result<Plan, PlanError>>,
    done: watch::Sender<bool>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// A committer task is running (it drains `jobs` until it finds it empty).
    running: bool,
}

/// What a lookup found.
enum Found {
    Plan(Plan),
    Absent,
    Wait(watch::Receiver<bool>),
}

/// The leases of this node.
pub struct Leases {
    book: Arc<Mutex<Book>>,
    queue: Arc<std::sync::Mutex<Queue>>,
    store: PlanStore,
}

impl Leases {
    /// The leases of the plans loaded from `store` at start.
    pub fn new(store: PlanStore, plans: Vec<Plan>) -> Self {
        let mut book = Book::default();
        for plan in plans {
            book.take(&plan);
            book.plans.insert(plan.claim_uid.clone(), Entry::Committed(plan));
        }
        Self {
            book: Arc::new(Mutex::new(book)),
            queue: Arc::default(),
            store,
        }
    }

    /// The committed plans.
    pub async fn plans(&self) -> Vec<Plan> {
        let book = self.book.lock().await;
        let mut plans: Vec<Plan> = book
            .plans
            .values()
            .filter_map(|e| match e {
                Entry::Committed(p) => Some(p.clone()),
                Entry::Pending { .. } => None,
            })
            .collect();
        plans.sort_by(|a, b| a.claim_uid.cmp(&b.claim_uid));
        plans
    }

    /// Every leased address (reserved ones included).
    pub async fn used(&self) -> BTreeSet<IpAddr> {
        self.book.lock().await.used.clone()
    }

    /// Runs `f` over every leased address under the lease lock: no prepare picks an address
    /// meanwhile (the pool decision, [`crate::pool::run`]).
    pub async fn with_used<T>(&self, f: impl FnOnce(&BTreeSet<IpAddr>) -> T) -> T {
        f(&self.book.lock().await.used)
    }

    fn find(book: &Book, uid: &str) -> Found {
        match book.plans.get(uid) {
            Some(Entry::Committed(p)) => Found::Plan(p.clone()),
            Some(Entry::Pending { done }) => Found::Wait(done.clone()),
            None => Found::Absent,
        }
    }

    async fn settled(mut done: watch::Receiver<bool>) {
        // A dropped sender also means settled (the committer never drops one unsettled).
        let _ = done.wait_for(|d| *d).await;
    }

    /// The committed plan of a claim; waits while its commit is in flight.
    pub async fn get(&self, uid: &str) -> Option<Plan> {
        loop {
            let found = Self::find(&*self.book.lock().await, uid);
            match found {
                Found::Plan(p) => return Some(p),
                Found::Absent => return None,
                Found::Wait(done) => Self::settled(done).await,
            }
        }
    }

    /// The plan of a claim: the committed one, or a new one built by `build` against the used
    /// addresses under the lock, reserved, and committed to disk with whatever else is pending.
    /// `write_err` turns a failed commit into the caller's error (the reservation and any file are
    /// gone by then).
    pub async fn lease<E>(
        &self,
        uid: &str,
        build: impl FnOnce(&BTreeSet<IpAddr>) -> Result<Plan, E>,
        write_err: impl FnOnce(PlanError) -> E,
    ) -> Result<Plan, E> {
        let reply = loop {
            let mut book = self.book.lock().await;
            match Self::find(&book, uid) {
                Found::Plan(p) => return Ok(p),
                Found::Wait(done) => {
                    drop(book);
                    Self::settled(done).await;
                }
                Found::Absent => {
                    let plan = build(&book.used)?;
                    book.take(&plan);
                    let (done_tx, done_rx) = watch::channel(false);
                    book.plans.insert(uid.to_string(), Entry::Pending { done: done_rx });
                    let (reply_tx, reply_rx) = oneshot::channel();
                    self.submit(Job {
                        plan,
                        reply: reply_tx,
                        done: done_tx,
                    });
                    break reply_rx;
                }
            }
        };
        match reply.await {
            Ok(Ok(plan)) => Ok(plan),
            Ok(Err(e)) => Err(write_err(e)),
            Err(_) => Err(write_err(PlanError::Io {
                path: self.store.dir().to_path_buf(),
                source: std::io::Error::other("the plan committer stopped before this plan was written"),
            })),
        }
    }

    /// Queues a job; starts a committer task when none is running.
    fn submit(&self, job: Job) {
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.jobs.push(job);
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            tokio::spawn(commit_loop(self.book.clone(), self.queue.clone(), self.store.clone()));
        }
    }

    /// Releases a claim's lease: `remove` deletes its file first (under the lock, so no one takes
    /// the addresses while the file still holds them), then the addresses are free. Waits while
    /// the claim's commit is in flight; an unknown claim is success.
    pub async fn release<E>(&self, uid: &str, remove: impl FnOnce(&Plan) -> Result<(), E>) -> Result<(), E> {
        loop {
            let mut book = self.book.lock().await;
            match Self::find(&book, uid) {
                Found::Absent => return Ok(()),
                Found::Wait(done) => {
                    drop(book);
                    Self::settled(done).await;
                }
                Found::Plan(plan) => {
                    remove(&plan)?;
                    book.plans.remove(uid);
                    book.free(&plan);
                    return Ok(());
                }
            }
        }
    }
}

/// The committer: takes every queued job as one batch, writes it on the blocking pool, settles
/// each reservation (committed, or freed and its file removed), answers the callers; stops when
/// the queue is empty.
async fn commit_loop(book: Arc<Mutex<Book>>, queue: Arc<std::sync::Mutex<Queue>>, store: PlanStore) {
    loop {
        let jobs: Vec<Job> = {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.jobs.is_empty() {
                q.running = false;
                return;
            }
            let n = q.jobs.len().min(MAX_BATCH);
            q.jobs.drain(..n).collect()
        };
        let plans: Vec<Plan> = jobs.iter().map(|j| j.plan.clone()).collect();
        let writer = store.clone();
        let results = tokio::task::spawn_blocking(move || {
            let refs: Vec<&Plan> = plans.iter().collect();
            let results = writer.write_batch(&refs);
            // A failed plan may be on disk in part; take it away so the disk and the leases agree.
            for (plan, result) in plans.iter().zip(&results) {
                if result.is_err()
                    && let Err(error) = writer.remove(plan)
                {
                    tracing::error!(claim = %plan.claim_uid, %error, "removing a plan whose write failed");
                }
            }
            results
        })
        .await
        .unwrap_or_else(|e| {
            let failed = || {
                Err(PlanError::Io {
                    path: store.dir().to_path_buf(),
                    source: std::io::Error::other(format!("the plan writer failed: {e}")),
                })
            };
            jobs.iter().map(|_| failed()).collect()
        });
        tracing::debug!(plans = jobs.len(), "plan batch committed");
        let mut b = book.lock().await;
        for (job, result) in jobs.into_iter().zip(results) {
            let uid = job.plan.claim_uid.clone();
            let reply = match result {
                Ok(()) => {
                    b.plans.insert(uid, Entry::Committed(job.plan.clone()));
                    Ok(job.plan)
                }
                Err(e) => {
                    b.plans.remove(&uid);
                    b.free(&job.plan);
                    Err(e)
                }
            };
            let _ = job.done.send(true);
            let _ = job.reply.send(reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use multinic_api::AttachmentMode;
    use multinic_api::plan::{PLAN_VERSION, PlannedDevice, PodRef};

    use super::*;

    fn plan(uid: &str, ip: IpAddr) -> Plan {
        Plan {
            version: PLAN_VERSION,
            claim_uid: uid.into(),
            namespace: "ml".into(),
            name: uid.into(),
            pods: vec![PodRef {
                uid: format!("pod-{uid}"),
                name: format!("pod-{uid}"),
            }],
            network: None,
            devices: vec![PlannedDevice {
                request: "nics".into(),
                pool: "node".into(),
                device: "nic-0".into(),
                host_if_name: "ens0".into(),
                rail_index: Some(0),
                pod_if_name: "net1".into(),
                mode: AttachmentMode::HostDevice,
                mtu: None,
                mac: None,
                ips: vec![ipnet::IpNet::new(ip, 24).unwrap()],
                gateway: None,
                routes: Vec::new(),
                table: None,
                rdma_device: None,
            }],
        }
    }

    /// First free address of 10.0.0.0/24.
    fn first_free(uid: &str, used: &BTreeSet<IpAddr>) -> Result<Plan, String> {
        (1..=254u8)
            .map(|i| IpAddr::from([10, 0, 0, i]))
            .find(|ip| !used.contains(ip))
            .map(|ip| plan(uid, ip))
            .ok_or_else(|| "exhausted".to_string())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_leases_get_distinct_addresses_and_all_reach_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = PlanStore::new(dir.path());
        let leases = Leases::new(store.clone(), Vec::new());
        let uids: Vec<String> = (0..60).map(|i| format!("claim-{i}")).collect();
        let plans = futures::future::try_join_all(
            uids.iter()
                .map(|u| leases.lease(u, |used| first_free(u, used), |e| e.to_string())),
        )
        .await
        .unwrap();
        let ips: BTreeSet<IpAddr> = plans.iter().map(|p| p.devices[0].ips[0].addr()).collect();
        assert_eq!(ips.len(), 60, "every claim got its own address");
        assert_eq!(leases.used().await, ips);
        let (on_disk, errors) = store.load_all().unwrap();
        assert!(errors.is_empty());
        assert_eq!(on_disk, leases.plans().await, "the leases are the plans on disk");
        // Leasing again returns the committed plan without building.
        let again = leases
            .lease("claim-7", |_| Err("built twice".to_string()), |e| e.to_string())
            .await
            .unwrap();
        assert_eq!(Some(&again), plans.iter().find(|p| p.claim_uid == "claim-7"));
    }

    #[tokio::test]
    async fn a_failed_commit_frees_the_reservation() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").unwrap();
        let leases = Leases::new(PlanStore::new(&file), Vec::new());
        let err = leases
            .lease("claim-1", |used| first_free("claim-1", used), |e| e.to_string())
            .await
            .unwrap_err();
        assert!(err.contains("not-a-dir"), "{err}");
        assert!(leases.used().await.is_empty(), "the addresses are free again");
        assert_eq!(leases.get("claim-1").await, None);
        let build_err = leases
            .lease("claim-2", |_| Err("no blocks".to_string()), |e| e.to_string())
            .await
            .unwrap_err();
        assert_eq!(build_err, "no blocks");
        assert!(leases.used().await.is_empty());
    }

    #[tokio::test]
    async fn get_and_release_wait_for_the_commit_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let store = PlanStore::new(dir.path());
        let leases = Leases::new(store.clone(), Vec::new());
        // `lease` reserves on its first poll; `get` polled next finds the reservation and waits.
        let (leased, seen) = tokio::join!(
            leases.lease("claim-1", |used| first_free("claim-1", used), |e| e.to_string()),
            leases.get("claim-1"),
        );
        let leased = leased.unwrap();
        assert_eq!(
            seen.as_ref(),
            Some(&leased),
            "get returned the committed plan, not nothing"
        );
        let (leased2, released) = tokio::join!(
            leases.lease("claim-2", |used| first_free("claim-2", used), |e| e.to_string()),
            leases.release("claim-2", |p| store.remove(p)),
        );
        leased2.unwrap();
        released.unwrap();
        assert_eq!(
            store.claim_uids().unwrap(),
            ["claim-1"],
            "released after its commit, file gone"
        );
        assert_eq!(leases.used().await, BTreeSet::from([leased.devices[0].ips[0].addr()]));
        leases.release("unknown", |p| store.remove(p)).await.unwrap();
    }
}
