//! X11 forwarding with the stock OpenSSH client and a real X server on the client's
//! side (Xvfb): `ssh -Y` into the Debian image gives the session
//! `DISPLAY=localhost:10.0` with the client's cookie installed by the image's xauth,
//! and an `xmessage` started in the container appears on the client's display (each
//! X connection an `x11` channel); `ssh -X` into busybox, which has no xauth, gets a
//! `~/.Xauthority` written for the student that the real xauth reads; the display
//! goes with the session; `forward_x11 = false` refuses it with a reason.

use std::process::Stdio;
use std::time::{Duration, Instant};

use labssh_proto::pb;
use labssh_testkit::ssh::stderr;
use labssh_testkit::xvfb::Xvfb;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::lab::{Lab, LabOptions};

const STEP: Duration = Duration::from_secs(30);
/// Display 10 (sshd's X11DisplayOffset) listens on this port in the container.
const DISPLAY_10: u16 = 6010;

/// `ssh OPTIONS login SCRIPT` as a client on `xvfb`'s display, with an X authority
/// file of its own (the client's xauth writes there for `ssh -X`).
fn x_client(
    lab: &Lab,
    login: &str,
    options: &[&str],
    script: &str,
    xvfb: &Xvfb,
    dir: &tempfile::TempDir,
) -> tokio::process::Command {
    let mut cmd = lab
        .ssh
        .command_with(login, &Lab::alice(), options, &[script]);
    cmd.env("DISPLAY", &xvfb.display)
        .env("XAUTHORITY", dir.path().join("client.xauth"));
    cmd
}

/// The session's next line of output.
async fn next<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut tokio::io::Lines<R>) -> String {
    tokio::time::timeout(STEP, lines.next_line())
        .await
        .expect("the session answers")
        .unwrap()
        .unwrap_or_default()
}

/// Waits until `user`'s `env` container no longer listens on display 10.
async fn display_gone(lab: &Lab, user: &str, env: &str) {
    let deadline = Instant::now() + STEP;
    while lab.listening(user, env, DISPLAY_10) {
        assert!(Instant::now() < deadline, "display 10 outlived its session");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssh_y_shows_a_window_from_the_container_on_the_clients_display() {
    tokio::task::spawn_blocking(labssh_testkit::docker::ensure_debian_image)
        .await
        .unwrap()
        .expect("Debian image");
    let lab = Lab::start(LabOptions::default()).await;
    let xvfb = Xvfb::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = "echo \"display=[$DISPLAY]\"; xauth list; \
                  xdpyinfo | grep -c 'name of display:'; \
                  xmessage -name labssh-x11-probe 'hello from the container' & \
                  read line; kill $!; echo done";
    let mut cmd = x_client(&lab, "alice+debian", &["-Y"], script, &xvfb, &dir);
    cmd.stdin(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(next(&mut lines).await, "display=[localhost:10.0]");
    // The image's xauth installed the client's cookie for display 10, as sshd has
    // it install one: `HOSTNAME/unix:10  MIT-MAGIC-COOKIE-1  HEX`.
    let entry = next(&mut lines).await;
    let fields: Vec<&str> = entry.split_whitespace().collect();
    assert!(
        fields.len() == 3
            && fields[0].ends_with("/unix:10")
            && fields[1] == "MIT-MAGIC-COOKIE-1"
            && fields[2].len() == 32,
        "xauth list: {entry:?}"
    );
    // A real X client's round trips: xdpyinfo reached the client's X server.
    assert_eq!(next(&mut lines).await, "1", "xdpyinfo failed");
    // The window exists on the client's display.
    let deadline = Instant::now() + STEP;
    loop {
        let tree = xvfb.tree().unwrap();
        if tree.contains("labssh-x11-probe") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no xmessage window on {}: {tree}",
            xvfb.display
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stdin.write_all(b"\n").await.unwrap();
    drop(stdin);
    assert_eq!(next(&mut lines).await, "done");
    let out = tokio::time::timeout(STEP, child.wait_with_output())
        .await
        .expect("the client exits")
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The window went with its X connection, the display with the session.
    let deadline = Instant::now() + STEP;
    while xvfb.tree().unwrap().contains("labssh-x11-probe") {
        assert!(Instant::now() < deadline, "the window outlived its client");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    display_gone(&lab, "alice", "debian").await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssh_x_without_xauth_in_the_image_writes_the_students_xauthority() {
    let lab = Lab::start(LabOptions::default()).await;
    let xvfb = Xvfb::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Busybox has no xauth: labssh-init writes the file itself.
    let script = "echo \"display=[$DISPLAY]\"; ls -ln \"$HOME/.Xauthority\"; \
                  echo \"home=[$HOME]\"; read line";
    let mut cmd = x_client(&lab, "alice", &["-X"], script, &xvfb, &dir);
    cmd.stdin(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(next(&mut lines).await, "display=[localhost:10.0]");
    // The student's, closed to everyone else.
    let listing = next(&mut lines).await;
    let fields: Vec<&str> = listing.split_whitespace().collect();
    assert!(
        fields.len() > 3 && fields[0] == "-rw-------" && fields[2] == "1000",
        "ls -ln ~/.Xauthority: {listing:?}"
    );
    let home = next(&mut lines).await;
    let home = home
        .strip_prefix("home=[")
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or_else(|| panic!("{home:?}"))
        .to_owned();
    assert!(lab.listening("alice", "default", DISPLAY_10));
    // The real xauth reads the entry: this host's display 10, the client's cookie.
    let name = lab.container_name("alice", "default");
    let pid = labssh_testkit::docker::docker(&["inspect", "-f", "{{.State.Pid}}", &name]).unwrap();
    let file = format!("/proc/{}/root{home}/.Xauthority", pid.trim());
    let listed = std::process::Command::new("xauth")
        .args(["-f", &file, "list"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert!(
        listed.status.success()
            && fields.len() == 3
            && fields[0].ends_with("/unix:10")
            && fields[1] == "MIT-MAGIC-COOKIE-1"
            && fields[2].len() == 32,
        "xauth -f {file} list: {text:?} {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    stdin.write_all(b"\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(STEP, child.wait_with_output())
        .await
        .expect("the client exits")
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    display_gone(&lab, "alice", "default").await;

    // Without -X: no display.
    let out = labssh_testkit::ssh::output(x_client(
        &lab,
        "alice",
        &[],
        "echo \"display=[$DISPLAY]\"",
        &xvfb,
        &dir,
    ))
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "display=[]\n");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forward_x11_false_refuses_it_with_a_reason() {
    let catalogue = crate::lab::environment_toml("nox11", "forward_x11 = false");
    let lab = Lab::start(LabOptions {
        catalogue,
        ..Default::default()
    })
    .await;
    let xvfb = Xvfb::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = labssh_testkit::ssh::output(x_client(
        &lab,
        "alice+nox11",
        &["-Y", "-o", "LogLevel=INFO"],
        "echo \"display=[$DISPLAY]\"",
        &xvfb,
        &dir,
    ))
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "display=[]\n");
    // OpenSSH tells the student, and the session went on without a display.
    assert!(
        stderr(&out).contains("X11 forwarding request failed"),
        "{}",
        stderr(&out)
    );
    // The agent's reason, as the proxy hears it.
    let request = pb::ListenRequest {
        user: "alice".into(),
        environment: "nox11".into(),
        x11: true,
        ..Default::default()
    };
    let (prohibited, message) = crate::agent_forwarding::listen_refused(&lab, request).await;
    assert!(
        prohibited && message.contains("X11 forwarding (ssh -X) is turned off"),
        "{message}"
    );
    // The same login where it is on gets its display: the refusal is the setting's.
    let out = labssh_testkit::ssh::output(x_client(
        &lab,
        "alice",
        &["-Y"],
        "echo \"display=[$DISPLAY]\"",
        &xvfb,
        &dir,
    ))
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "display=[localhost:10.0]\n",
        "{}",
        stderr(&out)
    );
    lab.stop().await;
}
