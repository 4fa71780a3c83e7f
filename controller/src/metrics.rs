//! Controller metrics: reconciles by outcome, leadership.

use std::future::Future;
use std::pin::Pin;

use multinic_api::observe::Exposition;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<OutcomeLabels, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("multinic_controller");
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "MultiNicNetwork reconciles by outcome",
            reconciles.clone(),
        );
        registry.register("leader", "1 while this replica holds the leader lease", leader.clone());
        Self {
            registry,
            reconciles,
            leader,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, outcome: &str) {
        self.reconciles
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}

impl Exposition for Metrics {
    fn render(&self) -> Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(async move {
            let mut out = String::new();
            if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
                out.clear();
            }
            out
        })
    }

    /// A standby replica is healthy too: it is waiting for the lease.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}
