//! The management API over real HTTP on 127.0.0.1, on three clustered
//! nodes: each read route, the read-only refusal, the token check, each
//! mutating route and its effect on the cluster, malformed requests, the
//! connection limit, and the Prometheus text at `/metrics`, scraped over
//! HTTP.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use joerl_dist::cluster::management::http::{self, HttpConfig, TOKEN_HEADER};
use joerl_dist::cluster::management::{ActorList, HealthInfo, Management, NodeInfo};
use joerl_dist::cluster::metrics;
use joerl_dist::cluster::placement::{self, PlacedServer, Placements};
use joerl_dist::gen_server::{CallResponse, GenServer, HandleCall, ReplyTo, Request, ServerRef};
use joerl_dist::{ActorContext, DistributedSystem, placed};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

struct Acct(u64);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deposit(u64);
impl Request for Deposit {
    type Reply = u64;
}

impl GenServer for Acct {
    type Calls = (Deposit,);
    type Casts = ();
}

impl HandleCall<Deposit> for Acct {
    async fn handle_call(
        &mut self,
        d: Deposit,
        _from: ReplyTo<u64>,
        _ctx: &mut ActorContext,
    ) -> CallResponse<u64> {
        self.0 += d.0;
        CallResponse::Reply(self.0)
    }
}
joerl_dist::remote_server!(Acct);

impl PlacedServer for Acct {
    fn activate(_id: &str) -> Self {
        Acct(0)
    }
}
placed!(server Acct, "management_test::Acct");

const KIND: &str = "management_test::Acct";
const TIMEOUT: Duration = Duration::from_secs(20);

async fn member(
    name: &str,
    seed: Option<SocketAddr>,
) -> (DistributedSystem, Placements, joerl_epmd::EpmdServer) {
    let (node, e) = clustered(name, "management-test", seed).await;
    let p = placement::start(&node).unwrap();
    (node, p, e)
}

async fn get(addr: SocketAddr, path: &str) -> http::Reply {
    http::request(addr, "GET", path, None, None, TIMEOUT)
        .await
        .unwrap()
}

async fn post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> http::Reply {
    http::request(addr, "POST", path, token, body.map(str::to_string), TIMEOUT)
        .await
        .unwrap()
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_and_mutations_need_permission_and_the_token() {
    init_tracing();
    let (a, pa, _ea) = member("mg_a", None).await;
    let seed = a.cluster().unwrap().gossip_addr();
    let (b, pb, _eb) = member("mg_b", Some(seed)).await;
    let (c, pc, _ec) = member("mg_c", Some(seed)).await;
    let names: BTreeSet<String> = [&a, &b, &c].iter().map(|n| n.name().to_string()).collect();
    for p in [&pa, &pb, &pc] {
        wait_until("placement on all three", || p.members() == names).await;
        wait_until("a leads", || p.leader().is_some_and(|l| l.node == a.name())).await;
    }
    let _reporter = metrics::report(&a, Some(&pa));
    let admin = http::serve(
        Management::new(&a, &pa).unwrap(),
        HttpConfig::new(local()).allow_mutations(true).metrics(true),
    )
    .await
    .unwrap();
    let read_only = http::serve(Management::new(&b, &pb).unwrap(), HttpConfig::new(local()))
        .await
        .unwrap();
    let (addr, ro) = (admin.local_addr(), read_only.local_addr());
    let token = http::token("test-cookie");

    // Nodes: the three, a leads, all placed on.
    let r = get(addr, "/cluster/nodes").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let nodes: Vec<NodeInfo> = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        nodes
            .iter()
            .map(|n| n.name.clone())
            .collect::<BTreeSet<_>>(),
        names
    );
    assert!(
        nodes
            .iter()
            .all(|n| n.places && !n.draining && n.state == "Active")
    );
    assert_eq!(
        nodes
            .iter()
            .filter(|n| n.leader)
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        [a.name()]
    );

    // Actors: 30 accounts, each listed once, on the owner every node agrees on.
    for i in 0..30 {
        let acct: ServerRef<Acct> = ServerRef::new(pb.actor::<Acct>(format!("x{i}")));
        assert_eq!(b.call(&acct, Deposit(5)).await.unwrap(), 5);
    }
    let r = get(ro, "/cluster/actors").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let list: ActorList = serde_json::from_str(&r.body).unwrap();
    assert!(
        list.unanswered.is_empty() && list.truncated.is_empty(),
        "{list:?}"
    );
    let accts: Vec<_> = list.actors.iter().filter(|x| x.kind == KIND).collect();
    assert_eq!(accts.len(), 30);
    for x in &accts {
        let owner = pa.owner(pa.actor::<Acct>(x.id.clone()).identity()).unwrap();
        assert_eq!(x.node, owner, "{}", x.id);
        assert!(x.since_unix_ms > 0);
    }

    // Health.
    let r = get(addr, "/cluster/health").await;
    let h: HealthInfo = serde_json::from_str(&r.body).unwrap();
    assert!(h.healthy && h.active == 3 && h.total == 3, "{h:?}");
    assert_eq!(h.leader.as_deref(), Some(a.name()));
    let epoch = h.epoch;
    assert!(epoch > 0);

    // Mutations: refused read-only, refused without or with a wrong token.
    let drain_c = format!("/cluster/nodes/{}/drain", c.name());
    let r = post(ro, &drain_c, Some(&token), None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("disabled"), "{}", r.body);
    let r = post(addr, &drain_c, None, None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains(TOKEN_HEADER));
    let r = post(addr, &drain_c, Some(&http::token("other-cookie")), None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        pa.directives().draining.is_empty(),
        "nothing refused changed anything"
    );

    // Drain with the token: every member learns it, c runs nothing.
    let r = post(addr, &drain_c, Some(&token), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, r#"{"ok":true}"#);
    for p in [&pa, &pb, &pc] {
        wait_until("the drain reached every member", || {
            p.directives().draining.contains(c.name())
        })
        .await;
    }
    wait_until("c runs nothing", || pc.local_activations().is_empty()).await;
    let r = get(addr, "/cluster/nodes").await;
    let nodes: Vec<NodeInfo> = serde_json::from_str(&r.body).unwrap();
    let nc = nodes.iter().find(|n| n.name == c.name()).unwrap();
    assert!(nc.draining && !nc.places);
    // The last member not drained is refused: 409.
    let r = post(
        addr,
        &format!("/cluster/nodes/{}/drain", b.name()),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(
        addr,
        &format!("/cluster/nodes/{}/drain", a.name()),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    for n in [b.name(), c.name()] {
        let r = post(
            addr,
            &format!("/cluster/nodes/{n}/undrain"),
            Some(&token),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }

    // Migrate: a malformed body is 400, an unknown member 409, then the move.
    let id = "x0";
    let owner = pa.owner(pa.actor::<Acct>(id).identity()).unwrap();
    let target = names.iter().find(|n| **n != owner).unwrap().clone();
    let route = format!("/cluster/actors/{KIND}/{id}/migrate");
    let r = post(addr, &route, Some(&token), Some("{not json")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(
        addr,
        &route,
        Some(&token),
        Some(r#"{"node":"nobody@nowhere"}"#),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let body = format!(r#"{{"node":"{target}"}}"#);
    let r = post(addr, &route, Some(&token), Some(&body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until("b routes x0 to its target", || {
        pb.owner(pb.actor::<Acct>(id).identity()).ok() == Some(target.clone())
    })
    .await;
    wait_until("a knows the pin", || pa.directives().pins.len() == 1).await;
    let mut moved = false;
    for _ in 0..200 {
        let list: ActorList =
            serde_json::from_str(&get(addr, "/cluster/actors").await.body).unwrap();
        let on: Vec<_> = list
            .actors
            .iter()
            .filter(|x| x.kind == KIND && x.id == id)
            .collect();
        if on.len() == 1 && on[0].node == target {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(moved, "x0 runs on {target} once");

    // A forced election: a new term of the same leader.
    let r = post(addr, "/cluster/leader/elect", Some(&token), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until("a new epoch", || {
        pa.leader().is_some_and(|l| l.epoch > epoch)
    })
    .await;

    // Unknown routes; metrics only where enabled.
    assert_eq!(get(addr, "/nosuch").await.status, 404);
    assert_eq!(get(ro, "/metrics").await.status, 404);
    let mut text = String::new();
    for _ in 0..200 {
        let r = get(addr, "/metrics").await;
        assert_eq!(r.status, 200);
        text = r.body;
        if text.contains("joerl_placement_activations") && text.contains("joerl_leader_epoch") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let node_label = format!("node=\"{}\"", a.name());
    for name in [
        "joerl_cluster_members",
        "joerl_cluster_healthy",
        "joerl_leader_is_leader",
        "joerl_placement_activations",
        "joerl_placement_events_total",
        "joerl_dist_messages_sent_total",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains(&node_label)),
            "{name} for {} in:\n{text}",
            a.name()
        );
    }
    let active = text
        .lines()
        .find(|l| {
            l.starts_with("joerl_cluster_members{")
                && l.contains(&node_label)
                && l.contains("state=\"active\"")
        })
        .unwrap_or_else(|| panic!("members by state in:\n{text}"));
    assert!(active.ends_with(" 3"), "{active}");
    assert!(
        text.contains("joerl_call_duration_seconds"),
        "the call histogram in:\n{text}"
    );

    admin.stop().await;
    read_only.stop().await;
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_and_the_listener_keeps_serving() {
    init_tracing();
    let (a, pa, _ea) = member("mg_lim", None).await;
    let server = http::serve(
        Management::new(&a, &pa).unwrap(),
        HttpConfig::new(local()).max_connections(2),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    // Two idle connections hold both places.
    let _one = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _two = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(TIMEOUT, third.read(&mut buf))
        .await
        .expect("closed within the deadline")
        .unwrap_or(0);
    assert_eq!(n, 0, "the third connection is closed unanswered");
    assert!(server.refused() >= 1);
    // Once one goes, requests are served again.
    drop(_one);
    let mut served = false;
    for _ in 0..100 {
        if let Ok(r) = http::request(addr, "GET", "/cluster/health", None, None, TIMEOUT).await {
            assert_eq!(r.status, 200);
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served);
    server.stop().await;
    a.shutdown().await;
}
