//! Containers the previous release made sit on Docker's default bridge: at their
//! next login they move to their environment's network (reconnected where they run,
//! or recreated for exam mode), the student reads one line saying so, and their
//! files stay.

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use labssh_testkit::ssh::{stderr, stdout};

use super::{environment, networks_of};
use crate::lab::{Lab, LabOptions};

/// Replaces the container `name` with one made as the release before networks did:
/// the same image, command, labels, mounts and limits, on Docker's default bridge.
async fn make_old(name: &str) {
    let docker = bollard::Docker::connect_with_unix_defaults().unwrap();
    let inspect = docker.inspect_container(name, None).await.unwrap();
    let config = serde_json::to_value(inspect.config.unwrap()).unwrap();
    let mut body: ContainerCreateBody = serde_json::from_value(config).unwrap();
    let mut host = inspect.host_config.unwrap();
    host.network_mode = None;
    body.host_config = Some(host);
    let force = RemoveContainerOptionsBuilder::new().force(true).build();
    docker.remove_container(name, Some(force)).await.unwrap();
    let options = CreateContainerOptionsBuilder::new().name(name).build();
    docker.create_container(Some(options), body).await.unwrap();
    docker.start_container(name, None).await.unwrap();
    assert_eq!(networks_of(name).0, ["bridge"], "made the old way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containers_on_the_old_network_move_at_next_login() {
    let lab = Lab::start(LabOptions {
        catalogue: environment("exam", "\"none\""),
        ..Default::default()
    })
    .await;
    let alice = Lab::alice();
    let out = lab
        .ssh
        .run("alice", &alice, &["echo kept > $HOME/note"])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = lab.ssh.run("alice+exam", &alice, &["true"]).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let default = lab.container_name("alice", "default");
    let exam = lab.container_name("alice", "exam");
    make_old(&default).await;
    make_old(&exam).await;

    // Reconnected where it runs: everything in it stays.
    let out = lab
        .ssh
        .run("alice", &alice, &["cat $HOME/note"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "kept\n", "{}", stderr(&out));
    let notice: Vec<String> = stderr(&out)
        .lines()
        .filter(|l| l.starts_with("labssh: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        notice,
        ["labssh: your container was moved to its own network (internet access); nothing in it changed"],
        "{}",
        stderr(&out)
    );
    let (networks, _) = networks_of(&default);
    assert_eq!(networks.len(), 1, "{networks:?}");
    assert!(networks[0].starts_with(&format!("{}-net-", lab.cleanup.prefix)));
    // Said once: the next login has nothing to say.
    let out = lab.ssh.run("alice", &alice, &["true"]).await.unwrap();
    assert!(!stderr(&out).contains("labssh:"), "{}", stderr(&out));

    // Into exam mode it is recreated; the home is the same volume.
    let out = lab
        .ssh
        .run("alice+exam", &alice, &["cat $HOME/note; ls /sys/class/net"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "kept\nlo\n", "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "labssh: your container was recreated on its own network (loopback only); your home directory is kept"
        ),
        "{}",
        stderr(&out)
    );
    lab.stop().await;
}
