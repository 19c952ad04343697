//! The metadata store against a real etcd (Debian's `etcd-server`), started
//! by each test on free ports of 127.0.0.1 with its own data directory and
//! stopped by its PID: every trait method, lease expiry, watch order,
//! compare-and-swap conflicts, lock exclusivity, elections, an unreachable
//! store, and keys written by hand that are not what joerl writes.
//! Built with joerl-dist's `etcd` feature (`cargo test --workspace --all-features`).
#![cfg(feature = "etcd")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{etcdctl, init_tracing};
use joerl_dist::cluster::store::etcd::{EtcdOptions, EtcdStore};
use joerl_dist::cluster::store::local_etcd::LocalEtcd;
use joerl_dist::cluster::store::{CasOutcome, Expect, MetadataStore, StoreError, WatchEvent};

async fn etcd() -> (LocalEtcd, EtcdStore) {
    init_tracing();
    let e = LocalEtcd::start().await.expect("etcd starts");
    let s = EtcdStore::connect(EtcdOptions::new([e.endpoint()]))
        .await
        .expect("connects");
    (e, s)
}

/// An etcd whose data lives in a directory of the test's own (removed by
/// the test at its end), so it can be stopped and started again on the
/// same addresses with the same data.
async fn restartable(tag: &str) -> (std::path::PathBuf, LocalEtcd) {
    init_tracing();
    let dir = std::env::temp_dir().join(format!("joerl-etcd-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let e = LocalEtcd::start_in(&dir).await.expect("etcd starts");
    (dir, e)
}

/// The next watch event, within 20 s.
async fn next(w: &mut joerl_dist::cluster::store::Watch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("an event within 20 s")
        .expect("the watch goes on")
        .expect("no error")
}

#[tokio::test]
async fn get_put_delete_and_list_by_prefix() {
    let (_e, s) = etcd().await;
    assert_eq!(s.get("t/a").await.unwrap(), None);
    let r1 = s.put("t/a", b"1".to_vec(), None).await.unwrap();
    let r2 = s.put("t/b", b"2".to_vec(), None).await.unwrap();
    s.put("u/c", b"3".to_vec(), None).await.unwrap();
    assert!(r2 > r1, "revisions grow");
    let a = s.get("t/a").await.unwrap().expect("present");
    assert_eq!(
        (
            a.key.as_str(),
            a.value.as_slice(),
            a.mod_revision,
            a.version,
            a.lease
        ),
        ("t/a", &b"1"[..], r1, 1, None)
    );
    let r3 = s.put("t/a", b"1b".to_vec(), None).await.unwrap();
    let a = s.get("t/a").await.unwrap().unwrap();
    assert_eq!((a.version, a.create_revision, a.mod_revision), (2, r1, r3));

    let (list, at) = s.list("t/").await.unwrap();
    let keys: Vec<_> = list.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["t/a", "t/b"], "only the prefix, in key order");
    assert!(at >= r3);

    assert!(s.delete("t/a").await.unwrap(), "existed");
    assert!(!s.delete("t/a").await.unwrap(), "gone");
    assert_eq!(s.get("t/a").await.unwrap(), None);
}

#[tokio::test]
async fn compare_and_swap_creates_if_absent_and_reports_conflicts() {
    let (_e, s) = etcd().await;
    let first = s
        .compare_and_swap("k", Expect::Absent, b"one".to_vec(), None)
        .await
        .unwrap();
    let CasOutcome::Swapped { revision } = first else {
        panic!("created: {first:?}")
    };
    // A second create-if-absent conflicts and sees the first's value.
    match s
        .compare_and_swap("k", Expect::Absent, b"two".to_vec(), None)
        .await
        .unwrap()
    {
        CasOutcome::Conflict { current: Some(e) } => assert_eq!(e.value, b"one"),
        other => panic!("conflict expected: {other:?}"),
    }
    // A swap at the right revision wins, at a stale one loses.
    let won = s
        .compare_and_swap("k", Expect::ModRevision(revision), b"three".to_vec(), None)
        .await
        .unwrap();
    assert!(matches!(won, CasOutcome::Swapped { .. }), "{won:?}");
    let lost = s
        .compare_and_swap("k", Expect::ModRevision(revision), b"four".to_vec(), None)
        .await
        .unwrap();
    assert!(
        matches!(&lost, CasOutcome::Conflict { current: Some(e) } if e.value == b"three"),
        "{lost:?}"
    );
    // A swap of an absent key at a revision conflicts with nothing there.
    let none = s
        .compare_and_swap("absent", Expect::ModRevision(1), b"x".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(none, CasOutcome::Conflict { current: None });

    // Ten racing creators: exactly one wins.
    let s = Arc::new(s);
    let racers: Vec<_> = (0..10)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.compare_and_swap("race", Expect::Absent, format!("{i}").into_bytes(), None)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        if matches!(r.await.unwrap(), CasOutcome::Swapped { .. }) {
            won += 1;
        }
    }
    assert_eq!(won, 1, "one creator wins");
}

#[tokio::test]
async fn keys_of_a_lease_vanish_when_it_expires_or_is_revoked() {
    let (_e, s) = etcd().await;
    // Expiry: a 2 s lease, not kept alive.
    let lease = s.grant_lease(Duration::from_secs(2)).await.unwrap();
    s.put("l/a", b"a".to_vec(), Some(lease)).await.unwrap();
    s.put("l/b", b"b".to_vec(), Some(lease)).await.unwrap();
    s.put("l/stays", b"c".to_vec(), None).await.unwrap();
    assert_eq!(
        s.get("l/a").await.unwrap().and_then(|e| e.lease),
        Some(lease)
    );
    let ttl = s.keep_alive(lease).await.unwrap();
    assert!(
        ttl >= Duration::from_secs(1) && ttl <= Duration::from_secs(2),
        "{ttl:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while s.get("l/a").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease's keys stay"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.get("l/b").await.unwrap(), None, "together");
    assert!(
        s.get("l/stays").await.unwrap().is_some(),
        "keys without it stay"
    );
    match s.keep_alive(lease).await {
        Err(StoreError::LeaseGone(l)) => assert_eq!(l, lease),
        other => panic!("an expired lease cannot be renewed: {other:?}"),
    }

    // Revocation: at once.
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    s.put("l/r", b"r".to_vec(), Some(lease)).await.unwrap();
    s.revoke_lease(lease).await.unwrap();
    assert_eq!(s.get("l/r").await.unwrap(), None);
    assert!(matches!(
        s.put("l/r2", b"x".to_vec(), Some(lease)).await,
        Err(StoreError::LeaseGone(_))
    ));
}

#[tokio::test]
async fn kept_alive_leases_outlive_their_ttl() {
    let (_e, s) = etcd().await;
    let lease = s.grant_lease(Duration::from_secs(2)).await.unwrap();
    s.put("ka", b"v".to_vec(), Some(lease)).await.unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        s.keep_alive(lease).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        s.get("ka").await.unwrap().is_some(),
        "kept for 5 s on a 2 s TTL"
    );
}

#[tokio::test]
async fn a_watch_delivers_puts_and_deletes_in_order_from_a_revision() {
    let (_e, s) = etcd().await;
    s.put("w/old", b"0".to_vec(), None).await.unwrap();
    let (_, at) = s.list("w/").await.unwrap();
    let mut w = s.watch("w/", Some(at)).await.unwrap();
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let mut revs = Vec::new();
    for i in 0..50 {
        revs.push(s.put(&format!("w/{i}"), vec![i], None).await.unwrap());
    }
    s.put("other/x", b"not watched".to_vec(), None)
        .await
        .unwrap();
    s.delete("w/3").await.unwrap();
    s.put("w/leased", b"l".to_vec(), Some(lease)).await.unwrap();
    s.revoke_lease(lease).await.unwrap();
    for (i, rev) in revs.iter().enumerate() {
        match next(&mut w).await {
            WatchEvent::Put(e) => {
                assert_eq!(
                    (e.key, e.value, e.mod_revision),
                    (format!("w/{i}"), vec![i as u8], *rev)
                )
            }
            other => panic!("put {i} expected: {other:?}"),
        }
    }
    match next(&mut w).await {
        WatchEvent::Deleted { key, .. } => assert_eq!(key, "w/3"),
        other => panic!("the delete: {other:?}"),
    }
    assert!(matches!(next(&mut w).await, WatchEvent::Put(e) if e.key == "w/leased"));
    match next(&mut w).await {
        WatchEvent::Deleted { key, .. } => assert_eq!(key, "w/leased", "the lease's end"),
        other => panic!("the lease's delete: {other:?}"),
    }

    // From an old revision: the history since then, first event first.
    let mut again = s.watch("w/", Some(at)).await.unwrap();
    assert!(matches!(next(&mut again).await, WatchEvent::Put(e) if e.key == "w/0"));
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_ends_with_compacted() {
    let (e, s) = etcd().await;
    let r1 = s.put("c/a", b"1".to_vec(), None).await.unwrap();
    let r2 = s.put("c/a", b"2".to_vec(), None).await.unwrap();
    // Compact with etcdctl, as an operator (or etcd's auto-compaction) does.
    etcdctl(&e.endpoint(), &[b"compaction", r2.to_string().as_bytes()]);
    let mut w = s.watch("c/", Some(r1 - 1)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("an answer")
        .expect("an item");
    match got {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!((requested, compacted), (r1, r2))
        }
        other => panic!("compacted expected: {other:?}"),
    }
    assert!(w.next().await.is_none(), "the watch ended");
}

#[tokio::test]
async fn a_watch_forwards_to_an_actor() {
    use joerl_dist::{Actor, ActorContext, ActorSystem, Message};
    struct Sink(tokio::sync::mpsc::UnboundedSender<WatchEvent>);
    impl Actor for Sink {
        async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
            if let Ok(ev) = msg.downcast::<WatchEvent>() {
                let _ = self.0.send(*ev);
            }
        }
    }
    let (_e, s) = etcd().await;
    let system = ActorSystem::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sink = system.spawn(Sink(tx));
    let forward = s
        .watch("f/", None)
        .await
        .unwrap()
        .forward_to(system.clone(), sink);
    s.put("f/1", b"x".to_vec(), None).await.unwrap();
    s.delete("f/1").await.unwrap();
    let a = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let b = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(a, WatchEvent::Put(e) if e.key == "f/1"));
    assert!(matches!(b, WatchEvent::Deleted { key, .. } if key == "f/1"));
    forward.abort();
}

#[tokio::test]
async fn a_lock_has_one_holder_and_passes_on_unlock_or_lease_end() {
    let (_e, s) = etcd().await;
    let s = Arc::new(s);
    let l1 = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let held = s.lock("mutex", l1).await.unwrap();

    // A second taker waits while it is held...
    let s2 = s.clone();
    let l2 = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let mut second = tokio::spawn(async move { s2.lock("mutex", l2).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), &mut second)
            .await
            .is_err(),
        "the second taker waits"
    );
    // ...and gets it when the first unlocks.
    s.unlock(&held).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), second)
        .await
        .expect("taken after the unlock")
        .unwrap()
        .unwrap();
    assert_ne!(got.key, held.key);

    // A third gets it when the second's lease is revoked (its holder died).
    let s3 = s.clone();
    let l3 = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let third = tokio::spawn(async move { s3.lock("mutex", l3).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.revoke_lease(l2).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), third)
        .await
        .expect("taken after the lease's end")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn an_election_has_one_leader_and_the_next_takes_over() {
    let (_e, s) = etcd().await;
    let s = Arc::new(s);
    assert_eq!(s.leader("el").await.unwrap(), None, "nobody yet");
    let l1 = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let t1 = s.campaign("el", b"node1".to_vec(), l1).await.unwrap();
    let now = s.leader("el").await.unwrap().expect("a leader");
    assert_eq!(
        (now.value.as_slice(), now.revision),
        (&b"node1"[..], t1.revision)
    );

    let s2 = s.clone();
    let l2 = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let mut second = tokio::spawn(async move { s2.campaign("el", b"node2".to_vec(), l2).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), &mut second)
            .await
            .is_err(),
        "the second candidate waits"
    );
    s.proclaim(&t1, b"node1-again".to_vec()).await.unwrap();
    assert_eq!(s.leader("el").await.unwrap().unwrap().value, b"node1-again");

    s.resign(&t1).await.unwrap();
    let t2 = tokio::time::timeout(Duration::from_secs(20), second)
        .await
        .expect("elected after the resignation")
        .unwrap()
        .unwrap();
    assert!(
        t2.revision > t1.revision,
        "a later term has a greater revision"
    );
    assert_eq!(s.leader("el").await.unwrap().unwrap().value, b"node2");

    // The old term cannot proclaim any more.
    assert!(s.proclaim(&t1, b"stale".to_vec()).await.is_err());
    // The leader's lease ends: nobody leads.
    s.revoke_lease(l2).await.unwrap();
    assert_eq!(s.leader("el").await.unwrap(), None);
}

#[tokio::test]
async fn a_stopped_store_gives_unavailable_and_a_restarted_one_answers_again() {
    let (dir, mut e) = restartable("restart").await;
    let (client, peer) = (e.client_addr(), e.peer_addr());
    let mut options = EtcdOptions::new([e.endpoint()]);
    options.request_timeout = Duration::from_secs(2);
    options.connect_timeout = Duration::from_secs(1);
    let s = EtcdStore::connect(options).await.unwrap();
    s.put("kept", b"v".to_vec(), None).await.unwrap();

    e.stop();
    let err = s.get("kept").await.expect_err("etcd is down");
    assert!(err.is_transient(), "{err:?}");

    drop(e);
    let e = LocalEtcd::start_at(&dir, client, peer)
        .await
        .expect("restarts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let got = loop {
        match s.get("kept").await {
            Ok(v) => break v,
            Err(err) => {
                assert!(err.is_transient(), "{err:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no answer after the restart"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(
        got.map(|e| e.value),
        Some(b"v".to_vec()),
        "the data survived"
    );
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn keys_that_are_not_utf8_are_skipped_with_a_typed_error() {
    let (e, s) = etcd().await;
    s.put("m/good", b"ok".to_vec(), None).await.unwrap();
    // A key written by hand that is not UTF-8 (etcdctl takes raw bytes).
    etcdctl(&e.endpoint(), &[b"put", b"m/bad-\xff\xfe", b"x"]);
    let (list, _) = s.list("m/").await.unwrap();
    let keys: Vec<_> = list.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["m/good"], "the bad key is skipped, the rest listed");
    // A watch skips it too and goes on.
    let mut w = s.watch("m/", None).await.unwrap();
    etcdctl(&e.endpoint(), &[b"put", b"m/bad-\xff", b"y"]);
    s.put("m/after", b"z".to_vec(), None).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Put(e) if e.key == "m/after"));
}

/// The other OS process of the test below (this test binary run again with
/// `JOERL_LOCK_CHILD` set to the etcd endpoint): takes the lock, says
/// `locked`, holds it 1.5 s, unlocks, says `unlocked`. Without the variable
/// it does nothing.
#[tokio::test]
async fn lock_child_process() {
    let Ok(endpoint) = std::env::var("JOERL_LOCK_CHILD") else {
        return;
    };
    let s = EtcdStore::connect(EtcdOptions::new([endpoint]))
        .await
        .expect("connects");
    let lease = s.grant_lease(Duration::from_secs(30)).await.unwrap();
    let held = s.lock("cross-process", lease).await.unwrap();
    println!("JOERL-CHILD locked");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    println!("JOERL-CHILD unlocked");
    s.unlock(&held).await.unwrap();
}

/// The child's next `JOERL-CHILD ..` line (the test harness prints its own).
async fn child_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> String {
    loop {
        let l = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the child says something within 30 s")
            .unwrap()
            .expect("the child's output goes on");
        // libtest may print `test name ... ` on the same line first.
        if let Some(at) = l.find("JOERL-CHILD ") {
            return l[at + "JOERL-CHILD ".len()..].trim().to_string();
        }
    }
}

#[tokio::test]
async fn a_lock_held_by_another_os_process_excludes_this_one_until_released() {
    use tokio::io::AsyncBufReadExt;
    let (e, s) = etcd().await;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("JOERL_LOCK_CHILD", e.endpoint())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the child starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(child_line(&mut lines).await, "locked");
    // Held by the other process: this one waits until it says it unlocks.
    let lease = s.grant_lease(Duration::from_secs(30)).await.unwrap();
    let s = Arc::new(s);
    let s2 = s.clone();
    let mut mine = tokio::spawn(async move { s2.lock("cross-process", lease).await });
    let said = tokio::select! {
        got = &mut mine => panic!("locked while the other process held it: {got:?}"),
        said = child_line(&mut lines) => said,
    };
    assert_eq!(said, "unlocked");
    tokio::time::timeout(Duration::from_secs(20), mine)
        .await
        .expect("taken once the other process released it")
        .unwrap()
        .unwrap();
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn create_many_gives_each_key_its_own_outcome_within_etcds_limits() {
    let (_e, s) = etcd().await;
    s.put("r/1", b"taken".to_vec(), None).await.unwrap();
    let items: Vec<(String, Vec<u8>)> = (0..3).map(|i| (format!("r/{i}"), vec![i as u8])).collect();
    let out = s.create_many(&items, None).await.unwrap();
    assert!(matches!(out[0], CasOutcome::Swapped { .. }), "{out:?}");
    assert!(
        matches!(&out[1], CasOutcome::Conflict { current: Some(e) } if e.value == b"taken"),
        "{out:?}"
    );
    assert!(matches!(out[2], CasOutcome::Swapped { .. }), "{out:?}");
    assert_eq!(s.get("r/1").await.unwrap().unwrap().value, b"taken", "kept");

    // etcd takes a transaction at both of joerl's limits: 128 operations,
    // and 15 values of 100 KiB (just under the byte limit).
    use joerl_dist::cluster::store::{MAX_TXN_BYTES, MAX_TXN_OPS, TXN_OP_OVERHEAD};
    let many: Vec<(String, Vec<u8>)> = (0..MAX_TXN_OPS)
        .map(|i| (format!("n/{i}"), vec![1]))
        .collect();
    let out = s.create_many(&many, None).await.unwrap();
    assert!(out.iter().all(|o| matches!(o, CasOutcome::Swapped { .. })));
    let big: Vec<(String, Vec<u8>)> = (0..15)
        .map(|i| (format!("b/{i}"), vec![2; 100 * 1024]))
        .collect();
    let bytes: usize = big
        .iter()
        .map(|(k, v)| k.len() + v.len() + TXN_OP_OVERHEAD)
        .sum();
    assert!(bytes <= MAX_TXN_BYTES);
    let out = s.create_many(&big, None).await.unwrap();
    assert!(out.iter().all(|o| matches!(o, CasOutcome::Swapped { .. })));
    // Past them, refused before anything is sent; a key twice too.
    let too_many: Vec<(String, Vec<u8>)> = (0..=MAX_TXN_OPS)
        .map(|i| (format!("x/{i}"), vec![]))
        .collect();
    assert!(matches!(
        s.create_many(&too_many, None).await,
        Err(StoreError::Refused(_))
    ));
    let twice = vec![("d".to_string(), vec![]), ("d".to_string(), vec![])];
    assert!(matches!(
        s.create_many(&twice, None).await,
        Err(StoreError::Refused(_))
    ));
    assert_eq!(s.list("x/").await.unwrap().0.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_registrations_are_batched_and_each_caller_learns_its_outcome() {
    use joerl_dist::cluster::store::batch::{BatchLimits, Registrations};
    use joerl_dist::cluster::store::{MAX_TXN_BYTES, MAX_TXN_OPS};
    use std::sync::atomic::Ordering;
    let (_e, s) = etcd().await;
    let s: Arc<dyn MetadataStore> = Arc::new(s);
    for i in 0..100 {
        s.put(&format!("reg/{}", i * 100), b"before".to_vec(), None)
            .await
            .unwrap();
    }
    let regs = Registrations::start(s.clone(), None, BatchLimits::default());
    let tasks: Vec<_> = (0..10_000)
        .map(|i| {
            let regs = regs.clone();
            tokio::spawn(async move {
                (
                    i,
                    regs.register(format!("reg/{i}"), format!("v{i}").into_bytes())
                        .await,
                )
            })
        })
        .collect();
    let (mut created, mut conflicts) = (0, 0);
    for t in tasks {
        let (i, got) = t.await.unwrap();
        match got.unwrap() {
            CasOutcome::Swapped { .. } => {
                assert_ne!(i % 100, 0, "reg/{i} existed");
                created += 1;
            }
            CasOutcome::Conflict { current } => {
                assert_eq!(i % 100, 0, "reg/{i} did not exist");
                assert_eq!(current.unwrap().value, b"before");
                conflicts += 1;
            }
        }
    }
    assert_eq!((created, conflicts), (9_900, 100));
    let st = regs.stats();
    assert!(st.ops_max.load(Ordering::Relaxed) <= MAX_TXN_OPS as u64);
    assert!(
        st.txns.load(Ordering::Relaxed) >= 10_000 / MAX_TXN_OPS as u64,
        "batched: {} transactions",
        st.txns.load(Ordering::Relaxed)
    );
    assert!(st.txns.load(Ordering::Relaxed) < 10_000, "not one each");
    let (all, _) = s.list("reg/").await.unwrap();
    assert_eq!(all.len(), 10_000);
    assert!(all.iter().filter(|e| e.value == b"before").count() == 100);

    // Large values: batches keep under the byte limit.
    let big: Vec<_> = (0..40)
        .map(|i| {
            let regs = regs.clone();
            tokio::spawn(
                async move { regs.register(format!("big/{i}"), vec![3; 100 * 1024]).await },
            )
        })
        .collect();
    for t in big {
        assert!(matches!(
            t.await.unwrap().unwrap(),
            CasOutcome::Swapped { .. }
        ));
    }
    assert!(st.bytes_max.load(Ordering::Relaxed) <= MAX_TXN_BYTES as u64);
    // One that can never fit is refused alone.
    assert!(matches!(
        regs.register("huge".into(), vec![0; MAX_TXN_BYTES + 1])
            .await,
        Err(StoreError::Refused(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_ride_out_a_store_restart_and_reachability_follows_it() {
    use joerl_dist::cluster::placement::RetryPolicy;
    use joerl_dist::cluster::store::retry::{RetryingStore, StoreReachability};
    let (dir, mut e) = restartable("retry").await;
    let (client, peer) = (e.client_addr(), e.peer_addr());
    let mut options = EtcdOptions::new([e.endpoint()]);
    options.request_timeout = Duration::from_secs(1);
    options.connect_timeout = Duration::from_millis(500);
    let inner: Arc<dyn MetadataStore> = Arc::new(EtcdStore::connect(options).await.unwrap());
    let once = RetryingStore::new(
        inner.clone(),
        RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        },
    );
    let patient = RetryingStore::new(
        inner,
        RetryPolicy {
            attempts: 60,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            multiplier: 2.0,
        },
    );
    patient.put("kept", b"v".to_vec(), None).await.unwrap();
    let mut changes = once.subscribe();
    assert_eq!(once.reachability(), StoreReachability::Reachable);

    e.stop();
    let err = once.get("kept").await.expect_err("one attempt, etcd down");
    assert!(err.is_transient(), "{err:?}");
    assert!(matches!(
        once.reachability(),
        StoreReachability::Unreachable { .. }
    ));
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("the change is streamed")
        .unwrap();

    // A patient read waits through the restart.
    let read = tokio::spawn(async move {
        let got = patient.get("kept").await;
        (got, patient.reachability())
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!read.is_finished(), "still retrying while etcd is down");
    drop(e);
    let e = LocalEtcd::start_at(&dir, client, peer)
        .await
        .expect("restarts");
    let (got, reach) = tokio::time::timeout(Duration::from_secs(40), read)
        .await
        .expect("the read ends")
        .unwrap();
    assert_eq!(got.unwrap().map(|e| e.value), Some(b"v".to_vec()));
    assert_eq!(reach, StoreReachability::Reachable);
    // The one-attempt store is reachable again at its next answer.
    once.get("kept").await.unwrap();
    assert_eq!(once.reachability(), StoreReachability::Reachable);
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_cluster_configuration_chooses_etcd_and_its_endpoints() {
    use joerl_dist::cluster::{ClusterConfig, MetadataStoreKind};
    let (e, _s) = etcd().await;
    let config = ClusterConfig::builder()
        .env_from({
            let ep = e.endpoint();
            move |k| match k {
                "CLUSTER_METADATA_STORE" => Some("etcd".into()),
                "CLUSTER_ETCD_ENDPOINTS" => Some(ep.clone()),
                _ => None,
            }
        })
        .build()
        .unwrap();
    let options = EtcdOptions::from_config(&config).expect("etcd chosen");
    let store = EtcdStore::connect(options).await.unwrap();
    store.put("from-config", b"1".to_vec(), None).await.unwrap();
    assert!(store.get("from-config").await.unwrap().is_some());
    let embedded = ClusterConfig::builder()
        .metadata_store(MetadataStoreKind::Embedded)
        .build()
        .unwrap();
    assert!(EtcdOptions::from_config(&embedded).is_none());
}

#[tokio::test]
async fn tls_to_etcd_with_client_certificates() {
    use joerl_dist::cluster::store::etcd::EtcdTls;
    use joerl_dist::cluster::store::local_etcd::LocalEtcdTls;
    init_tracing();
    let certs = joerl_dist::transport::generate_certs(&["etcd", "client"], &[]).unwrap();
    let (_, scert, skey) = certs.nodes[0].clone();
    let (_, ccert, ckey) = certs.nodes[1].clone();
    let e = LocalEtcd::start_tls(LocalEtcdTls {
        ca_pem: certs.ca.clone(),
        server: (scert, skey),
        client: (ccert, ckey),
    })
    .await
    .expect("etcd starts with TLS");
    assert!(e.endpoint().starts_with("https://"));
    let mut o = EtcdOptions::new([e.endpoint()]);
    o.tls = e.client_tls();
    let s = EtcdStore::connect(o).await.unwrap();
    s.put("tls", b"secret".to_vec(), None).await.unwrap();
    assert_eq!(s.get("tls").await.unwrap().unwrap().value, b"secret");

    // A client whose certificate another CA signed is refused.
    let other = joerl_dist::transport::generate_certs(&["intruder"], &[]).unwrap();
    let mut o = EtcdOptions::new([e.endpoint()]);
    o.request_timeout = Duration::from_secs(2);
    o.tls = Some(EtcdTls {
        ca_pem: certs.ca.clone().into_bytes(),
        identity: Some((
            other.nodes[0].1.clone().into_bytes(),
            other.nodes[0].2.clone().into_bytes(),
        )),
        domain: None,
    });
    let refused = match EtcdStore::connect(o).await {
        Ok(s) => s.get("tls").await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(refused.is_err(), "a foreign client certificate is refused");
    // Plain HTTP to the TLS port gets no answer either.
    let mut o = EtcdOptions::new([format!("http://{}", e.client_addr())]);
    o.request_timeout = Duration::from_secs(2);
    let plain = match EtcdStore::connect(o).await {
        Ok(s) => s.get("tls").await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(plain.is_err());
}

#[tokio::test]
async fn waiting_for_a_lock_or_a_campaign_outlasts_the_request_timeout() {
    init_tracing();
    let e = LocalEtcd::start().await.expect("etcd starts");
    let mut o = EtcdOptions::new([e.endpoint()]);
    o.request_timeout = Duration::from_millis(500);
    let s = Arc::new(EtcdStore::connect(o).await.unwrap());
    let l1 = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let held = s.lock("long", l1).await.unwrap();
    let t1 = s.campaign("long-el", b"one".to_vec(), l1).await.unwrap();
    let (s2, s3) = (s.clone(), s.clone());
    let l2 = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let lock = tokio::spawn(async move { s2.lock("long", l2).await });
    let camp = tokio::spawn(async move { s3.campaign("long-el", b"two".to_vec(), l2).await });
    // Four request timeouts later both still wait, without an error.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !lock.is_finished() && !camp.is_finished(),
        "they gave up waiting"
    );
    s.unlock(&held).await.unwrap();
    s.resign(&t1).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), lock)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let t2 = tokio::time::timeout(Duration::from_secs(20), camp)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(t2.revision > t1.revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_view_follows_the_store_and_skips_values_written_by_hand() {
    use joerl_dist::cluster::store::assignments::{
        Assignment, AssignmentChange, AssignmentView, assignment_key,
    };
    use joerl_dist::cluster::store::batch::{BatchLimits, Registrations};
    let (e, s) = etcd().await;
    let s: Arc<dyn MetadataStore> = Arc::new(s);
    let prefix = "joerl/test/placement";
    let a = Assignment {
        node: "a@127.0.0.1".into(),
        creation: 1,
    };
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let regs = Registrations::start(s.clone(), Some(lease), BatchLimits::default());
    for i in 0..20 {
        let k = assignment_key(prefix, "app::Counter", &format!("c/{i}"));
        regs.register(k, a.encode()).await.unwrap();
    }
    // A value written by hand under the prefix.
    let key = format!("{prefix}/app::Counter/x");
    etcdctl(&e.endpoint(), &[b"put", key.as_bytes(), b"{oops"]);

    let (entries, at) = s.list(prefix).await.unwrap();
    let mut view = AssignmentView::new(prefix);
    view.load(&entries, at);
    assert_eq!((view.len(), view.malformed()), (20, 1));
    assert_eq!(view.owner("app::Counter", "c/7"), Some(&a));

    // Followed by a watch from the listing: a move, then the lease's end.
    let mut w = s.watch(prefix, Some(at)).await.unwrap();
    let b = Assignment {
        node: "b@127.0.0.1".into(),
        creation: 2,
    };
    s.put(
        &assignment_key(prefix, "app::Counter", "c/3"),
        b.encode(),
        None,
    )
    .await
    .unwrap();
    s.revoke_lease(lease).await.unwrap();
    let mut released = 0;
    let mut moved = false;
    while released < 19 {
        match view.apply(&next(&mut w).await) {
            Some(AssignmentChange::Assigned { id, to, .. }) => {
                assert_eq!((id.as_str(), &to), ("c/3", &b));
                moved = true;
            }
            Some(AssignmentChange::Released { from, .. }) => {
                assert_eq!(from, a);
                released += 1;
            }
            None => {}
        }
    }
    assert!(moved);
    assert_eq!(
        view.len(),
        1,
        "only the moved one, written without the lease"
    );
    assert_eq!(view.owner("app::Counter", "c/3"), Some(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_the_assignments_survives_a_store_restart() {
    use joerl_dist::cluster::store::assignments::{Assignment, AssignmentChange, assignment_key};
    use joerl_dist::cluster::store::follow::{FollowEvent, follow};
    let (dir, mut e) = restartable("follow").await;
    let (client, peer) = (e.client_addr(), e.peer_addr());
    let mut o = EtcdOptions::new([e.endpoint()]);
    o.request_timeout = Duration::from_secs(1);
    o.connect_timeout = Duration::from_millis(500);
    let s: Arc<dyn MetadataStore> = Arc::new(EtcdStore::connect(o).await.unwrap());
    let prefix = "joerl/f/placement";
    let a = Assignment {
        node: "a@127.0.0.1".into(),
        creation: 1,
    };
    s.put(&assignment_key(prefix, "K", "before"), a.encode(), None)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let f = follow(s.clone(), prefix.into(), move |ev| {
        let _ = tx.send(ev);
    });
    async fn recv(rx: &mut tokio::sync::mpsc::UnboundedReceiver<FollowEvent>) -> FollowEvent {
        tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("an event within 30 s")
            .expect("following goes on")
    }
    assert_eq!(
        recv(&mut rx).await,
        FollowEvent::Resynced { assignments: 1 }
    );
    s.put(&assignment_key(prefix, "K", "1"), a.encode(), None)
        .await
        .unwrap();
    assert!(matches!(
        recv(&mut rx).await,
        FollowEvent::Change(AssignmentChange::Assigned { id, .. }) if id == "1"
    ));

    // etcd restarts (same data, same address): the watch ends, the view is
    // listed again, and later changes are followed.
    e.stop();
    drop(e);
    let e = LocalEtcd::start_at(&dir, client, peer)
        .await
        .expect("restarts");
    assert_eq!(
        recv(&mut rx).await,
        FollowEvent::Resynced { assignments: 2 },
        "only a resync, with both assignments"
    );
    assert!(f.resyncs() >= 2);
    s.put(&assignment_key(prefix, "K", "2"), a.encode(), None)
        .await
        .unwrap();
    assert!(matches!(
        recv(&mut rx).await,
        FollowEvent::Change(AssignmentChange::Assigned { id, .. }) if id == "2"
    ));
    assert_eq!(f.owner("K", "2"), Some(a));
    assert_eq!(f.len(), 3);
    drop(f);
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
}
