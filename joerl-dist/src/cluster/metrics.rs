//! Metrics through the [`metrics`] facade, and a Prometheus exporter.
//!
//! Nothing is recorded until a recorder is installed: [`prometheus`]
//! installs `metrics-exporter-prometheus`'s (its text is served at
//! `GET /metrics` by the management listener,
//! [`management::http`](super::management::http)), and
//! [`prometheus_listener`] serves it on a listener of its own instead. Both
//! are off by default and install one recorder for the process (the first
//! call wins).
//!
//! [`report`] publishes a node's state every second, each series labelled
//! with `node` (the node's full name), so that nodes in one process keep
//! apart. The names (counters end in `_total`; Prometheus' `rate()` gives
//! per-second rates):
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `joerl_dist_messages_sent_total` | counter | node, peer | messages queued for the peer |
//! | `joerl_dist_messages_received_total` | counter | node, peer | messages read from the peer |
//! | `joerl_dist_bytes_sent_total` / `_received_total` | counter | node, peer | bytes written / read |
//! | `joerl_dist_dropped_out_total` / `_dropped_in_total` | counter | node, peer | messages lost to the peer / dropped on arrival |
//! | `joerl_dist_reconnects_total` | counter | node, peer | connections after the first |
//! | `joerl_dist_peer_connected` | gauge | node, peer | 1 while connected |
//! | `joerl_dist_queue_depth` | gauge | node, peer | frames waiting to be written |
//! | `joerl_cluster_members` | gauge | node, state | members by state, the node included (`active`, `suspected`, `failed`, `left`, `joining`) |
//! | `joerl_cluster_healthy` | gauge | node | 1 if the node sees a healthy majority |
//! | `joerl_leader_epoch` | gauge | node | the accepted leader's epoch (0: none) |
//! | `joerl_leader_is_leader` | gauge | node | 1 on the leader |
//! | `joerl_leader_changes_total` | counter | node | `LeaderChanged` events seen |
//! | `joerl_placement_activations` | gauge | node, kind | activations running here |
//! | `joerl_placement_events_total` | counter | node, event | `activated`, `handed_off`, `forwarded`, `claim_retries`, `claims_moved`, `eager_activations`, `state_received`, `route_hits`, `route_misses`, `thread_copy_misses`, `duplicates_dropped`, `pids_learned`, `pids_forgotten`, `redirected` |
//! | `joerl_placement_failures_total` | counter | node, cause | `not_owner`, `no_majority`, `stopped_no_majority`, `unknown_kind`, `state_undecodable`, `stale_directives`, `undecodable` |
//! | `joerl_delivery_events_total` | counter | node, event | guaranteed deliveries from here: `acked`, `resent`, `expired`, `circuit_open` |
//! | `joerl_delivery_unacknowledged` | gauge | node | guaranteed messages kept, not acknowledged yet |
//! | `joerl_breaker_state` | gauge | node, target | 0 closed, 1 half-open, 2 open (breakers given to [`Reporter::breakers`]) |
//!
//! joerl-core adds `joerl_call_duration_seconds{target}` (a histogram of
//! typed calls) and `joerl_call_failures_total{target, cause}`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::placement::{BreakerState, Breakers, Placements};
use super::{ClusterEvent, MemberState};
use crate::DistributedSystem;

/// How often [`report`] publishes.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static INSTALL: Mutex<()> = Mutex::new(());

/// Why the exporter was not installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Another recorder is installed in this process (one per process):
    /// use the one there is, or install joerl's first.
    #[error("a metrics recorder is installed already: {0}")]
    Install(String),
    /// The listener of [`prometheus_listener`] was asked for after the
    /// exporter was installed without one.
    #[error("the Prometheus exporter is installed already, without a listener of its own")]
    Installed,
}

/// Installs the Prometheus recorder for this process (once; later calls
/// return the same handle), whose [`PrometheusHandle::render`] is the text
/// a scrape gets.
pub fn prometheus() -> Result<PrometheusHandle, MetricsError> {
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| MetricsError::Install(e.to_string()))?;
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}

/// Installs the Prometheus recorder with a listener of its own on `addr`
/// (every path answers the metrics text). Call it from a tokio runtime.
pub fn prometheus_listener(addr: SocketAddr) -> Result<PrometheusHandle, MetricsError> {
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if HANDLE.get().is_some() {
        return Err(MetricsError::Installed);
    }
    let (recorder, exporter) = PrometheusBuilder::new()
        .with_http_listener(addr)
        .build()
        .map_err(|e| MetricsError::Install(e.to_string()))?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| MetricsError::Install(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = exporter.await {
            tracing::warn!(error = ?e, "metrics: the Prometheus listener stopped");
        }
    });
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}

/// The handle of the installed Prometheus recorder, if any.
pub fn installed() -> Option<PrometheusHandle> {
    HANDLE.get().cloned()
}

/// The task publishing one node's metrics: stops when dropped, or when
/// the node is gone.
#[derive(Debug)]
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
    breakers: Arc<Mutex<Vec<Breakers>>>,
}

impl Reporter {
    /// Publishes these breakers' states too (`joerl_breaker_state`).
    pub fn breakers(&self, breakers: Breakers) {
        self.breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(breakers);
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes `node`'s metrics (and its placement's, if given) every
/// [`REPORT_INTERVAL`], from a task, until the returned [`Reporter`] is
/// dropped or the node is gone.
pub fn report(node: &DistributedSystem, placements: Option<&Placements>) -> Reporter {
    let weak = node.downgrade();
    let placements = placements.cloned();
    let breakers: Arc<Mutex<Vec<Breakers>>> = Arc::default();
    let shared = breakers.clone();
    let name = node.name().to_string();
    let mut events = node.cluster().ok().map(|c| c.subscribe());
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(REPORT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let changes = metrics::counter!("joerl_leader_changes_total", "node" => name.clone());
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                e = async {
                    match events.as_mut() {
                        Some(ev) => ev.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    match e {
                        Some(ClusterEvent::LeaderChanged { .. }) => changes.increment(1),
                        Some(_) => {}
                        None => events = None,
                    }
                    continue;
                }
            }
            let Some(node) = weak.upgrade() else {
                return;
            };
            publish(&node, &name, placements.as_ref(), &shared);
        }
    });
    Reporter { task, breakers }
}

fn publish(
    node: &DistributedSystem,
    name: &str,
    placements: Option<&Placements>,
    breakers: &Mutex<Vec<Breakers>>,
) {
    let n = name.to_string();
    for p in node.stats().peers {
        let peer = p.node.clone();
        let c = |metric: &'static str, v: u64| {
            metrics::counter!(metric, "node" => n.clone(), "peer" => peer.clone()).absolute(v);
        };
        c("joerl_dist_messages_sent_total", p.msgs_out);
        c("joerl_dist_messages_received_total", p.msgs_in);
        c("joerl_dist_bytes_sent_total", p.bytes_out);
        c("joerl_dist_bytes_received_total", p.bytes_in);
        c("joerl_dist_dropped_out_total", p.dropped_out);
        c("joerl_dist_dropped_in_total", p.dropped_in);
        c("joerl_dist_reconnects_total", p.reconnects);
        metrics::gauge!("joerl_dist_peer_connected", "node" => n.clone(), "peer" => peer.clone())
            .set(if p.connected { 1.0 } else { 0.0 });
        metrics::gauge!("joerl_dist_queue_depth", "node" => n.clone(), "peer" => peer)
            .set(p.queue_depth as f64);
    }
    if let Ok(cluster) = node.cluster() {
        let mut by_state: BTreeMap<&'static str, usize> = [
            ("active", 0),
            ("suspected", 0),
            ("failed", 0),
            ("left", 0),
            ("joining", 0),
        ]
        .into_iter()
        .collect();
        let mut members = cluster.members();
        if !members.iter().any(|m| m.name == name) {
            members.push(cluster.self_member());
        }
        for m in members {
            let s = match m.state {
                MemberState::Active => "active",
                MemberState::Suspected => "suspected",
                MemberState::Failed => "failed",
                MemberState::Left | MemberState::Leaving => "left",
                _ => "joining",
            };
            *by_state.entry(s).or_default() += 1;
        }
        for (state, count) in by_state {
            metrics::gauge!("joerl_cluster_members", "node" => n.clone(), "state" => state)
                .set(count as f64);
        }
        let healthy = cluster.health().healthy;
        metrics::gauge!("joerl_cluster_healthy", "node" => n.clone()).set(if healthy {
            1.0
        } else {
            0.0
        });
    }
    if let Some(p) = placements {
        let leader = p.leader();
        metrics::gauge!("joerl_leader_epoch", "node" => n.clone())
            .set(leader.as_ref().map_or(0.0, |l| l.epoch as f64));
        let is_leader = leader.is_some_and(|l| l.node == name);
        metrics::gauge!("joerl_leader_is_leader", "node" => n.clone()).set(if is_leader {
            1.0
        } else {
            0.0
        });
        let mut per_kind: BTreeMap<String, usize> = BTreeMap::new();
        for a in p.local_activations() {
            *per_kind.entry(a.identity.kind).or_default() += 1;
        }
        for kind in super::placement::kinds::names() {
            let count = per_kind.get(kind).copied().unwrap_or(0);
            metrics::gauge!("joerl_placement_activations", "node" => n.clone(), "kind" => kind)
                .set(count as f64);
        }
        let s = p.stats();
        let events = [
            ("activated", &s.activated),
            ("handed_off", &s.handed_off),
            ("forwarded", &s.forwarded),
            ("claim_retries", &s.claim_retries),
            ("claims_moved", &s.claims_moved),
            ("eager_activations", &s.eager_activations),
            ("state_received", &s.state_received),
            ("route_hits", &s.route_hits),
            ("route_misses", &s.route_misses),
            ("thread_copy_misses", &s.thread_copy_misses),
            ("duplicates_dropped", &s.duplicates_dropped),
            ("pids_learned", &s.pids_learned),
            ("pids_forgotten", &s.pids_forgotten),
            ("redirected", &s.redirected),
        ];
        for (event, v) in events {
            metrics::counter!("joerl_placement_events_total", "node" => n.clone(), "event" => event)
                .absolute(v.load(Ordering::Relaxed));
        }
        let failures = [
            ("not_owner", &s.not_owner),
            ("no_majority", &s.no_majority),
            ("stopped_no_majority", &s.stopped_no_majority),
            ("unknown_kind", &s.unknown_kind),
            ("state_undecodable", &s.state_undecodable),
            ("stale_directives", &s.stale_directives),
            ("undecodable", &s.undecodable),
        ];
        for (cause, v) in failures {
            metrics::counter!("joerl_placement_failures_total", "node" => n.clone(), "cause" => cause)
                .absolute(v.load(Ordering::Relaxed));
        }
        let d = p.delivery_stats();
        for (event, v) in [
            ("acked", &d.acked),
            ("resent", &d.resent),
            ("expired", &d.expired),
            ("circuit_open", &d.circuit_open),
        ] {
            metrics::counter!("joerl_delivery_events_total", "node" => n.clone(), "event" => event)
                .absolute(v.load(Ordering::Relaxed));
        }
        metrics::gauge!("joerl_delivery_unacknowledged", "node" => n.clone())
            .set(p.unacknowledged() as f64);
    }
    for b in breakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        for (target, state) in b.states() {
            let v = match state {
                BreakerState::Closed => 0.0,
                BreakerState::HalfOpen { .. } => 1.0,
                BreakerState::Open { .. } => 2.0,
            };
            metrics::gauge!("joerl_breaker_state", "node" => n.clone(), "target" => target).set(v);
        }
    }
}
