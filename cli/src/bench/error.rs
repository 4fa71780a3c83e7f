//! Why a run of a bench row failed: one type for all rows, so the same failure (a fixture, the
//! node plugin, a block, a temp dir, the phase it happened in) is defined once.

use ipnet::Ipv4Net;
use multinic_api::config::ConfigError;
use multinic_kubelet_plugin::driver::PrepareError;
use serde_json::Value;

use super::dra::DraError;
use super::fixtures::FixtureError;

/// A failed run of a bench row (or the setup of its input).
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    #[error(transparent)]
    Dra(#[from] DraError),
    #[error("{what} {value} does not fit a u32")]
    TooLarge { what: &'static str, value: usize },
    #[error("block {block} has no host address")]
    EmptyBlock { block: Ipv4Net },
    #[error("{op}: {source}")]
    Netlink { op: String, source: rtnetlink::Error },
    #[error("no link {name} in the bench's host netns")]
    NoLink { name: String },
    #[error("{what}: the pod has {names:?}, expected lo and {want} NICs")]
    Links {
        what: &'static str,
        names: Vec<String>,
        want: usize,
    },
    #[error("multinic-cni ADD returned {got} interfaces, expected {want}: {result}")]
    Interfaces { got: usize, want: usize, result: Value },
    #[error("{op}: {source}")]
    Lease { op: &'static str, source: PrepareError },
    #[error("{leased} addresses still leased after release")]
    StillLeased { leased: usize },
    #[error("host-local ADD returned {out}, want one address")]
    HostLocal { out: Value },
    #[error("a concurrent NodePrepareResources task did not finish: {0}")]
    PrepareTask(#[from] tokio::task::JoinError),
    #[error(
        "{bin} is missing: build it with `cargo build --release -p multinic-kubelet-plugin` (or pass --plugin-bin)"
    )]
    MissingBin { bin: std::path::PathBuf },
    #[error("{got} devices published, expected {want}")]
    Published { got: usize, want: usize },
    #[error("the bench network's NetworkConfig: {0}")]
    Config(#[from] ConfigError),
    #[error("{phase}: {source}")]
    Phase { phase: String, source: Box<RowError> },
}

impl RowError {
    /// Wraps an error of the run `phase` names (warm-up, run k, which variant).
    pub fn phase(phase: String) -> impl FnOnce(Self) -> Self {
        move |source| Self::Phase {
            phase,
            source: Box::new(source),
        }
    }
}

/// `u32::try_from(value)`, the error naming what the value is.
pub fn to_u32(what: &'static str, value: usize) -> Result<u32, RowError> {
    u32::try_from(value).map_err(|_| RowError::TooLarge { what, value })
}
