//! Prestart: an admin's prestart of alice's class never touches bob, who is not
//! in it, and no student can start one (the rpc is admin-only, and a caller
//! without the admin certificate is refused).

use labssh_proto::pb;
use labssh_proto::tls::CONTROLLER_NAME;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::lab::{Lab, LabOptions};
use crate::{inspect, Bob};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prestarting_a_class_never_touches_bob_and_students_cannot_prestart() {
    let lab = Lab::start(LabOptions {
        tls: true,
        ..Default::default()
    })
    .await;
    let bob = Bob::plant(&lab).await;
    let bob_name = lab.container_name("bob", "default");
    let before = inspect(&bob_name, "{{.Id}} {{.State.StartedAt}}");
    for user in ["alice", "carol"] {
        labssh_proxy::users::add_user_in_groups(
            &lab.users_file,
            user,
            None,
            None,
            &["cs101".to_string()],
        )
        .unwrap();
    }

    let client = lab.cluster.as_ref().unwrap().controller_client().unwrap();
    let mut stream = client
        .clone()
        .prestart(pb::PrestartRequest {
            group: "cs101".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut users = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        if let Some(pb::prestart_event::Event::Result(r)) = event.event {
            assert_eq!(r.outcome(), pb::PrestartOutcome::Created, "{r:?}");
            users.push(r.user);
        }
    }
    users.sort();
    assert_eq!(users, ["alice", "carol"], "bob is not in cs101");
    assert_eq!(
        inspect(&bob_name, "{{.Id}} {{.State.StartedAt}}"),
        before,
        "bob's container neither recreated nor restarted"
    );
    let still = labssh_testkit::docker::docker(&[
        "exec",
        &bob_name,
        "sh",
        "-c",
        &format!("nc 127.0.0.1 {} < /dev/null", crate::BOB_PORT),
    ])
    .unwrap_or_default();
    assert_eq!(
        still.trim(),
        bob.secret,
        "bob's server still up, serving his secret"
    );
    // Alice's prestarted container is hers alone: it has none of bob's files.
    let alice_home = labssh_testkit::docker::docker(&[
        "exec",
        &lab.container_name("alice", "default"),
        "sh",
        "-c",
        "cat /home/*/secret 2>&1; ls -A /home/*",
    ])
    .unwrap_or_default();
    bob.assert_not_in(&alice_home, "a prestarted container");

    // A student holds no cluster certificate: without one the controller does
    // not even finish the handshake, so no Prestart reaches it.
    let ca = std::fs::read(lab.dir.path().join("certs").join("ca.pem")).unwrap();
    let endpoint = Endpoint::from_shared(format!(
        "https://{}",
        lab.cluster.as_ref().unwrap().controller_addr
    ))
    .unwrap()
    .tls_config(
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name(CONTROLLER_NAME),
    )
    .unwrap();
    let refused = match endpoint.connect().await {
        Err(_) => true,
        Ok(channel) => pb::controller_client::ControllerClient::new(channel)
            .prestart(pb::PrestartRequest {
                users: vec!["bob".into()],
                ..Default::default()
            })
            .await
            .is_err(),
    };
    assert!(refused, "a prestart without a certificate went through");
    assert_eq!(
        inspect(&bob_name, "{{.Id}} {{.State.StartedAt}}"),
        before,
        "bob's container untouched"
    );
    lab.stop().await;
}
