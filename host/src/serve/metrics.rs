//! The service's Prometheus metrics (names fixed for every host; see
//! README.md "Decision service").

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: String,
    pathway: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
    outcome: String,
    pathway: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EscalationLabels {
    role: String,
    pathway: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BundleLabels {
    version: String,
    hash: String,
}

/// Every metric of the service, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    policy_decisions: Family<PolicyLabels, Counter>,
    duration: Histogram,
    swaps: Family<ResultLabels, Counter>,
    store_errors: Family<KindLabels, Counter>,
    escalations: Family<EscalationLabels, Counter>,
    bundle_info: Family<BundleLabels, Gauge>,
    current_bundle: Mutex<Option<BundleLabels>>,
}

/// The parts of a decision the metrics read.
#[derive(Deserialize)]
struct Seen {
    outcome: String,
    pathway: String,
    #[serde(default)]
    reasons: Vec<String>,
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    escalation: Option<String>,
    #[serde(default)]
    error: Option<SeenError>,
}

#[derive(Deserialize)]
struct SeenError {
    kind: String,
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "portcullis_decisions",
            "Decisions by outcome, pathway and first reason (`error: KIND` for faults)",
            decisions.clone(),
        );
        let policy_decisions = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "portcullis_policy_decisions",
            "Decisions by determining policy id, outcome and pathway",
            policy_decisions.clone(),
        );
        // 50 µs … about 1.6 s.
        let duration = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.000_05, 2.0, 16,
        ));
        registry.register(
            "portcullis_decide_duration_seconds",
            "Time from receiving a decide, batch or event call to having its decisions (queueing for a guest instance included)",
            duration.clone(),
        );
        let swaps = Family::<ResultLabels, Counter>::default();
        registry.register(
            "portcullis_bundle_swaps",
            "Bundle installs by result (accepted, refused, rollback)",
            swaps.clone(),
        );
        let store_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "portcullis_store_errors",
            "Decisions that met a store problem, by kind (unavailable: failed closed; degraded: local counting)",
            store_errors.clone(),
        );
        let escalations = Family::<EscalationLabels, Counter>::default();
        registry.register(
            "portcullis_escalations",
            "Decisions escalated, by escalation target and pathway",
            escalations.clone(),
        );
        let bundle_info = Family::<BundleLabels, Gauge>::default();
        registry.register(
            "portcullis_bundle_info",
            "The bundle serving now (value 1)",
            bundle_info.clone(),
        );
        Metrics {
            registry,
            decisions,
            policy_decisions,
            duration,
            swaps,
            store_errors,
            escalations,
            bundle_info,
            current_bundle: Mutex::new(None),
        }
    }

    /// Count one decision (JSON text as the guest returned it).
    pub fn decision(&self, json: &str) {
        let Ok(seen) = serde_json::from_str::<Seen>(json) else {
            self.decisions
                .get_or_create(&DecisionLabels {
                    outcome: "deny".into(),
                    pathway: "authentic".into(),
                    reason: "error: malformed-decision".into(),
                })
                .inc();
            return;
        };
        // Fault messages vary (they quote the request): label by kind only.
        let reason = match &seen.error {
            Some(e) => format!("error: {}", e.kind),
            None => seen
                .reasons
                .first()
                .cloned()
                .unwrap_or_else(|| "none".into()),
        };
        self.decisions
            .get_or_create(&DecisionLabels {
                outcome: seen.outcome.clone(),
                pathway: seen.pathway.clone(),
                reason,
            })
            .inc();
        for p in &seen.policies {
            self.policy_decisions
                .get_or_create(&PolicyLabels {
                    policy: p.clone(),
                    outcome: seen.outcome.clone(),
                    pathway: seen.pathway.clone(),
                })
                .inc();
        }
        if let Some(role) = &seen.escalation {
            self.escalations
                .get_or_create(&EscalationLabels {
                    role: role.clone(),
                    pathway: seen.pathway.clone(),
                })
                .inc();
        }
        if seen.error.is_some_and(|e| e.kind == "store") {
            self.store_error("fail_closed");
        }
    }

    /// Time of one call, in seconds.
    pub fn duration(&self, seconds: f64) {
        self.duration.observe(seconds);
    }

    /// Count a swap by result.
    pub fn swap(&self, result: &str) {
        self.swaps
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// Count a store problem.
    pub fn store_error(&self, kind: &str) {
        self.store_errors
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    /// Bring `portcullis_store_errors_total{kind}` up to a running total
    /// counted elsewhere (the Redis store's own counters).
    pub fn store_errors_seen(&self, kind: &str, total: u64) {
        let c = self
            .store_errors
            .get_or_create(&KindLabels { kind: kind.into() });
        let now = c.get();
        if total > now {
            c.inc_by(total - now);
        }
    }

    /// The bundle now serving.
    pub fn bundle(&self, version: &str, hash: &str) {
        let labels = BundleLabels {
            version: version.into(),
            hash: hash.into(),
        };
        if let Ok(mut cur) = self.current_bundle.lock() {
            if let Some(old) = cur.take() {
                self.bundle_info.remove(&old);
            }
            *cur = Some(labels.clone());
        }
        self.bundle_info.get_or_create(&labels).set(1);
    }

    /// The registry, for metrics of optional parts (shadow mode).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out = "# cannot encode metrics\n".into();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
