//! Isolation per environment on the real engine: rlimits, a seccomp profile, a
//! read-only root (with the student's home, passwd entry and tmpfs still working),
//! /dev/shm's size, read-only course data and a missing course-data volume; and GPUs
//! asked of a node that has none.

use labssh_agent::backend::{Backend, BackendError, ExitStatus};
use labssh_proto::pb;

use crate::support::*;

/// A profile refusing `mkdir` and `mkdirat` (EPERM), allowing everything else.
const DENY_MKDIR: &str = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#;

/// [`environment_on`] with `isolation`.
fn isolated(path: &str, isolation: pb::Isolation) -> pb::Environment {
    pb::Environment {
        isolation: Some(isolation),
        ..environment_on(path)
    }
}

async fn rlimits_read_only_root_and_shm(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = isolated(
        path,
        pb::Isolation {
            rlimits: [
                (
                    "nofile".to_owned(),
                    pb::Rlimit {
                        soft: 321,
                        hard: 654,
                    },
                ),
                ("core".to_owned(), pb::Rlimit { soft: 0, hard: 0 }),
            ]
            .into(),
            read_only_root: true,
            tmpfs: vec!["/tmp:size=8m".into()],
            shm_size_bytes: 32 << 20,
            ..Default::default()
        },
    );
    let ensured = backend.ensure("alice", &env).await.expect("ensure");
    let (out, err, status) = run_script(
        &*backend,
        &ensured.container_id,
        "alice",
        r#"
        echo "nofile $(ulimit -n) $(ulimit -Hn) core $(ulimit -c)"
        touch /etc/planted 2>/dev/null && echo "root writable" || echo "root read-only"
        touch /usr/planted 2>/dev/null && echo "usr writable" || echo "usr read-only"
        echo tmp > /tmp/ok && cat /tmp/ok
        echo home > ~/ok && cat ~/ok
        echo "user $(id -un) $(stat -c %U:%a ~)"
        df -k /dev/shm | tail -1 | awk '{print "shm " $2}'
        "#,
    )
    .await;
    assert_eq!(status, ExitStatus::Code(0), "{err}");
    assert_eq!(
        out,
        "nofile 321 654 core 0\nroot read-only\nusr read-only\ntmp\nhome\nuser alice alice:700\nshm 32768\n",
        "{err}"
    );
    // The container started again keeps all of it (the passwd files are bound from
    // the helper directory, which must still be there).
    backend
        .docker()
        .stop_container(&ensured.container_id, None)
        .await
        .unwrap();
    let again = backend.ensure("alice", &env).await.expect("ensure again");
    assert!(again.started && !again.created, "{again:?}");
    let (out, err, _) =
        run_script(&*backend, &again.container_id, "alice", "id -un; cat ~/ok").await;
    assert_eq!(out, "alice\nhome\n", "{err}");
}
on_both_paths!(rlimits_read_only_root_and_shm);

async fn a_seccomp_profile_denies_its_syscalls(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = isolated(
        path,
        pb::Isolation {
            seccomp: DENY_MKDIR.into(),
            ..Default::default()
        },
    );
    let ensured = backend.ensure("alice", &env).await.expect("ensure");
    let (out, err, status) = run_script(
        &*backend,
        &ensured.container_id,
        "alice",
        "ls / >/dev/null && echo ls-ok; mkdir ~/d && echo mkdir-ok; grep Seccomp: /proc/self/status",
    )
    .await;
    assert_eq!(out, "ls-ok\nSeccomp:\t2\n", "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert_eq!(status, ExitStatus::Code(0));
    // Without the profile, the same works (the profile, not the image, refused it).
    let plain = backend
        .ensure("bob", &environment_on(path))
        .await
        .expect("ensure");
    let (out, err, _) = run_script(
        &*backend,
        &plain.container_id,
        "bob",
        "mkdir ~/d && echo mkdir-ok",
    )
    .await;
    assert_eq!(out, "mkdir-ok\n", "{err}");
}
on_both_paths!(a_seccomp_profile_denies_its_syscalls);

#[tokio::test]
async fn course_data_is_mounted_read_only_and_a_missing_volume_is_named() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let volume = scratch.labelled_volume("course");
    docker_cli(&[
        "run",
        "--rm",
        "-v",
        &format!("{volume}:/d"),
        IMAGE,
        "sh",
        "-c",
        "echo lecture-1 > /d/notes && chmod 666 /d/notes",
    ]);
    let env = isolated(
        "helper",
        pb::Isolation {
            mounts: vec![pb::Mount {
                source: volume.clone(),
                target: "/srv/course".into(),
            }],
            ..Default::default()
        },
    );
    let ensured = backend.ensure("alice", &env).await.expect("ensure");
    let (out, err, _) = run_script(
        &*backend,
        &ensured.container_id,
        "alice",
        "cat /srv/course/notes; echo planted > /srv/course/notes || echo refused; touch /srv/course/new || echo refused",
    )
    .await;
    assert_eq!(out, "lecture-1\nrefused\nrefused\n", "{err}");
    assert!(err.contains("Read-only file system"), "{err}");

    let missing = format!("{}-no-such-volume", scratch.prefix);
    let env = isolated(
        "helper",
        pb::Isolation {
            mounts: vec![pb::Mount {
                source: missing.clone(),
                target: "/srv/course".into(),
            }],
            ..Default::default()
        },
    );
    let err = backend.ensure("bob", &env).await.unwrap_err();
    assert_eq!(
        err,
        BackendError::CourseDataMissing {
            volume: missing.clone(),
            target: "/srv/course".into(),
            agent: scratch.agent.clone(),
        }
    );
    assert!(
        err.to_string().contains("please tell your instructor"),
        "{err}"
    );
    // Docker was not left to create an empty one.
    assert_eq!(
        docker_cli(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name=^{missing}$")
        ]),
        ""
    );
}

#[tokio::test]
async fn gpus_on_a_node_without_any_are_refused_before_anything_is_created() {
    let scratch = Scratch::new();
    let config = labssh_agent::Config {
        gpus: Some(Vec::new()),
        ..scratch.config()
    };
    let backend = labssh_agent::DockerBackend::connect(&config)
        .await
        .expect("connect to Docker");
    let env = pb::Environment {
        name: "gpu".into(),
        gpus: Some(pb::GpuRequest {
            count: 1,
            ..Default::default()
        }),
        ..environment_on("helper")
    };
    let err = backend.ensure("alice", &env).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::GpusUnavailable(m) if m.contains("needs 1 GPUs and 0 of this node's 0 are free")),
        "{err}"
    );
    assert!(
        scratch.containers().is_empty(),
        "{:?}",
        scratch.containers()
    );
}
