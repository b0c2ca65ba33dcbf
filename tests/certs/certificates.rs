//! OpenSSH user certificates: a trusted CA's certificate logs in with no key in
//! any file, for its principals, within its validity, from its source addresses,
//! and restricted as its options and extensions say.

use std::process::Output;
use std::time::Duration;

use labssh_testkit::ssh::{stderr, stdout, Auth};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ca::Ca;
use crate::lab::{connect_when_up, Lab, LabOptions};

/// `ssh login 'echo in'` with the key (and its certificate).
async fn login(lab: &Lab, login: &str, key: &std::path::Path, command: &str) -> Output {
    lab.ssh
        .run(login, &Auth::Key(key.to_path_buf()), &[command])
        .await
        .expect("ssh")
}

fn refused(out: &Output) -> bool {
    out.status.code() == Some(255) && stderr(out).contains("Permission denied")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trusted_cas_certificate_logs_its_principals_in() {
    let ca = Ca::new();
    let lab = Lab::start(LabOptions {
        proxy_auth: Some(ca.auth()),
        ..Default::default()
    })
    .await;

    // carol is in no users file: the certificate alone lets her in.
    let carol = ca.student("carol", "carol,carol-admin", &[]);
    let out = login(&lab, "carol", &carol, "echo in").await;
    assert_eq!(stdout(&out), "in\n", "{}", stderr(&out));
    // A principal of a login with an environment is its account.
    let out = login(&lab, "carol+open", &carol, "echo in").await;
    assert_eq!(stdout(&out), "in\n", "{}", stderr(&out));

    // Someone else's certificate, for another account.
    let out = login(&lab, "alice", &carol, "echo in").await;
    assert!(refused(&out), "wrong principal: {}", stderr(&out));

    // A certificate naming no principal is for no one (as sshd).
    let nobody = ca.student("nobody", "", &[]);
    let out = login(&lab, "nobody", &nobody, "echo in").await;
    assert!(refused(&out), "no principal: {}", stderr(&out));

    // Expired, and not yet valid.
    let expired = ca.student("expired", "expired", &["-V", "20200101:20200102"]);
    let out = login(&lab, "expired", &expired, "echo in").await;
    assert!(refused(&out), "expired: {}", stderr(&out));
    let future = ca.student("future", "future", &["-V", "+1d:+2d"]);
    let out = login(&lab, "future", &future, "echo in").await;
    assert!(refused(&out), "not yet valid: {}", stderr(&out));

    // Signed by a CA the proxy does not trust.
    let other = Ca::new();
    let mallory = other.student("mallory", "carol", &[]);
    let out = login(&lab, "carol", &mallory, "echo in").await;
    assert!(refused(&out), "untrusted CA: {}", stderr(&out));

    // A key with no certificate and in no file is refused, offers accepted or not.
    let bare = ca.student_key("bare");
    let out = login(&lab, "carol", &bare, "echo in").await;
    assert!(refused(&out), "a bare key: {}", stderr(&out));

    // An unknown critical option must not be ignored.
    let verify = ca.student("verify", "verify", &["-O", "verify-required"]);
    let out = login(&lab, "verify", &verify, "echo in").await;
    assert!(refused(&out), "unknown critical option: {}", stderr(&out));

    // Password logins are as before.
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["echo in"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "in\n", "{}", stderr(&out));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn critical_options_and_extensions_restrict_the_login() {
    let ca = Ca::new();
    let lab = Lab::start(LabOptions {
        proxy_auth: Some(ca.auth()),
        ..Default::default()
    })
    .await;

    // force-command runs instead of what was asked, which it can read.
    let forced = ca.student(
        "forced",
        "dora",
        &["-O", "force-command=echo forced:$SSH_ORIGINAL_COMMAND"],
    );
    let out = login(&lab, "dora", &forced, "echo hi").await;
    assert_eq!(stdout(&out), "forced:echo hi\n", "{}", stderr(&out));
    // A shell is replaced too (no original command).
    let out = lab
        .ssh
        .run_with_stdin(
            "dora",
            &Auth::Key(forced.clone()),
            &[],
            b"echo from-shell\n",
        )
        .await
        .unwrap();
    assert_eq!(stdout(&out), "forced:\n", "{}", stderr(&out));

    // source-address: from loopback only if loopback is listed.
    let elsewhere = ca.student("elsewhere", "dora", &["-O", "source-address=10.0.0.0/8"]);
    let out = login(&lab, "dora", &elsewhere, "echo in").await;
    assert!(refused(&out), "outside source-address: {}", stderr(&out));
    let here = ca.student(
        "here",
        "dora",
        &["-O", "source-address=10.0.0.0/8,127.0.0.0/8"],
    );
    let out = login(&lab, "dora", &here, "echo in").await;
    assert_eq!(stdout(&out), "in\n", "{}", stderr(&out));

    // Without permit-pty the terminal is refused (`-tt` insists, so the client
    // then gives up the session).
    let no_pty = ca.student("nopty", "dora", &["-O", "no-pty"]);
    let out = labssh_testkit::ssh::output(lab.ssh.command_with(
        "dora",
        &Auth::Key(no_pty),
        &["-tt"],
        &["tty; true"],
    ))
    .await
    .unwrap();
    assert!(
        stderr(&out).contains("PTY allocation request failed"),
        "{}",
        stderr(&out)
    );
    let out = labssh_testkit::ssh::output(lab.ssh.command_with(
        "dora",
        &Auth::Key(here.clone()),
        &["-tt"],
        &["tty"],
    ))
    .await
    .unwrap();
    assert!(
        !stderr(&out).contains("PTY allocation request failed"),
        "with permit-pty: {}",
        stderr(&out)
    );

    // Without permit-port-forwarding: ssh -L's channel and ssh -R are refused.
    let no_fwd = ca.student("nofwd", "dora", &["-O", "no-port-forwarding"]);
    let (stdout_text, stderr_text) = local_forward(&lab, &no_fwd).await;
    assert_eq!(
        stdout_text, "up\n",
        "the session itself runs: {stderr_text}"
    );
    assert!(
        stderr_text.contains("administratively prohibited"),
        "{stderr_text}"
    );
    let (_, stderr_text) = local_forward(&lab, &here).await;
    assert!(
        !stderr_text.contains("administratively prohibited"),
        "with permit-port-forwarding: {stderr_text}"
    );
    for (key, permitted) in [(&no_fwd, false), (&here, true)] {
        let out = labssh_testkit::ssh::output(lab.ssh.command_with(
            "dora+open",
            &Auth::Key(key.clone()),
            &["-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:1"],
            &["echo up"],
        ))
        .await
        .unwrap();
        assert_eq!(out.status.success(), permitted, "-R: {}", stderr(&out));
        if !permitted {
            assert!(
                stderr(&out).contains("remote port forwarding failed"),
                "{}",
                stderr(&out)
            );
        }
    }

    // Without permit-agent-forwarding: ssh -A gets no agent socket.
    let agent = labssh_testkit::ssh_agent::TestAgent::start().unwrap();
    let no_agent = ca.student("noagent", "dora", &["-O", "no-agent-forwarding"]);
    for (key, permitted) in [(&no_agent, false), (&here, true)] {
        let mut cmd = lab.ssh.command_with(
            "dora",
            &Auth::Key(key.clone()),
            &["-A"],
            &["echo \"[$SSH_AUTH_SOCK]\""],
        );
        cmd.env("SSH_AUTH_SOCK", &agent.socket);
        let out = labssh_testkit::ssh::output(cmd).await.unwrap();
        let sock = stdout(&out);
        assert_eq!(
            sock.starts_with("[/tmp/labssh-agent."),
            permitted,
            "-A: {sock} {}",
            stderr(&out)
        );
    }

    // Without permit-X11-forwarding: ssh -Y gets no display.
    let xvfb = labssh_testkit::xvfb::Xvfb::start().unwrap();
    let no_x11 = ca.student("nox11", "dora", &["-O", "no-x11-forwarding"]);
    let xauth = tempfile::tempdir().unwrap();
    for (key, permitted) in [(&no_x11, false), (&here, true)] {
        let mut cmd = lab.ssh.command_with(
            "dora",
            &Auth::Key(key.clone()),
            &["-Y"],
            &["echo \"[$DISPLAY]\""],
        );
        cmd.env("DISPLAY", &xvfb.display)
            .env("XAUTHORITY", xauth.path().join("client.xauth"));
        let out = labssh_testkit::ssh::output(cmd).await.unwrap();
        let display = stdout(&out);
        assert_eq!(
            display.starts_with("[localhost:10."),
            permitted,
            "-Y: {display} {}",
            stderr(&out)
        );
    }
    lab.stop().await;
}

/// `ssh -L PORT:127.0.0.1:1 dora+open@lab 'sleep 3; echo up'` with `key`, one
/// connection through the forward; the session's stdout and stderr.
async fn local_forward(lab: &Lab, key: &std::path::Path) -> (String, String) {
    let local = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spec = format!("{local}:127.0.0.1:1");
    let child = lab
        .ssh
        .command_with(
            "dora+open",
            &Auth::Key(key.to_path_buf()),
            &["-o", "LogLevel=INFO", "-L", &spec],
            &["sleep 3; echo up"],
        )
        .spawn()
        .unwrap();
    let mut s = connect_when_up(local).await;
    let _ = s.write_all(b"x").await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
        .await
        .expect("the forward closes")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing listens at port 1: no data");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the session ends")
        .unwrap();
    (stdout(&out), stderr(&out))
}
