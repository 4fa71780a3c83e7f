//! `multinic bench`: the benchmark table of issue 7. Every row is the median of `--runs` runs
//! (min and max alongside); baselines are measured in the same process, interleaved with ours.
//! Kernel work happens only in network namespaces the bench creates and deletes. Exits non-zero
//! when any run failed.

mod arith;
mod attach;
pub mod dra;
mod error;
pub mod fixtures;
mod grpc;
mod ipam;
pub mod load;
mod plot;
mod podlog;
mod podstart;
mod prepare;
pub mod rss;
mod scale;
mod stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use self::attach::{Bins, Mode};
use self::stats::Row;

/// This executable's path could not be read, so a binary beside it cannot be found.
#[derive(Debug, thiserror::Error)]
#[error("locating this executable to find {name} beside it: {source}; pass the path of {name} explicitly")]
pub struct SiblingError {
    name: String,
    source: std::io::Error,
}

/// Why `multinic bench` could not run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(
        "multinic bench needs root: it creates network namespaces, veth pairs and macvlan links (run it with sudo)"
    )]
    NotRoot,
    #[error("--runs must be at least 1")]
    NoRuns,
    #[error("starting the bench's tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the bench thread panicked")]
    Panicked,
    #[error(transparent)]
    Sibling(#[from] SiblingError),
    #[error("{path} is missing: {fix}")]
    Missing { path: PathBuf, fix: &'static str },
    #[error("{failed} row(s) had a failed run")]
    RowsFailed { failed: usize },
    #[error("writing the figure {path}: {source}; pick a writable --plot path")]
    Plot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Arguments of `multinic bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Runs per row (the published table uses at least 20).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// The multinic-cni binary; default: next to this executable.
    #[arg(long)]
    pub cni_bin: Option<PathBuf>,
    /// The multinic-kubelet-plugin binary; default: next to this executable.
    #[arg(long)]
    pub plugin_bin: Option<PathBuf>,
    /// Directory of the reference CNI plugins (host-device, macvlan, static, host-local).
    #[arg(long, default_value = "/usr/lib/cni")]
    pub cni_plugins_dir: PathBuf,
    /// Only these rows (1-13, comma-separated); default: all but 10-13, which need a cluster.
    #[arg(long, value_delimiter = ',')]
    pub rows: Vec<u8>,
    /// Also write the figure of docs/benchmarks.md (SVG): attach/detach vs m of rows 1–3 and
    /// row 10's pod start, from this run's medians.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// The figure's caption (tree, machine, load).
    #[arg(long, default_value = "")]
    pub plot_caption: String,
    #[command(flatten)]
    pub cluster: podstart::ClusterArgs,
    #[command(flatten)]
    pub scale: scale::ScaleArgs,
}

pub(crate) fn sibling(name: &str) -> Result<PathBuf, SiblingError> {
    let exe = std::env::current_exe().map_err(|source| SiblingError {
        name: name.to_string(),
        source,
    })?;
    Ok(exe.parent().unwrap_or(Path::new(".")).join(name))
}

/// Runs the bench on its own multi-threaded runtime and prints the table.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::NotRoot);
    }
    if args.runs == 0 {
        return Err(BenchError::NoRuns);
    }
    let worker = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(BenchError::Runtime)?;
        rt.block_on(bench(args))
    });
    worker.join().map_err(|_| BenchError::Panicked)?
}

async fn bench(args: BenchArgs) -> Result<(), BenchError> {
    // Rows 10-13 run on a cluster: only when asked for.
    let want = |row: u8| (args.rows.is_empty() && row < 10) || args.rows.contains(&row);
    let bins = Bins {
        cni: match &args.cni_bin {
            Some(p) => p.clone(),
            None => sibling("multinic-cni")?,
        },
        plugins_dir: args.cni_plugins_dir.clone(),
    };
    let plugin_bin = match &args.plugin_bin {
        Some(p) => p.clone(),
        None => sibling("multinic-kubelet-plugin")?,
    };
    if want(1) || want(2) || want(3) || want(4) || want(10) {
        attach::check_plugins(&bins)?;
    }
    let runs = args.runs;
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut tables: Vec<String> = Vec::new();
    // The floor's attach median per number of host-device NICs (row 1), for row 10's target.
    let mut floor_attach: BTreeMap<usize, f64> = BTreeMap::new();
    let mut points: Vec<plot::AttachPoint> = Vec::new();
    let mut starts: Vec<plot::StartPoint> = Vec::new();
    let progress = |what: &str| eprintln!("bench: {what} ({runs} runs)…");

    if want(1) || want(2) {
        let (mut floor, mut multus) = (Vec::new(), Vec::new());
        for m in [1, 2, 4, 8, 16] {
            progress(&format!("attach host-device m={m}"));
            let r = attach::bench(&bins, Mode::HostDevice, m, runs).await;
            floor_attach.insert(m, r.floor_attach_ms);
            points.push(r.point);
            floor.push(r.floor_row);
            multus.push(r.multus_row);
            notes.push(r.breakdown);
        }
        if want(1) {
            rows.extend(floor);
        }
        if want(2) {
            rows.extend(multus);
        }
    }
    if want(3) {
        for m in [1, 2, 4, 8, 16] {
            progress(&format!("attach macvlan m={m}"));
            let r = attach::bench(&bins, Mode::Macvlan, m, runs).await;
            points.push(r.point);
            rows.push(r.floor_row);
            rows.push(r.multus_row);
            notes.push(r.breakdown);
        }
    }
    if want(4) {
        progress("IPAM vs host-local");
        rows.extend(ipam::bench(&bins.plugins_dir, runs).await);
    }
    if want(5) {
        progress("NodePrepareResources latency");
        rows.extend(prepare::bench(runs).await);
    }
    if want(6) {
        progress("ResourceSlice build and block arithmetic");
        rows.extend(arith::slices(runs));
        rows.extend(arith::blocks(runs));
    }
    if want(7) {
        progress("peak RSS of the kubelet plugin");
        let (row, note) = rss::bench(&plugin_bin, runs).await;
        rows.push(row);
        notes.push(note);
    }
    if want(8) {
        progress("pure allocator");
        rows.push(arith::allocator(runs));
    }

    if want(9) {
        progress("gRPC :authority fix");
        rows.extend(grpc::bench(runs).await);
    }

    if want(10) {
        let m = args.cluster.nics;
        let floor = match floor_attach.get(&m) {
            Some(&ms) => ms,
            None => {
                progress(&format!(
                    "attach host-device m={m}, the netlink floor of row 10's target"
                ));
                let r = attach::bench(&bins, Mode::HostDevice, m, runs).await;
                rows.push(r.floor_row);
                notes.push(r.breakdown);
                r.floor_attach_ms
            }
        };
        progress(&format!("pods with {m} NICs vs no claim on the cluster"));
        let (r, t, p) = podstart::bench(&args.cluster, runs, floor).await;
        rows.extend(r);
        tables.extend(t);
        starts.extend(p);
    }
    if let Some(path) = &args.plot {
        let figure = plot::svg(&points, &starts, &args.plot_caption);
        std::fs::write(path, figure).map_err(|source| BenchError::Plot {
            path: path.clone(),
            source,
        })?;
        eprintln!("bench: figure written to {}", path.display());
    }

    let wanted = scale::Wanted {
        controller: want(11),
        scheduler: want(12),
        starts: want(13),
    };
    if wanted.controller || wanted.scheduler || wanted.starts {
        progress(&format!(
            "fake nodes {:?} on the cluster: controller, scheduler, plugin requests (once per size)",
            args.scale.scale_nodes
        ));
        let (r, n) = scale::bench(&args.cluster, &args.scale, wanted).await;
        rows.extend(r);
        notes.extend(n);
    }

    println!("{}", stats::render(&rows));
    for n in &notes {
        println!("- {n}");
    }
    for t in &tables {
        print!("\n{t}");
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| r.error.is_some()).collect();
    for r in &failed {
        eprintln!(
            "FAILED row {} ({}): {}",
            r.id,
            r.case,
            r.error.as_deref().unwrap_or_default()
        );
    }
    if !failed.is_empty() {
        return Err(BenchError::RowsFailed { failed: failed.len() });
    }
    Ok(())
}
