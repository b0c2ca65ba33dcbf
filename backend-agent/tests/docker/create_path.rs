//! The cold-creation path: a new container's home and passwd entry set up before it
//! exists (the home volume from this host, the image's passwd and group read once per
//! image and bound read-only with the student added), and a containers' network that
//! vanished behind the agent's back made again.

use labssh_agent::backend::{Backend, ExitStatus, SpawnSpec};
use labssh_proto::pb;

use crate::support::{collect, docker_cli, environment_on, run_script, Scratch, STEP};

/// `docker inspect`'s mounts of a container as "destination:rw" lines.
fn mounts(container: &str) -> String {
    docker_cli(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Destination}}:{{.RW}} {{end}}",
        container,
    ])
}

/// Two students' new containers of one image each get their own entry (bound
/// read-only, the image's lines kept) and a home they own with mode 0700, on both
/// spawn paths; a home volume that already holds files keeps them.
async fn new_students_get_entries_and_homes(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = environment_on(path);
    let volume = scratch.labelled_volume("bob");
    docker_cli(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{volume}:/h"),
        crate::support::IMAGE,
        "sh",
        "-c",
        "echo kept > /h/old && chown 0:0 /h && chmod 755 /h",
    ]);
    for user in ["alice", "bob"] {
        let ensured = backend.ensure(user, &env).await.expect("ensure");
        assert!(ensured.created, "{ensured:?}");
        let (out, err, status) = run_script(
            &*backend,
            &ensured.container_id,
            user,
            r#"id -un; id -gn; stat -c '%u:%g %a' ~; grep -c . /etc/passwd; grep '^root:' /etc/passwd; ls ~; echo x >> /etc/passwd || echo refused"#,
        )
        .await;
        assert_eq!(status, ExitStatus::Code(0), "{user}: {err}");
        let old = if user == "bob" { "old\n" } else { "" };
        assert_eq!(
            out,
            format!(
                "{user}\n{user}\n1000:1000 700\n3\nroot:x:0:0:root:/root:/bin/sh\n{old}refused\n"
            ),
            "{user}: {err}"
        );
        let mounts = mounts(&ensured.container_id);
        assert!(
            mounts.contains("/etc/passwd:false") && mounts.contains("/etc/group:false"),
            "{user}'s passwd files are bound read-only: {mounts}"
        );
    }
}
on_both_paths!(new_students_get_entries_and_homes);

/// An image that has the environment's ids already binds nothing and keeps its files.
#[tokio::test]
async fn an_image_with_the_ids_keeps_its_own_files() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = pb::Environment {
        uid: 65534,
        gid: 65534,
        ..environment_on("helper")
    };
    let ensured = backend.ensure("carol", &env).await.expect("ensure");
    let mounts = mounts(&ensured.container_id);
    assert!(!mounts.contains("/etc/passwd"), "{mounts}");
    let argv = vec![
        "/bin/sh".into(),
        "-c".into(),
        "id -un; stat -c '%u %a' ~".into(),
    ];
    let spec = SpawnSpec::for_user("carol", &env, argv, Vec::new(), None);
    let process = tokio::time::timeout(STEP, backend.spawn(&ensured.container_id, spec))
        .await
        .expect("spawn in time")
        .expect("spawn");
    let (out, err, status) = collect(process).await;
    assert_eq!(status, ExitStatus::Code(0), "{err}");
    assert_eq!(out, "nobody\n65534 700\n", "{err}");
}

/// The agent takes a network it made for existing; when someone removes it, the next
/// creation makes it again instead of failing (or blaming the image).
#[tokio::test]
async fn a_removed_network_is_made_again() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = environment_on("helper");
    let first = backend.ensure("dave", &env).await.expect("ensure");
    let network = docker_cli(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
        &first.container_id,
    ]);
    let network = network.trim().to_owned();
    assert!(
        network.starts_with(&format!("{}-net-", scratch.prefix)),
        "{network}"
    );
    docker_cli(&["rm", "-f", &first.container_id]);
    docker_cli(&["network", "rm", &network]);
    let second = backend
        .ensure("erin", &env)
        .await
        .expect("ensure after the network went");
    assert!(second.created, "{second:?}");
    let (out, err, _) = run_script(&*backend, &second.container_id, "erin", "id -un").await;
    assert_eq!(out, "erin\n", "{err}");
    let now = docker_cli(&["network", "inspect", "-f", "{{.Name}}", &network]);
    assert_eq!(now.trim(), network);
}
