//! The built-in SFTP server in containers the agent creates: mounted read-only at
//! /.labssh/sftp-server in helper and Docker exec containers alike, and serving the
//! stock OpenSSH `sftp` client as the student (through `sftp -D "docker exec ..."`),
//! in a busybox image that has no sftp-server of its own.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use crate::support::{docker_cli, ensure_on, Scratch, STEP};
use labssh_agent::backend::docker::SFTP_SERVER_PATH;
use labssh_agent::backend::Backend;

/// The uid/gid of [`crate::support::environment`].
const UID_GID: &str = "1000:1000";

/// Bytes that differ at every offset, so a misplaced chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs the batch with `sftp -D` against the server in `container`, as the student
/// in their home; returns (success, stdout, stderr).
async fn sftp(container: &str, user: &str, batch: &std::path::Path) -> (bool, String, String) {
    let server =
        format!("docker exec -i -u {UID_GID} -w /home/{user} {container} {SFTP_SERVER_PATH}");
    let child = tokio::process::Command::new("sftp")
        .arg("-D")
        .arg(&server)
        .arg("-b")
        .arg(batch)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the OpenSSH sftp client is installed");
    let out = tokio::time::timeout(STEP, child.wait_with_output())
        .await
        .expect("sftp finishes in time")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn transfers_as_the_student(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let user = "sofia";
    let c = ensure_on(&backend, user, path).await;
    let name = &c.name;

    // Mounted read-only and executable by the student.
    let rw = docker_cli(&[
        "inspect",
        "-f",
        &format!(
            "{{{{range .Mounts}}}}{{{{if eq .Destination \"{SFTP_SERVER_PATH}\"}}}}{{{{.RW}}}}{{{{end}}}}{{{{end}}}}"
        ),
        name,
    ]);
    assert_eq!(
        rw.trim(),
        "false",
        "{path}: {SFTP_SERVER_PATH} mounted read-only"
    );
    let listed = docker_cli(&["exec", "-u", UID_GID, name, "ls", "-l", SFTP_SERVER_PATH]);
    assert!(listed.starts_with("-rwxr-xr-x"), "{path}: {listed}");

    let dir = tempfile::tempdir().unwrap();
    let local = dir.path();
    let data = pattern(3 * 1024 * 1024 + 777);
    std::fs::write(local.join("data.bin"), &data).unwrap();
    std::fs::set_permissions(
        local.join("data.bin"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let batch = local.join("batch");
    let l = local.display();
    std::fs::write(
        &batch,
        format!(
            "pwd\n\
             put {l}/data.bin\n\
             mkdir work\n\
             put {l}/data.bin work/copy.bin\n\
             get work/copy.bin {l}/back.bin\n\
             ls -l\n\
             ls -l work\n"
        ),
    )
    .unwrap();
    let (ok, out, err) = sftp(name, user, &batch).await;
    assert!(ok, "{path}: sftp failed\nstdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(&format!("Remote working directory: /home/{user}\n")),
        "{path}: {out}"
    );
    assert!(
        std::fs::read(local.join("back.bin")).unwrap() == data,
        "{path}: the file came back different"
    );
    let line = out
        .lines()
        .find(|l| l.ends_with(" data.bin"))
        .unwrap_or_else(|| panic!("{path}: no data.bin in ls -l:\n{out}"));
    assert!(line.starts_with("-rw-r--r--"), "{path}: {line}");
    assert!(
        line.split_whitespace().any(|f| f == data.len().to_string()),
        "{path}: size in {line}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("d") && l.ends_with(" work")),
        "{path}: {out}"
    );

    // In the home volume, owned by the student; the bytes as sent.
    // (As the student: root in an exec container has no capability to enter a 0700
    // home it does not own.)
    let owners = docker_cli(&[
        "exec",
        "-u",
        UID_GID,
        name,
        "stat",
        "-c",
        "%u:%g %s %n",
        &format!("/home/{user}/data.bin"),
        &format!("/home/{user}/work"),
        &format!("/home/{user}/work/copy.bin"),
    ]);
    assert_eq!(owners.lines().count(), 3, "{path}: {owners}");
    for line in owners.lines() {
        assert!(line.starts_with(&format!("{UID_GID} ")), "{path}: {owners}");
    }
    for file in ["data.bin", "work/copy.bin"] {
        let expected = format!(" {} /home/{user}/{file}\n", data.len());
        assert!(owners.contains(&expected), "{path}: {owners}");
    }
    let sum = |file: &str| {
        docker_cli(&["exec", "-u", UID_GID, name, "md5sum", file])
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        sum(&format!("/home/{user}/data.bin")),
        sum(&format!("/home/{user}/work/copy.bin")),
        "{path}"
    );
    assert!(
        !sum(&format!("/home/{user}/data.bin")).is_empty(),
        "{path}: md5sum ran"
    );

    // The student cannot write outside what their uid may.
    std::fs::write(&batch, format!("put {l}/data.bin /etc/evil\n")).unwrap();
    let (ok, _, err) = sftp(name, user, &batch).await;
    assert!(!ok, "{path}: writing /etc as the student must fail");
    assert!(err.contains("Permission denied"), "{path}: {err}");
}

#[tokio::test]
async fn helper_containers_serve_sftp_as_the_student() {
    transfers_as_the_student("helper").await;
}

#[tokio::test]
async fn exec_containers_serve_sftp_as_the_student() {
    transfers_as_the_student("exec").await;
}

#[tokio::test]
async fn without_labssh_init_the_sftp_server_is_still_mounted() {
    let scratch = Scratch::new();
    let config = labssh_agent::Config {
        init_binary: "/nonexistent/labssh-init".into(),
        ..scratch.config()
    };
    let backend = labssh_agent::DockerBackend::connect(&config).await.unwrap();
    let c = backend
        .ensure("tomas", &crate::support::environment())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let batch = dir.path().join("batch");
    std::fs::write(&batch, "mkdir made-by-sftp\nls\n").unwrap();
    let (ok, out, err) = sftp(&c.name, "tomas", &batch).await;
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("made-by-sftp"), "{out}");
}
