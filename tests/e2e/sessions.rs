//! End to end: the stock `ssh` client → proxy → controller → agent → a real
//! Docker container, all on loopback.

use std::time::Duration;

use crate::lab::{Lab, LabOptions};
use labssh_testkit::pty::PtyChild;
use labssh_testkit::ssh::{stderr, stdout, Auth};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_land_in_their_own_persistent_containers() {
    let lab = Lab::start(LabOptions::default()).await;

    let out = lab
        .ssh
        .run(
            "alice",
            &Lab::alice(),
            &["echo host=$(hostname) uid=$(id -u) home=$HOME user=$USER logname=$LOGNAME pwd=$(pwd); echo notes > ~/notes.txt; ls -ld ~"],
        )
        .await
        .unwrap();
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout={text} stderr={}",
        stderr(&out)
    );
    assert!(text.contains("host=alice-default"), "{text}");
    assert!(text.contains("uid=1000"), "{text}");
    assert!(
        text.contains("home=/home/alice user=alice logname=alice pwd=/home/alice"),
        "{text}"
    );
    // The agent gives uid 1000 the student's name in the container's /etc/passwd.
    assert!(
        text.contains(" alice    alice ") || text.contains(" 1000 "),
        "home owned by uid 1000 (alice): {text}"
    );
    let first_id = lab
        .container_id("alice", "default")
        .expect("alice's container");

    // Logout and back in: same container, and the file is still there.
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["cat ~/notes.txt"])
        .await
        .unwrap();
    assert_eq!(stdout(&out).trim(), "notes", "stderr={}", stderr(&out));
    assert_eq!(lab.container_id("alice", "default").unwrap(), first_id);

    // Bob gets his own container, and cannot see alice's home.
    let out = lab
        .ssh
        .run(
            "bob",
            &Lab::bob(),
            &["hostname; ls /home; cat /home/alice/notes.txt"],
        )
        .await
        .unwrap();
    let text = stdout(&out);
    assert!(text.starts_with("bob-default\n"), "{text}");
    assert!(!text.contains("alice"), "bob sees alice: {text}");
    assert_ne!(out.status.code(), Some(0));
    let bob_id = lab.container_id("bob", "default").expect("bob's container");
    assert_ne!(bob_id, first_id);

    // The home volume survives the container: remove it, log in again.
    labssh_testkit::docker::docker(&["rm", "-f", &first_id]).unwrap();
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["cat ~/notes.txt"])
        .await
        .unwrap();
    assert_eq!(stdout(&out).trim(), "notes", "stderr={}", stderr(&out));
    assert_ne!(lab.container_id("alice", "default").unwrap(), first_id);

    // An environment chosen with user+env, running as root by configuration.
    let out = lab
        .ssh
        .run(
            "alice+admin",
            &Lab::alice(),
            &["hostname; id -u; cat ~/notes.txt"],
        )
        .await
        .unwrap();
    assert_eq!(
        stdout(&out),
        "alice-admin\n0\nnotes\n",
        "stderr={}",
        stderr(&out)
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exit_status_stdin_and_stderr_are_spliced() {
    let lab = Lab::start(LabOptions::default()).await;
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["exit 7"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "stderr={}", stderr(&out));

    let out = lab
        .ssh
        .run_with_stdin("alice", &Lab::alice(), &["cat"], b"hi\n")
        .await
        .unwrap();
    assert_eq!(stdout(&out), "hi\n");
    assert_eq!(out.status.code(), Some(0));

    // A bigger payload, checked byte for byte, through `wc -c`.
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = lab
        .ssh
        .run_with_stdin("alice", &Lab::alice(), &["cat | sha256sum"], &payload)
        .await
        .unwrap();
    let expected = sha256_hex(&payload);
    assert!(
        stdout(&out).starts_with(&expected),
        "{} vs {expected}",
        stdout(&out)
    );

    let out = lab
        .ssh
        .run(
            "alice",
            &Lab::alice(),
            &["echo to-out; echo to-err >&2; exit 3"],
        )
        .await
        .unwrap();
    assert_eq!(stdout(&out), "to-out\n");
    assert!(stderr(&out).contains("to-err"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(3));

    // Only allow-listed client variables are passed.
    let mut cmd = lab.ssh.command_with(
        "alice",
        &Lab::alice(),
        &["-o", "SendEnv=LANG LC_ALL LD_PRELOAD"],
        &["echo lang=$LANG lc=$LC_ALL preload=$LD_PRELOAD"],
    );
    cmd.env("LANG", "C.UTF-8")
        .env("LC_ALL", "C")
        .env("LD_PRELOAD", "/evil.so");
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stdout(&out),
        "lang=C.UTF-8 lc=C preload=\n",
        "stderr={}",
        stderr(&out)
    );
    lab.stop().await;
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pty_size_follows_the_client_terminal() {
    let lab = Lab::start(LabOptions::default()).await;
    let cmd = lab.ssh.command_with("alice", &Lab::alice(), &["-tt"], &[]);
    let cmd = cmd.as_std();
    let mut std_cmd = std::process::Command::new(cmd.get_program());
    std_cmd.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => std_cmd.env(k, v),
            None => std_cmd.env_remove(k),
        };
    }
    let mut term = tokio::task::spawn_blocking(move || PtyChild::spawn(std_cmd, 100, 30))
        .await
        .unwrap()
        .unwrap();
    let t = Duration::from_secs(60);
    term.write("echo READY-$((40+2))\n").unwrap();
    term = tokio::task::spawn_blocking(move || term.wait_for("READY-42", t).map(|_| term))
        .await
        .unwrap()
        .unwrap();
    term.write("stty size; echo SIZE-DONE-$((1+1))\n").unwrap();
    term = tokio::task::spawn_blocking(move || term.wait_for("SIZE-DONE-2", t).map(|_| term))
        .await
        .unwrap()
        .unwrap();
    assert!(term.output().contains("30 100"), "{}", term.output());

    term.resize(120, 40).unwrap();
    // Give ssh a moment to notice SIGWINCH and send window-change.
    tokio::time::sleep(Duration::from_millis(300)).await;
    term.write("stty size; echo SIZE-DONE-$((2+1))\n").unwrap();
    term = tokio::task::spawn_blocking(move || term.wait_for("SIZE-DONE-3", t).map(|_| term))
        .await
        .unwrap()
        .unwrap();
    assert!(term.output().contains("40 120"), "{}", term.output());

    term.write("exit 5\n").unwrap();
    let status = tokio::task::spawn_blocking(move || term.wait(t))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(5));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn public_keys_and_users_added_while_running() {
    let lab = Lab::start(LabOptions::default()).await;
    let (key, public) = lab.ssh.keygen("carol_key").unwrap();
    // Carol does not exist yet.
    let out = lab
        .ssh
        .run("carol", &Auth::Key(key.clone()), &["true"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );

    // `labssh user add` on the running lab: no restart needed.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_labssh"))
        .args(["user", "add", "carol", "--key"])
        .arg(key.with_extension("pub"))
        .arg("--users")
        .arg(&lab.users_file)
        .status()
        .unwrap();
    assert!(status.success());
    let out = lab
        .ssh
        .run("carol", &Auth::Key(key.clone()), &["echo $USER"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "carol\n", "stderr={}", stderr(&out));
    assert!(!public.is_empty());

    // Another user's key does not open carol's account.
    let (other, _) = lab.ssh.keygen("other_key").unwrap();
    let out = lab
        .ssh
        .run("carol", &Auth::Key(other), &["true"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255));

    // Password added later via --password-stdin, also picked up live.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_labssh"))
        .args(["user", "add", "carol", "--password-stdin", "--users"])
        .arg(&lab.users_file)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"carols-pw\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let out = lab
        .ssh
        .run("carol", &Auth::Password("carols-pw".into()), &["echo ok"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "ok\n", "stderr={}", stderr(&out));
    // Keyboard-interactive works with the same password.
    let out = lab
        .ssh
        .run(
            "carol",
            &Auth::KeyboardInteractive("carols-pw".into()),
            &["echo kbd"],
        )
        .await
        .unwrap();
    assert_eq!(stdout(&out), "kbd\n", "stderr={}", stderr(&out));
    lab.stop().await;
}
