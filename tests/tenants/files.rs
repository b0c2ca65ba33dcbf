//! Files: SFTP paths that lead out of alice's container (`/proc/1/root`, `..`),
//! symlinks alice plants in her home pointing at host paths and at bob's home volume
//! on the host, and a search of every file alice, as root in her own container, can
//! read.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use labssh_testkit::ssh::{stderr, stdout};
use tokio::io::AsyncWriteExt;

use crate::lab::{Lab, LabOptions};
use crate::{as_alice, inspect, Bob};

/// `sftp -b -` as `login` in `cwd`; every command prefixed with `-` so one failure
/// does not end the batch. Returns its output.
async fn sftp(lab: &Lab, cfg: &Path, login: &str, cwd: &Path, batch: &str) -> String {
    let cfg = cfg.display().to_string();
    let target = format!("{login}@lab");
    let mut cmd = lab.ssh.tool("sftp", &["-F", &cfg, "-b", "-", &target]);
    cmd.current_dir(cwd).stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let batch: String = batch.lines().map(|l| format!("-{l}\n")).collect();
    stdin.write_all(batch.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("sftp finished")
        .unwrap();
    format!("{}{}", stdout(&out), stderr(&out))
}

/// Everything in the files of `dir` (what sftp downloaded).
fn downloaded(dir: &Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if let Ok(bytes) = std::fs::read(entry.path()) {
            all.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_path_leads_alice_to_bobs_files_or_the_hosts() {
    let lab = Lab::start(LabOptions::default()).await;
    let bob = Bob::plant(&lab).await;
    // A file on the host, and where bob's home lives on the host.
    let host_secret = format!("host-secret-{}", labssh_testkit::unique("h"));
    let host_file = lab.dir.path().join("host-secret");
    std::fs::write(&host_file, format!("{host_secret}\n")).unwrap();
    let bob_home = inspect(
        &lab.container_name("bob", "default"),
        "{{range .Mounts}}{{if eq .Destination \"/home/bob\"}}{{.Source}}{{end}}{{end}}",
    );
    assert!(!bob_home.is_empty(), "bob's home is a volume on the host");
    let (key, public) = lab.ssh.keygen("alice-key").unwrap();
    labssh_proxy::users::add_user(&lab.users_file, "alice", None, Some(&public)).unwrap();
    let cfg = lab.ssh.config_file(&key).unwrap();
    for login in ["alice", "alice+admin"] {
        // Symlinks in alice's home to the host's file, the host's root, bob's volume.
        as_alice(
            &lab,
            login,
            &format!(
                "cd ~ && ln -sf {host} host-link && ln -sf /proc/1/root root-link && \
                 ln -sf {bob_home}/secret bob-link && ln -sf {bob_home} bob-dir",
                host = host_file.display()
            ),
        )
        .await;
        let cwd = tempfile::tempdir().unwrap();
        let listing = sftp(
            &lab,
            &cfg,
            login,
            cwd.path(),
            &format!(
                "get host-link\nget root-link{host}\nget /proc/1/root/home/bob/secret p1\n\
                 get bob-link\nget bob-dir/secret bd\nls -la bob-dir\nget /home/bob/secret hb\n\
                 ls -la /home\nget ../../../../../../..{host} up\nget /proc/1/root{bob_home}/secret pv\n\
                 get {bob_home}/secret direct\nls -la /proc/1/root/home",
                host = host_file.display()
            ),
        )
        .await;
        let got = format!("{listing}{}", downloaded(cwd.path()));
        bob.assert_not_in(&got, &format!("SFTP as {login}"));
        assert!(
            !got.contains(&host_secret),
            "SFTP as {login} read a host file: {got}"
        );
    }
    // Everything alice can read as root in her own container, on every file system but
    // the kernel's.
    let search = as_alice(
        &lab,
        "alice+admin",
        &format!(
            "for d in $(awk '$3 !~ /^(proc|sysfs|devpts|mqueue|cgroup2?)$/ {{print $2}}' /proc/mounts); do \
             find \"$d\" -xdev -type f -size -2048k 2>/dev/null; done | \
             while read -r f; do grep -l -e {} -e {host_secret} \"$f\" 2>/dev/null; done",
            &bob.secret[..bob.secret.len() - 1]
        ),
    )
    .await;
    assert_eq!(
        search.trim(),
        "alice-done",
        "files in alice's container hold bob's or the host's secret"
    );
    lab.stop().await;
}
