//! Session recording (`record` per environment, `[recording] dir` on the proxy): a pty
//! session of an environment that records is written as asciicast v2, and
//! `labssh replay` plays it back to exactly the bytes the student's terminal got; what
//! the student typed is in it with `input-and-output`; an environment that does not
//! record writes nothing; and a full disk stops the recording, counted, while the
//! session goes on to its end with all its output.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use labssh_telemetry::metrics::render;
use labssh_testkit::ssh::stderr;
use labssh_testkit::telemetry::prometheus::Exposition;
use tokio::io::AsyncWriteExt;

use crate::lab::{Lab, LabOptions};

const STEP: Duration = Duration::from_secs(60);

/// The recordings' directory beside the lab's users file.
fn recordings(users_file: &Path) -> PathBuf {
    users_file.with_file_name("recordings")
}

/// Every `.cast` file under `dir`.
fn casts(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|e| e == "cast") {
                found.push(p);
            }
        }
    }
    found
}

fn failed_recordings() -> f64 {
    Exposition::parse(&render()).unwrap().sum(
        "labssh_errors_total",
        &[("component", "proxy"), ("kind", "recording_failed")],
    )
}

/// `ssh -tt login`, typing `typed` and then `exit`; what the terminal got.
async fn pty_session(lab: &Lab, login: &str, typed: &str) -> Vec<u8> {
    let mut cmd = lab.ssh.command_with(login, &Lab::alice(), &["-tt"], &[]);
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(typed.as_bytes()).await.unwrap();
    stdin.write_all(b"exit\n").await.unwrap();
    let out = tokio::time::timeout(STEP, child.wait_with_output())
        .await
        .expect("the session ends")
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    out.stdout
}

/// `labssh replay --speed 0 [--input] FILE`.
fn replay(file: &Path, input: bool) -> Vec<u8> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_labssh"));
    cmd.args(["replay", "--speed", "0"]);
    if input {
        cmd.arg("--input");
    }
    let out = cmd.arg(file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recorded_session_replays_to_the_same_screen_and_a_full_disk_spares_it() {
    let catalogue = crate::lab::environment_toml("exam", "record = \"input-and-output\"");
    let lab = Lab::start(LabOptions {
        catalogue,
        proxy: Some(|c| c.recording.dir = recordings(&c.users_file)),
        ..Default::default()
    })
    .await;
    let dir = recordings(&lab.users_file);

    // An environment that does not record writes nothing.
    pty_session(&lab, "alice", "echo not-recorded\n").await;
    assert!(casts(&dir).is_empty(), "{:?}", casts(&dir));

    // One that records: the replay is the terminal's bytes, exactly.
    let screen = pty_session(&lab, "alice+exam", "echo screen-$((6*7))\n").await;
    assert!(
        String::from_utf8_lossy(&screen).contains("screen-42"),
        "{}",
        String::from_utf8_lossy(&screen)
    );
    let files = casts(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert!(file.starts_with(dir.join("alice")), "{}", file.display());
    let mut got = replay(file, false);
    // The client may still have been reading when the recording's last event came.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got != screen && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        got = replay(file, false);
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&screen)
    );
    // With input-and-output the keystrokes are there too.
    let with_input = String::from_utf8_lossy(&replay(file, true)).into_owned();
    assert!(with_input.contains("echo screen-$((6*7))"), "{with_input}");
    let mode = std::fs::metadata(file).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // A full disk: a 64 KiB tmpfs over the directory, a session printing 1 MiB.
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs (the test runs as root)");
    let before = failed_recordings();
    let screen = pty_session(
        &lab,
        "alice+exam",
        "yes 0123456789012345678901234567890123456789 | head -c 1048576; echo; echo done-$((1+1))\n",
    )
    .await;
    let umount = std::process::Command::new("umount").arg(&dir).status();
    let text = String::from_utf8_lossy(&screen);
    assert!(
        text.contains("done-2") && screen.len() > 1 << 20,
        "the session did not finish: {} bytes, ends {:?}",
        screen.len(),
        &text[text.len().saturating_sub(200)..]
    );
    assert!(failed_recordings() > before, "the failure was not counted");
    assert!(umount.unwrap().success());
    lab.stop().await;
}
