//! TLS between nodes: mutual authentication with certificates of one CA, the
//! cookie handshake inside, and clear refusals when either side is wrong.

mod common;

use std::time::Duration;

use common::*;
use joerl_dist::transport::generate_certs;
use joerl_dist::{DistError, DistributedSystem, HandshakeError, TlsConfig};

/// TLS settings for `name`, from a CA's generated certificates.
fn tls_for(certs: &joerl_dist::transport::GeneratedCerts, name: &str) -> TlsConfig {
    let (_, cert, key) = certs
        .nodes
        .iter()
        .find(|(n, _, _)| n == name)
        .expect("a certificate for the name");
    TlsConfig::from_pem_bytes(cert.as_bytes(), key.as_bytes(), certs.ca.as_bytes())
        .expect("valid TLS settings")
}

async fn tls_node(
    name: &str,
    epmd: std::net::SocketAddr,
    tls: Option<TlsConfig>,
    cookie: &str,
) -> DistributedSystem {
    let mut b = builder(name, epmd)
        .cookie(cookie)
        .connect_timeout(Duration::from_secs(5))
        .reconnect_attempts(1);
    if let Some(tls) = tls {
        b = b.tls(tls);
    }
    b.start().await.unwrap()
}

fn is_tls_error(e: &DistError) -> bool {
    matches!(
        e,
        DistError::Handshake {
            source: HandshakeError::Tls(_),
            ..
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_certificates_of_one_ca_talk_over_tls() {
    init_tracing();
    let certs = generate_certs(&["a", "b"], &[]).unwrap();
    let epmd = epmd().await;
    let a = tls_node("tls_a", epmd.local_addr(), Some(tls_for(&certs, "a")), "k").await;
    let b = tls_node("tls_b", epmd.local_addr(), Some(tls_for(&certs, "b")), "k").await;
    let (fwd, mut rx) = forward();
    let sink = b.spawn(fwd);
    b.register("sink", sink).unwrap();
    for i in 0..1000u64 {
        a.send(("sink", b.name()), i).await.unwrap();
    }
    for i in 0..1000u64 {
        assert_eq!(recv::<u64>(&mut rx).await.0, i);
    }
    // And back the other way, on the same connection.
    let (fwd, mut rx_a) = forward();
    let sink_a = a.spawn(fwd);
    b.send(sink_a, "over tls".to_string()).await.unwrap();
    assert_eq!(recv::<String>(&mut rx_a).await.0, "over tls");
    assert_eq!(a.stats().total.reconnects, 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_another_ca_is_refused() {
    init_tracing();
    let ours = generate_certs(&["a"], &[]).unwrap();
    let theirs = generate_certs(&["b"], &[]).unwrap();
    let epmd = epmd().await;
    let a = tls_node("tca_a", epmd.local_addr(), Some(tls_for(&ours, "a")), "k").await;
    let b = tls_node("tca_b", epmd.local_addr(), Some(tls_for(&theirs, "b")), "k").await;
    let err = a.connect(b.name()).await.unwrap_err();
    assert!(is_tls_error(&err), "{err:?}");
    wait_until("b counted the refusal", || b.stats().refused_incoming >= 1).await;
    assert!(a.nodes().is_empty() && b.nodes().is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_tls_nodes_refuse_each_other_with_a_clear_error() {
    init_tracing();
    let certs = generate_certs(&["a"], &[]).unwrap();
    let epmd = epmd().await;
    let tls = tls_node(
        "mix_tls",
        epmd.local_addr(),
        Some(tls_for(&certs, "a")),
        "k",
    )
    .await;
    let plain = tls_node("mix_plain", epmd.local_addr(), None, "k").await;
    // TLS dials plain.
    let err = tls.connect(plain.name()).await.unwrap_err();
    assert!(is_tls_error(&err), "{err:?}");
    wait_until("the plain node counted the refusal", || {
        plain.stats().refused_incoming >= 1
    })
    .await;
    // Plain dials TLS.
    let err = plain.connect(tls.name()).await.unwrap_err();
    assert!(is_tls_error(&err), "{err:?}");
    assert!(
        err.to_string().contains("TLS"),
        "the error says what is wrong: {err}"
    );
    wait_until("the TLS node counted the refusal", || {
        tls.stats().refused_incoming >= 1
    })
    .await;
    assert!(tls.nodes().is_empty() && plain.nodes().is_empty());
    tls.shutdown().await;
    plain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_is_refused_inside_tls() {
    init_tracing();
    let certs = generate_certs(&["a", "b"], &[]).unwrap();
    let epmd = epmd().await;
    let a = tls_node(
        "tck_a",
        epmd.local_addr(),
        Some(tls_for(&certs, "a")),
        "one",
    )
    .await;
    let b = tls_node(
        "tck_b",
        epmd.local_addr(),
        Some(tls_for(&certs, "b")),
        "two",
    )
    .await;
    let err = a.connect(b.name()).await.unwrap_err();
    assert!(
        matches!(
            err,
            DistError::Handshake {
                source: HandshakeError::AuthenticationFailed,
                ..
            }
        ),
        "{err:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn bad_pem_input_is_a_typed_error() {
    let certs = generate_certs(&["a"], &[]).unwrap();
    let (_, cert, key) = &certs.nodes[0];
    for (c, k, ca) in [
        ("not pem", key.as_str(), certs.ca.as_str()),
        (cert.as_str(), "not a key", certs.ca.as_str()),
        (cert.as_str(), key.as_str(), ""),
    ] {
        let e = TlsConfig::from_pem_bytes(c.as_bytes(), k.as_bytes(), ca.as_bytes()).unwrap_err();
        assert!(matches!(e, joerl_dist::TlsError::Pem { .. }), "{e:?}");
    }
    let missing = std::path::Path::new("/nonexistent/joerl-test.pem");
    let e = TlsConfig::from_pem_files(missing, missing, missing).unwrap_err();
    assert!(matches!(e, joerl_dist::TlsError::Read { .. }), "{e:?}");
}
