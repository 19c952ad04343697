//! Two types registered under one name: reported at start-up with both type
//! names, and no node starts. (Its own test binary, as the conflict is global.)

use joerl_dist::{DistError, NodeBuilder, remote_message};

#[derive(serde::Serialize, serde::Deserialize)]
struct Twin1;
#[derive(serde::Serialize, serde::Deserialize)]
struct Twin2;
remote_message!(Twin1, "test::Twin");
remote_message!(Twin2, "test::Twin");

#[test]
fn conflicting_registrations_are_listed_with_both_types() {
    let conflicts = joerl_dist::registry::conflicts();
    let twin = conflicts
        .iter()
        .find(|c| c.name == "test::Twin")
        .expect("conflict reported");
    let both = format!("{} {}", twin.first, twin.second);
    assert!(both.contains("Twin1") && both.contains("Twin2"), "{twin}");
}

#[tokio::test]
async fn a_node_refuses_to_start_and_names_both_types() {
    // The check comes before any network activity, so no EPMD is needed.
    let err = NodeBuilder::new(
        "conflicted",
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:9".parse().unwrap(),
    )
    .cookie("k")
    .start()
    .await
    .unwrap_err();
    assert!(matches!(err, DistError::RegistryConflict(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("Twin1") && text.contains("Twin2") && text.contains("test::Twin"),
        "{text}"
    );
}
