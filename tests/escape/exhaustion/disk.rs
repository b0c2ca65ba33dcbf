//! Disk quotas on a storage driver without size limits (overlay2 on ext4, the local
//! volume driver): a student over the home or the writable-layer quota gets no new
//! shell and is told why and what to do; SFTP still works, so they delete files and
//! log in again. Other students are not affected.

use std::path::Path;

use labssh_testkit::ssh::{stderr, stdout};

use super::{until, STEP};
use crate::lab::{spawn_path, Lab, LabOptions};

/// The `quota` environment: 5 MB of home, 5 MB of writable layer.
fn catalogue() -> String {
    format!(
        r#"
[environments.quota]
image = "{}"
spawn = "{}"
uid = 1000
gid = 1000
home_quota_mb = 5
layer_quota_mb = 5
"#,
        labssh_testkit::docker::TEST_IMAGE,
        spawn_path()
    )
}

/// Runs `batch` with `sftp -b -` as `login@lab`; panics unless it succeeds.
async fn sftp(lab: &Lab, config: &Path, login: &str, batch: &str) {
    use tokio::io::AsyncWriteExt;
    let cfg = config.display().to_string();
    let target = format!("{login}@lab");
    let mut cmd = lab.ssh.tool("sftp", &["-F", &cfg, "-b", "-", &target]);
    cmd.stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(batch.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(STEP, child.wait_with_output())
        .await
        .expect("sftp finished")
        .unwrap();
    assert!(
        out.status.success(),
        "sftp {batch:?} failed: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
}

/// Fills `path` with 8 MB, waits until a new shell is refused with `why`, deletes the
/// file with sftp and waits until a shell is allowed again.
async fn over_quota_then_back(lab: &Lab, config: &Path, path: &str, why: &str) {
    let fill =
        format!("dd if=/dev/zero of={path} bs=1M count=8 2>/dev/null && sync && echo filled");
    let out = lab
        .ssh
        .run("alice+quota", &Lab::alice(), &[&fill])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "filled\n", "{}", stderr(&out));
    // A pass of the measuring loop may catch the file while dd still writes it (and
    // refuse at 6 MB, say): the next pass measures it whole.
    let out = until(lab, "alice+quota", &Lab::alice(), "echo in", |o| {
        o.status.code() == Some(255) && stderr(o).contains(why)
    })
    .await;
    let text = stderr(&out);
    assert!(
        text.contains("over, measured")
            && text.contains("delete files with sftp (still allowed) and log in again"),
        "{text}"
    );
    assert_eq!(stdout(&out), "", "the refused shell ran");
    // Bob, in the same environment, is not affected.
    let out = lab
        .ssh
        .run("bob+quota", &Lab::bob(), &["echo bob-in"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "bob-in\n", "{}", stderr(&out));
    // SFTP still works: the student deletes the file, then logs in again.
    sftp(lab, config, "alice+quota", &format!("rm {path}\n")).await;
    let out = until(lab, "alice+quota", &Lab::alice(), "echo in", |o| {
        o.status.success()
    })
    .await;
    assert_eq!(stdout(&out), "in\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_a_disk_quota_no_new_shell_but_sftp_to_clean_up() {
    let lab = Lab::start(LabOptions {
        catalogue: catalogue(),
        agent_config: Some(|a| a.disk_check_interval_secs = 1),
        ..Default::default()
    })
    .await;
    let (key, public) = lab.ssh.keygen("alice-key").unwrap();
    labssh_proxy::users::add_user(&lab.users_file, "alice", None, Some(&public)).unwrap();
    let config = lab.ssh.config_file(&key).unwrap();

    over_quota_then_back(
        &lab,
        &config,
        "/home/alice/big",
        "your home directory uses 8 MB of its 5 MB quota (3 MB over",
    )
    .await;
    over_quota_then_back(
        &lab,
        &config,
        "/tmp/big",
        "your container's files outside your home (in /tmp, say) use",
    )
    .await;
    lab.stop().await;
}
