//! Files in and out with the stock OpenSSH tools: sftp (the image's sftp-server, or
//! labssh's built-in one in images without it), scp (SFTP and legacy `-O`) and
//! `rsync -e ssh`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::lab::{pattern, Lab, LabOptions};
use labssh_testkit::ssh::{output, stderr, stdout};
use tokio::io::AsyncWriteExt;

/// An ssh_config for alice with a fresh key (added to the users file).
pub(crate) fn key_config(lab: &Lab) -> std::path::PathBuf {
    let (key, public) = lab.ssh.keygen("alice-key").unwrap();
    labssh_proxy::users::add_user(&lab.users_file, "alice", None, Some(&public)).unwrap();
    lab.ssh.config_file(&key).unwrap()
}

/// `sftp -b -` as `login`, in `cwd`, reading its commands from stdin (piped).
fn sftp(lab: &Lab, cfg: &Path, login: &str, cwd: &Path) -> tokio::process::Child {
    let cfg = cfg.display().to_string();
    let target = format!("{login}@lab");
    let mut cmd = lab.ssh.tool("sftp", &["-F", &cfg, "-b", "-", &target]);
    cmd.current_dir(cwd).stdin(Stdio::piped());
    cmd.spawn().unwrap()
}

/// Runs `batch` through [`sftp`] and returns its output.
async fn sftp_run(
    lab: &Lab,
    cfg: &Path,
    login: &str,
    cwd: &Path,
    batch: &str,
) -> std::process::Output {
    let mut child = sftp(lab, cfg, login, cwd);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(batch.as_bytes()).await.unwrap();
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("sftp finished")
        .unwrap()
}

/// `sftp -b -` with `batch` as its commands; panics with the output on failure.
pub(crate) async fn sftp_batch(
    lab: &Lab,
    cfg: &Path,
    login: &str,
    cwd: &Path,
    batch: &str,
) -> String {
    let out = sftp_run(lab, cfg, login, cwd, batch).await;
    assert!(
        out.status.success(),
        "sftp {login} failed: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Command lines of the processes in `user`'s `env` container.
fn processes(lab: &Lab, user: &str, env: &str) -> String {
    let name = lab.container_name(user, env);
    labssh_testkit::docker::docker(&[
        "exec",
        &name,
        "sh",
        "-c",
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done",
    ])
    .unwrap_or_default()
}

/// Starts an interactive sftp and reports which server program runs in the container
/// while it is connected.
async fn sftp_server_in_use(lab: &Lab, cfg: &Path, login: &str, user: &str, env: &str) -> String {
    let mut child = sftp(lab, cfg, login, lab.dir.path());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"pwd\n").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let ps = processes(lab, user, env);
        if let Some(line) = ps.lines().find(|l| l.contains("sftp-server")) {
            break line.trim().to_string();
        }
        assert!(Instant::now() < deadline, "no sftp server ran: {ps}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    found
}

/// put/ls/rename/get/mkdir/rmdir/rm through sftp, checked byte for byte.
async fn sftp_round_trip(lab: &Lab, cfg: &Path, login: &str, tag: &str) {
    let work = tempfile::tempdir().unwrap();
    let data = pattern(5 << 20, tag.len() as u64 + 11);
    std::fs::write(work.path().join("up.bin"), &data).unwrap();
    let listing = sftp_batch(
        lab,
        cfg,
        login,
        work.path(),
        &format!(
            "put up.bin {tag}.bin\nls -l\nrename {tag}.bin {tag}-moved.bin\nget {tag}-moved.bin back.bin\nmkdir {tag}-dir\nput up.bin {tag}-dir/inner.bin\nls {tag}-dir\nrm {tag}-dir/inner.bin\nrmdir {tag}-dir\nrm {tag}-moved.bin\nls\n"
        ),
    )
    .await;
    assert!(listing.contains(&format!("{tag}.bin")), "{listing}");
    assert!(listing.contains("inner.bin"), "{listing}");
    let back = std::fs::read(work.path().join("back.bin")).unwrap();
    assert_eq!(back.len(), data.len(), "{login}: size");
    assert!(back == data, "{login}: sftp get returned different bytes");
    // Everything removed again, and a missing file is an error the client reports.
    let work2 = tempfile::tempdir().unwrap();
    let out = sftp_run(
        lab,
        cfg,
        login,
        work2.path(),
        &format!("get {tag}-moved.bin\n"),
    )
    .await;
    assert!(!out.status.success(), "getting a removed file succeeded");
    assert!(
        stderr(&out).contains("not found") || stderr(&out).contains("No such file"),
        "{}",
        stderr(&out)
    );
}

/// scp up and down (SFTP protocol unless `legacy`), compared byte for byte.
async fn scp_round_trip(lab: &Lab, cfg: &Path, login: &str, legacy: bool) {
    let work = tempfile::tempdir().unwrap();
    let data = pattern(3 << 20, 99 + legacy as u64);
    let up = work.path().join("scp-up.bin");
    std::fs::write(&up, &data).unwrap();
    let cfg = cfg.display().to_string();
    let remote = format!(
        "{login}@lab:scp-{}.bin",
        if legacy { "legacy" } else { "sftp" }
    );
    let mut args = vec!["-F", cfg.as_str(), "-q"];
    if legacy {
        args.push("-O");
    }
    let up_s = up.display().to_string();
    let mut a = args.clone();
    a.extend([up_s.as_str(), remote.as_str()]);
    let out = output(lab.ssh.tool("scp", &a)).await.unwrap();
    assert!(
        out.status.success(),
        "scp up ({login}, legacy={legacy}): {}",
        stderr(&out)
    );
    let down = work.path().join("scp-down.bin");
    let down_s = down.display().to_string();
    let mut a = args.clone();
    a.extend([remote.as_str(), down_s.as_str()]);
    let out = output(lab.ssh.tool("scp", &a)).await.unwrap();
    assert!(
        out.status.success(),
        "scp down ({login}, legacy={legacy}): {}",
        stderr(&out)
    );
    assert!(std::fs::read(&down).unwrap() == data, "scp bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn busybox_gets_the_built_in_sftp_server() {
    let lab = Lab::start(LabOptions::default()).await;
    let cfg = key_config(&lab);
    sftp_round_trip(&lab, &cfg, "alice", "bb").await;
    let server = sftp_server_in_use(&lab, &cfg, "alice", "alice", "default").await;
    assert!(server.starts_with("/.labssh/sftp-server"), "{server}");
    // Modern scp speaks SFTP, so it works without scp in the image.
    scp_round_trip(&lab, &cfg, "alice", false).await;
    // Files belong to the student inside the container.
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["stat -c '%u %s' scp-sftp.bin"])
        .await
        .unwrap();
    assert_eq!(
        stdout(&out),
        format!("1000 {}\n", 3 << 20),
        "{}",
        stderr(&out)
    );
    // Legacy scp needs scp in the image; busybox has none, and the student is told.
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    let cfg_s = cfg.display().to_string();
    let f_s = f.display().to_string();
    let out = output(
        lab.ssh
            .tool("scp", &["-F", &cfg_s, "-O", &f_s, "alice@lab:f"]),
    )
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("scp: not found"), "{}", stderr(&out));
    lab.stop().await;
}

/// An image with nothing in it (no shell, no libraries, as distroless images are):
/// sftp and modern scp still work through the built-in server, and a shell login is
/// told plainly that the image has no shell.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_image_with_nothing_in_it_still_serves_sftp_and_scp() {
    tokio::task::spawn_blocking(labssh_testkit::docker::ensure_bare_image)
        .await
        .unwrap()
        .expect("bare image");
    let lab = Lab::start(LabOptions::default()).await;
    let cfg = key_config(&lab);
    let login = "alice+bare";
    sftp_round_trip(&lab, &cfg, login, "bare").await;
    scp_round_trip(&lab, &cfg, login, false).await;
    let out = lab.ssh.run(login, &Lab::alice(), &["true"]).await.unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("labssh: could not start your session")
            && stderr(&out).contains("cannot execute /bin/sh: No such file or directory"),
        "{}",
        stderr(&out)
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debian_uses_its_own_sftp_server_scp_and_rsync() {
    tokio::task::spawn_blocking(labssh_testkit::docker::ensure_debian_image)
        .await
        .unwrap()
        .expect("Debian image");
    let lab = Lab::start(LabOptions::default()).await;
    let cfg = key_config(&lab);
    let login = "alice+debian";
    sftp_round_trip(&lab, &cfg, login, "deb").await;
    let server = sftp_server_in_use(&lab, &cfg, login, "alice", "debian").await;
    assert!(
        server.starts_with("/usr/lib/openssh/sftp-server"),
        "{server}"
    );
    scp_round_trip(&lab, &cfg, login, false).await;
    scp_round_trip(&lab, &cfg, login, true).await;

    // rsync of a tree up, changed, then back down into a fresh directory.
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("src/deep")).unwrap();
    std::fs::write(tree.join("README"), b"read me\n").unwrap();
    std::fs::write(tree.join("src/main.c"), b"int main(void){return 0;}\n").unwrap();
    std::fs::write(tree.join("src/deep/blob.bin"), pattern(1 << 20, 5)).unwrap();
    std::os::unix::fs::symlink("src/main.c", tree.join("link")).unwrap();
    let cfg_s = cfg.display().to_string();
    let rsh = format!("ssh -F {cfg_s}");
    let tree_s = format!("{}/", tree.display());
    let out = output(lab.ssh.tool(
        "rsync",
        &["-a", "-e", &rsh, &tree_s, "alice+debian@lab:tree/"],
    ))
    .await
    .unwrap();
    assert!(out.status.success(), "rsync up: {}", stderr(&out));
    let out = lab
        .ssh
        .run(
            login,
            &Lab::alice(),
            &["cd tree && find . | sort && readlink link && stat -c %u src/deep/blob.bin"],
        )
        .await
        .unwrap();
    assert_eq!(
        stdout(&out),
        ".\n./README\n./link\n./src\n./src/deep\n./src/deep/blob.bin\n./src/main.c\nsrc/main.c\n1000\n",
        "{}",
        stderr(&out)
    );
    let back = work.path().join("back");
    let back_s = format!("{}/", back.display());
    let out = output(lab.ssh.tool(
        "rsync",
        &["-a", "-e", &rsh, "alice+debian@lab:tree/", &back_s],
    ))
    .await
    .unwrap();
    assert!(out.status.success(), "rsync down: {}", stderr(&out));
    for f in ["README", "src/main.c", "src/deep/blob.bin"] {
        assert_eq!(
            std::fs::read(tree.join(f)).unwrap(),
            std::fs::read(back.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(
        std::fs::read_link(back.join("link")).unwrap(),
        Path::new("src/main.c")
    );
    lab.stop().await;
}
