//! The membership view placement works from: the `Active` members (this
//! node included) with their weights, and whether they are a healthy
//! majority, followed from membership's events in order.

use std::collections::BTreeMap;

use super::rendezvous::{WEIGHT_KEY, weight_from};
use crate::cluster::{Cluster, ClusterEvent, Member, MemberState};

/// One view: `(node, weight)` by name, and health.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The active members, this node included, by name, with weights.
    pub active: Vec<(String, f64)>,
    /// True if they are a healthy majority of the cluster.
    pub healthy: bool,
}

fn weight(m: &Member) -> f64 {
    weight_from(m.metadata.get(WEIGHT_KEY).map(|s| s.as_str()))
}

/// Calls `on_view` with the view now and after every change, from a task,
/// until it returns false or membership stops.
pub fn follow(cluster: Cluster, mut on_view: impl FnMut(View) -> bool + Send + 'static) {
    let mut events = cluster.subscribe();
    let me = cluster.self_member();
    tokio::spawn(async move {
        let mut active: BTreeMap<String, f64> = BTreeMap::new();
        active.insert(me.name.clone(), weight(&me));
        let view = |active: &BTreeMap<String, f64>| View {
            active: active.iter().map(|(n, w)| (n.clone(), *w)).collect(),
            healthy: cluster.health().healthy,
        };
        if !on_view(view(&active)) {
            return;
        }
        while let Some(e) = events.recv().await {
            match &e {
                ClusterEvent::MemberUp(m) | ClusterEvent::MemberRecovered(m) => {
                    active.insert(m.name.clone(), weight(m));
                }
                ClusterEvent::MemberFailed(m) | ClusterEvent::MemberLeft(m) => {
                    // A newer incarnation that is up keeps its place.
                    if !cluster
                        .member(&m.name)
                        .is_ok_and(|x| x.state == MemberState::Active)
                    {
                        active.remove(&m.name);
                    }
                }
                ClusterEvent::HealthChanged(_) => {}
                _ => continue,
            }
            if !on_view(view(&active)) {
                return;
            }
        }
    });
}
