//! `multinic demo`: the whole path on one Linux host, no cluster. A sandbox node (a netns with
//! veth "NICs"), the real `multinic-kubelet-plugin` binary publishing them to the in-process test
//! API server, a claim for m NICs allocated the way the scheduler would (first fit over the
//! published devices, the network's CEL selector applied), NodePrepareResources over the plugin's
//! unix socket, `multinic-cni` ADD into a pod netns; then everything is torn down and checked.

use std::path::PathBuf;

use multinic_controller::selector::{Selector, SelectorError};
use serde_json::{Value, json};

use crate::bench::dra::{self, BenchClaim, DraError};
use crate::bench::fixtures::{CniCall, FixtureError, Netns, VethNode, exec_cni_async, run_out, temp_dir};
use crate::bench::rss::{self, NsApi, Proc, READY_TIMEOUT};
use crate::bench::{SiblingError, sibling};

/// The demo network's device selector (veth NICs are published as virtual).
const SELECTOR: &str = r#"device.attributes["multinic.dev"].virtual == true"#;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Number of NICs the pod claims (the sandbox node gets this many plus one spare).
    #[arg(long, default_value_t = 4)]
    nics: usize,
    /// The multinic-kubelet-plugin binary; default: next to this executable.
    #[arg(long)]
    plugin_bin: Option<PathBuf>,
    /// The multinic-cni binary; default: next to this executable.
    #[arg(long)]
    cni_bin: Option<PathBuf>,
}

/// Why `multinic demo` could not run, or which of its checks failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("multinic demo needs root: it creates network namespaces and veth NICs (run it with sudo)")]
    NotRoot,
    #[error("--nics {nics} must be within 1..=16")]
    Nics { nics: usize },
    #[error("{path} is missing: `cargo build -p multinic-kubelet-plugin -p multinic-cni` first")]
    MissingBinary { path: PathBuf },
    #[error(transparent)]
    Sibling(#[from] SiblingError),
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    #[error(transparent)]
    Dra(#[from] DraError),
    #[error("the demo network's selector: {0}")]
    Selector(#[from] SelectorError),
    #[error("only {found} matching devices published, {wanted} wanted")]
    TooFewDevices { found: usize, wanted: usize },
    #[error("the pod {pod} has no net{k}")]
    NoInterface { pod: String, k: usize },
    #[error("net{k} has no address in `ip -br addr` of pod {pod}")]
    NoAddress { pod: String, k: usize },
    #[error("net{k} address {text:?} is not an IPv4 CIDR: {source}")]
    BadAddress {
        k: usize,
        text: String,
        source: ipnet::AddrParseError,
    },
    #[error("net{k} = {ip} is not in block (host {}, rail {rail}) {want}", dra::HOST_INDEX)]
    OutsideBlock {
        k: usize,
        ip: ipnet::Ipv4Net,
        rail: u32,
        want: ipnet::Ipv4Net,
    },
    #[error("ResourceClaim bench/{claim} vanished from the fake API server")]
    ClaimVanished { claim: String },
    #[error("the node's links differ after teardown:\nbefore {before:?}\nafter  {after:?}")]
    LinksDiffer { before: Vec<String>, after: Vec<String> },
    #[error("plans left: {plans:?}")]
    PlansLeft { plans: Vec<String> },
    #[error("claim status entries left on ResourceClaim bench/{claim}")]
    StatusLeft { claim: String },
}

fn step(text: &str) {
    println!("\n== {text}");
}

pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DemoError::NotRoot);
    }
    if !(1..=16).contains(&args.nics) {
        return Err(DemoError::Nics { nics: args.nics });
    }
    let plugin = match args.plugin_bin {
        Some(p) => p,
        None => sibling("multinic-kubelet-plugin")?,
    };
    let cni_bin = match args.cni_bin {
        Some(p) => p,
        None => sibling("multinic-cni")?,
    };
    for bin in [&plugin, &cni_bin] {
        if !bin.exists() {
            return Err(DemoError::MissingBinary { path: bin.clone() });
        }
    }
    let m = args.nics;
    let total = m + 1;
    // total ≤ 17 (m is within 1..=16): it fits.
    let rails = u32::try_from(total).map_err(|_| DemoError::Nics { nics: m })?;

    step(&format!(
        "sandbox node: a netns with {total} veth NICs (their peers in another netns)"
    ));
    let sandbox = VethNode::new("demo", total, Some(9000), |k| (format!("dnic{k}"), format!("dpeer{k}")))?;
    let node = &sandbox.node;
    let before = run_out("ip", &["-n", &node.name, "-o", "link", "show"])?;
    println!(
        "{}",
        run_out("ip", &["-n", &node.name, "-br", "link", "show"])?.trim_end()
    );

    step("the real multinic-kubelet-plugin publishes them to the in-process test API server");
    let api = NsApi::start(Some(node))?;
    let layout = dra::rails_layout("10.10.0.0/16", 8, 5)?;
    dra::insert_blocks(&api.api, &layout, rails)?;
    let dir = temp_dir("demo")?;
    let kubeconfig = dir.path().join("kubeconfig");
    rss::write_kubeconfig(&api.api, &kubeconfig)?;
    let proc = Proc::start(
        &plugin,
        Some(node),
        dra::NODE,
        dir.path(),
        &kubeconfig,
        &["--allow-virtual"],
    )?;
    proc.wait_ready(total, READY_TIMEOUT)?;
    let slices = api.slices()?;
    for s in &slices {
        println!(
            "ResourceSlice {} pool={} generation={} devices={}",
            s.metadata.name.as_deref().unwrap_or(""),
            s.spec.pool.name,
            s.spec.pool.generation,
            s.spec.devices.as_ref().map_or(0, Vec::len)
        );
        for d in s.spec.devices.iter().flatten() {
            let attr = |k: &str| d.attributes.as_ref().and_then(|a| a.get(&format!("multinic.dev/{k}")));
            println!(
                "  {:<10} ifName={:<6} railIndex={}",
                d.name,
                attr("ifName").and_then(|a| a.string.clone()).unwrap_or_default(),
                attr("railIndex").and_then(|a| a.int).unwrap_or(-1)
            );
        }
    }

    step(&format!(
        "scheduler stand-in: first fit of {m} devices matching {SELECTOR}"
    ));
    let selector = Selector::compile(Some(SELECTOR))?;
    let mut chosen = Vec::new();
    for s in &slices {
        for d in s.spec.devices.iter().flatten() {
            if chosen.len() < m && selector.matches(dra::DRIVER, d)? {
                chosen.push(d.name.clone());
            }
        }
    }
    if chosen.len() != m {
        return Err(DemoError::TooFewDevices {
            found: chosen.len(),
            wanted: m,
        });
    }
    println!("allocated: {}", chosen.join(", "));
    let params = dra::params(&layout, "host-device");
    let refs: Vec<&str> = chosen.iter().map(String::as_str).collect();
    let claim: BenchClaim = dra::insert_claim(&api.api, &refs, &params)?;

    step("kubelet stand-in: NodePrepareResources over the plugin's unix socket");
    let mut client = dra::connect(&dir.path().join("plugins").join("dra.sock")).await?;
    let prepared = dra::prepare_one(&mut client, &claim).await?;
    for d in &prepared.devices {
        println!(
            "prepared {} / {} for request {:?}",
            d.pool_name, d.device_name, d.request_names
        );
    }

    step("runtime stand-in: multinic-cni ADD into the pod's netns");
    let pod = Netns::new("demopod")?;
    let call = |command| CniCall::for_pod(command, format!("demo-{}", claim.name), &pod, &claim.pod_uid, &cni_bin);
    let conf =
        json!({"cniVersion": "1.1.0", "name": "demo", "type": "multinic-cni", "stateDir": dir.path().join("state")});
    let result = exec_cni_async(cni_bin.clone(), node.dup_file()?, call("ADD"), conf.clone()).await?;
    let pod_addrs = run_out("ip", &["-n", &pod.name, "-br", "addr", "show"])?;
    println!("{}", pod_addrs.trim_end());
    for (k, rail) in (1..=m).zip(0..rails) {
        let want = dra::block(&layout, rail)?;
        let line = pod_addrs
            .lines()
            .find(|l| l.split_whitespace().next().and_then(|n| n.split('@').next()) == Some(format!("net{k}").as_str()))
            .ok_or_else(|| DemoError::NoInterface {
                pod: pod.name.clone(),
                k,
            })?;
        let text = line.split_whitespace().nth(2).ok_or_else(|| DemoError::NoAddress {
            pod: pod.name.clone(),
            k,
        })?;
        let ip: ipnet::Ipv4Net = text.parse().map_err(|source| DemoError::BadAddress {
            k,
            text: text.to_string(),
            source,
        })?;
        if !want.contains(&ip.addr()) {
            return Err(DemoError::OutsideBlock { k, ip, rail, want });
        }
        println!("net{k}: {ip} in block (host {}, rail {rail}) {want}", dra::HOST_INDEX);
    }
    println!(
        "CNI result: {} interfaces, {} ips",
        result["interfaces"].as_array().map_or(0, Vec::len),
        result["ips"].as_array().map_or(0, Vec::len)
    );

    step("the claim's status.devices[].networkData");
    let status = api
        .api
        .get("resource.k8s.io/v1", "ResourceClaim", Some("bench"), &claim.name)
        .ok_or_else(|| DemoError::ClaimVanished {
            claim: claim.name.clone(),
        })?;
    for d in status["status"]["devices"].as_array().into_iter().flatten() {
        println!(
            "{} {} -> {} {}",
            d["pool"].as_str().unwrap_or(""),
            d["device"].as_str().unwrap_or(""),
            d["networkData"]["interfaceName"].as_str().unwrap_or(""),
            d["networkData"]["ips"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                .unwrap_or_default()
        );
    }

    step("teardown: CNI DEL, NodeUnprepareResources, plugin stopped, namespaces removed");
    exec_cni_async(cni_bin.clone(), node.dup_file()?, call("DEL"), conf).await?;
    dra::unprepare(&mut client, vec![claim.v1()]).await?;
    let after = run_out("ip", &["-n", &node.name, "-o", "link", "show"])?;
    let names = |text: &str| -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .filter_map(|l| {
                l.split(':')
                    .nth(1)
                    .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            })
            .collect();
        v.sort();
        v
    };
    let (before, after) = (names(&before), names(&after));
    if before != after {
        return Err(DemoError::LinksDiffer { before, after });
    }
    let plans = dra::plans_left(&dir.path().join("state"))?;
    if !plans.is_empty() {
        return Err(DemoError::PlansLeft { plans });
    }
    let left = api
        .api
        .get("resource.k8s.io/v1", "ResourceClaim", Some("bench"), &claim.name);
    if !left.is_some_and(|c| c["status"]["devices"].as_array().is_none_or(|d| d.is_empty())) {
        return Err(DemoError::StatusLeft {
            claim: claim.name.clone(),
        });
    }
    drop(client);
    drop(proc);
    drop(pod);
    drop(api);
    drop(sandbox);
    println!("clean: every NIC back in the node under its original name, no plan, no status entry, namespaces deleted");
    Ok(())
}
