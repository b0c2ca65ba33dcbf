//! Alice's forwarded X11 display (`ssh -Y`) stays hers: bob cannot reach it from his
//! container by loopback or by her container's address, and an X client of bob's
//! opens its window on bob's own display, never on alice's. A control: alice's own
//! display is reachable from inside her container all along.

use std::process::Stdio;
use std::time::{Duration, Instant};

use labssh_testkit::ssh::{stderr, Auth};
use labssh_testkit::xvfb::Xvfb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::lab::{Lab, LabOptions};

const STEP: Duration = Duration::from_secs(30);
/// Display 10 (the first one) listens on this port in a container.
const DISPLAY_10: u16 = 6010;

/// `ssh -Y login` on `xvfb`'s display running `script`, held open until the child is
/// dropped; returns once the script printed its first line, which it returns.
async fn x_session(
    lab: &Lab,
    login: &str,
    auth: &Auth,
    xvfb: &Xvfb,
    dir: &tempfile::TempDir,
    script: &str,
) -> (Child, String) {
    let mut cmd = lab.ssh.command_with(login, auth, &["-Y"], &[script]);
    cmd.env("DISPLAY", &xvfb.display)
        .env("XAUTHORITY", dir.path().join(format!("{login}.xauth")))
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(STEP, lines.next_line())
        .await
        .expect("the session answers")
        .unwrap()
        .unwrap_or_default();
    (child, line)
}

/// Whether a TCP connection to `addr:port` opens from `login`'s container.
async fn opens(lab: &Lab, login: &str, auth: &Auth, addr: &str, port: u16) -> bool {
    let probe = format!(
        "if timeout 3 bash -c 'exec 3<>/dev/tcp/{addr}/{port}' 2>/dev/null; then echo open; else echo closed; fi"
    );
    let out = labssh_testkit::ssh::output(lab.ssh.command(login, auth, &[&probe]))
        .await
        .unwrap();
    match String::from_utf8_lossy(&out.stdout).trim() {
        "open" => true,
        "closed" => false,
        other => panic!("probe from {login}: {other:?} {}", stderr(&out)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bob_cannot_reach_alices_x11_display() {
    tokio::task::spawn_blocking(labssh_testkit::docker::ensure_debian_image)
        .await
        .unwrap()
        .expect("Debian image");
    let lab = Lab::start(LabOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (alices_screen, bobs_screen) = (Xvfb::start().unwrap(), Xvfb::start().unwrap());
    let hold = "echo \"display=[$DISPLAY]\"; read line";
    let (_alice, line) = x_session(
        &lab,
        "alice+debian",
        &Lab::alice(),
        &alices_screen,
        &dir,
        hold,
    )
    .await;
    assert_eq!(line, "display=[localhost:10.0]");
    // The control: her display listens, and opens from inside her container.
    assert!(opens(&lab, "alice+debian", &Lab::alice(), "127.0.0.1", DISPLAY_10).await);

    // Bob, by loopback and by her container's address, before he has a display.
    let alices_ip = labssh_testkit::docker::docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        &lab.container_name("alice", "debian"),
    ])
    .unwrap();
    let alices_ip = alices_ip
        .split_whitespace()
        .next()
        .expect("alice's address")
        .to_owned();
    assert!(!opens(&lab, "bob+debian", &Lab::bob(), "127.0.0.1", DISPLAY_10).await);
    assert!(!opens(&lab, "bob+debian", &Lab::bob(), &alices_ip, DISPLAY_10).await);

    // Bob's own display is display 10 of his container, and his X client's window
    // opens on his screen only.
    let (_bob, line) = x_session(
        &lab,
        "bob+debian",
        &Lab::bob(),
        &bobs_screen,
        &dir,
        "echo \"display=[$DISPLAY]\"; exec xmessage -name labssh-bob-probe 'bob was here'",
    )
    .await;
    assert_eq!(line, "display=[localhost:10.0]");
    let deadline = Instant::now() + STEP;
    while !bobs_screen.tree().unwrap().contains("labssh-bob-probe") {
        assert!(
            Instant::now() < deadline,
            "bob's window never opened on his screen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !alices_screen.tree().unwrap().contains("labssh-bob-probe"),
        "bob's window opened on alice's screen"
    );
    // Still closed to him by her address while both displays are up.
    assert!(!opens(&lab, "bob+debian", &Lab::bob(), &alices_ip, DISPLAY_10).await);
    lab.stop().await;
}
