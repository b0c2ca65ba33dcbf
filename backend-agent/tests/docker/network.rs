//! Containers' networks: one per egress policy, and a container whose environment's
//! policy changed moves at its next ensure, saying so once.

use labssh_agent::backend::{Backend, ExitStatus};
use labssh_proto::pb;

use crate::support::{docker_cli, environment_on, run_script, Scratch};

/// [`environment_on`] with `egress` (and `allow`) as its network policy.
fn with_egress(path: &str, egress: &str, allow: &[&str]) -> pb::Environment {
    pb::Environment {
        network: Some(pb::NetworkPolicy {
            egress: egress.into(),
            allow: allow.iter().map(|a| a.to_string()).collect(),
        }),
        ..environment_on(path)
    }
}

/// The networks a container is on.
fn networks(container: &str) -> Vec<String> {
    docker_cli(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        container,
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

on_both_paths!(a_changed_egress_policy_moves_the_container);
async fn a_changed_egress_policy_moves_the_container(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let internet = with_egress(path, "internet", &[]);
    let first = backend.ensure("gina", &internet).await.unwrap();
    assert!(first.created && first.notice.is_empty(), "{first:?}");
    let on_internet = networks(&first.container_id);
    assert_eq!(on_internet.len(), 1);
    assert!(on_internet[0].starts_with(&format!("{}-net-", scratch.prefix)));
    let (_, _, status) =
        run_script(&*backend, &first.container_id, "gina", "echo x > /tmp/kept").await;
    assert_eq!(status, ExitStatus::Code(0));

    // Another policy, another network: the running container is reconnected.
    let listed = with_egress(path, "allow", &["192.0.2.7:443"]);
    let moved = backend.ensure("gina", &listed).await.unwrap();
    assert_eq!(moved.container_id, first.container_id, "the same container");
    assert!(
        moved.notice.contains("moved to its own network"),
        "{moved:?}"
    );
    let on_listed = networks(&moved.container_id);
    assert_eq!(on_listed.len(), 1);
    assert_ne!(on_listed, on_internet);
    let (out, _, _) = run_script(&*backend, &moved.container_id, "gina", "cat /tmp/kept").await;
    assert_eq!(out, "x\n", "nothing in it changed");
    let again = backend.ensure("gina", &listed).await.unwrap();
    assert!(again.notice.is_empty(), "said once: {again:?}");

    // Into exam mode: recreated, with no network but loopback.
    let exam = with_egress(path, "none", &[]);
    let recreated = backend.ensure("gina", &exam).await.unwrap();
    assert!(recreated.created, "{recreated:?}");
    assert!(recreated.notice.contains("recreated"), "{recreated:?}");
    assert_eq!(networks(&recreated.container_id), ["none"]);
    let (out, _, _) = run_script(
        &*backend,
        &recreated.container_id,
        "gina",
        "ls /sys/class/net",
    )
    .await;
    assert_eq!(out, "lo\n");

    // A policy the agent cannot read fails the ensure rather than leave it open.
    let bad = with_egress(path, "open", &[]);
    let err = backend.ensure("gina", &bad).await.unwrap_err();
    assert!(err.to_string().contains("\"open\""), "{err}");
}
