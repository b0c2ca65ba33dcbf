//! Kept sessions against the real engine: labssh-init keeps a process whose agent
//! connection broke, reading its output into a bounded history, and hands it to the
//! next connection that names its id, with exactly the output that connection lacks.

use std::time::Duration;

use crate::support::{collect, ensure_on, environment, pty, run_script, Scratch, STEP};
use futures::StreamExt;
use labssh_agent::backend::{Backend, BackendError, ExitStatus, Output, Process, SpawnSpec};
use labssh_helper_proto::wire::Keep;

fn kept(user: &str, script: &str, terminal: bool, grace_secs: u32, id: &str) -> SpawnSpec {
    let argv = vec!["/bin/sh".into(), "-c".into(), script.into()];
    let mut spec = SpawnSpec::for_user(
        user,
        &environment(),
        argv,
        Vec::new(),
        terminal.then(|| pty(80, 24)),
    );
    spec.keep = Some(Keep {
        id: id.to_owned(),
        grace_secs,
    });
    spec
}

/// Output until `want` has arrived; the bytes, as one string.
async fn read_until(process: &mut Process, want: &str) -> String {
    let mut got = String::new();
    while !got.contains(want) {
        match tokio::time::timeout(STEP, process.output.next()).await {
            Ok(Some(Output::Stdout(b) | Output::Stderr(b))) => {
                got.push_str(&String::from_utf8_lossy(&b))
            }
            other => panic!("{other:?} before {want:?} (had {got:?})"),
        }
    }
    got
}

/// Whether `pattern` names a process in the container.
async fn running(backend: &dyn Backend, container: &str, pattern: &str) -> bool {
    let (out, _, _) = run_script(backend, container, "root", "ps -o args").await;
    out.contains(pattern)
}

#[tokio::test]
async fn a_terminal_session_outlives_its_connection_and_resumes_exactly() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "kay", "helper").await;
    let id = "0123456789abcdef0123456789abcd01";
    let script = "echo a1; echo a2; echo a3; read l; echo \"got $l\"; exit 5";
    let spec = kept("kay", script, true, 30, id);
    let mut process = backend.spawn(&c.container_id, spec).await.unwrap();
    assert!(process.control.kept());
    let pid = process.control.pid_in_container().unwrap();
    let seen = read_until(&mut process, "a3").await;
    // The agent dies; the student had all but the last two bytes ("3" and the
    // terminal's newline pair's last byte).
    drop(process);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let offset = seen.len() as u64 - 2;
    let (mut process, attached) = backend.reattach(&c.container_id, id, offset).await.unwrap();
    assert_eq!(attached.pid, pid, "the same process");
    assert!(attached.pty && attached.counted);
    assert_eq!((attached.lost, attached.input_offset), (0, 0));
    assert!(process.control.kept());
    // Input reaches it, and its exit status comes through.
    process.stdin.write_all(b"hi\n").await.unwrap();
    let (rest, _, status) = collect(process).await;
    // What the student had, then what came again: every line once.
    let whole = format!("{}{rest}", &seen[..seen.len() - 2]);
    assert!(whole.starts_with("a1\r\na2\r\na3\r\n"), "{whole:?}");
    assert_eq!(whole.matches("a3").count(), 1, "{whole:?}");
    assert!(whole.contains("got hi"), "{whole:?}");
    assert_eq!(status, ExitStatus::Code(5));
}

#[tokio::test]
async fn a_handed_over_session_resumes_relayed_and_its_stdin_still_ends() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "kim", "helper").await;
    // Kept, stdin still ends with the agent's EOF although labssh-init holds a
    // copy of the pipe.
    let spec = kept(
        "kim",
        "cat; echo end",
        false,
        30,
        "0123456789abcdef0123456789abcd02",
    );
    let mut process = backend.spawn(&c.container_id, spec).await.unwrap();
    process.stdin.write_all(b"abc\n").await.unwrap();
    process.stdin.shutdown().await.unwrap();
    let (out, _, status) = collect(process).await;
    assert_eq!((out.as_str(), status), ("abc\nend\n", ExitStatus::Code(0)));

    let id = "0123456789abcdef0123456789abcd03";
    let script = "echo one; read l; echo \"got $l\"; exit 6";
    let mut process = backend
        .spawn(&c.container_id, kept("kim", script, false, 30, id))
        .await
        .unwrap();
    read_until(&mut process, "one").await;
    drop(process);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut process, attached) = backend.reattach(&c.container_id, id, 4).await.unwrap();
    // The agent read the pipes itself: no common count; nothing came meanwhile.
    assert!(!attached.counted && !attached.pty);
    assert_eq!((attached.lost, attached.input_offset), (0, 0));
    process.stdin.write_all(b"x\n").await.unwrap();
    let (out, _, status) = collect(process).await;
    assert_eq!((out.as_str(), status), ("got x\n", ExitStatus::Code(6)));
}

#[tokio::test]
async fn a_process_that_ends_while_detached_reports_its_status_once_resumed() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "kit", "helper").await;
    let id = "0123456789abcdef0123456789abcd04";
    let spec = kept("kit", "sleep 1; echo bye; exit 9", true, 30, id);
    let process = backend.spawn(&c.container_id, spec).await.unwrap();
    drop(process);
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(!running(&*backend, &c.container_id, "sleep 1").await);
    let (process, attached) = backend.reattach(&c.container_id, id, 0).await.unwrap();
    assert_eq!(attached.lost, 0);
    let (out, _, status) = collect(process).await;
    assert_eq!((out.as_str(), status), ("bye\r\n", ExitStatus::Code(9)));
}

#[tokio::test]
async fn only_its_id_in_its_container_reaches_a_kept_session() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let mine = ensure_on(&backend, "kid", "helper").await;
    let other = ensure_on(&backend, "kat", "helper").await;
    let id = "0123456789abcdef0123456789abcd05";
    let process = backend
        .spawn(
            &mine.container_id,
            kept("kid", "exec sleep 611", true, 30, id),
        )
        .await
        .unwrap();
    drop(process);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = |r: Result<(Process, _), BackendError>| match r {
        Err(BackendError::SpawnFailed(m)) => m,
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("re-attached"),
    };
    // Another student's container knows nothing of it; a wrong id is nothing.
    let m = refused(backend.reattach(&other.container_id, id, 0).await);
    assert!(m.contains("no such session"), "{m}");
    let m = refused(
        backend
            .reattach(&mine.container_id, "0123456789abcdef0123456789abcdff", 0)
            .await,
    );
    assert!(m.contains("no such session"), "{m}");
    assert!(running(&*backend, &mine.container_id, "sleep 611").await);
    // Released, it is hung up when its connection goes, and no longer kept.
    let (process, _) = backend.reattach(&mine.container_id, id, 0).await.unwrap();
    process.control.release().await;
    drop(process);
    let mut gone = false;
    for _ in 0..50 {
        if !running(&*backend, &mine.container_id, "sleep 611").await {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "a released session outlived its connection");
    let m = refused(backend.reattach(&mine.container_id, id, 0).await);
    assert!(m.contains("no such session"), "{m}");
}

#[tokio::test]
async fn a_kept_session_nobody_resumes_is_hung_up_after_its_grace() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "kev", "helper").await;
    let id = "0123456789abcdef0123456789abcd06";
    let process = backend
        .spawn(&c.container_id, kept("kev", "exec sleep 612", false, 1, id))
        .await
        .unwrap();
    drop(process);
    // Still there within its grace...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(running(&*backend, &c.container_id, "sleep 612").await);
    // ...and hung up after it.
    let mut gone = false;
    for _ in 0..80 {
        if !running(&*backend, &c.container_id, "sleep 612").await {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "sleep outlived its grace");
    assert!(backend.reattach(&c.container_id, id, 0).await.is_err());
}

#[tokio::test]
async fn a_quiet_session_keeps_only_its_last_screenful() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "kip", "helper").await;
    let id = "0123456789abcdef0123456789abcd08";
    let script = "head -c 102400 /dev/zero | tr '\\0' x; exec sleep 613";
    let mut process = backend
        .spawn(&c.container_id, kept("kip", script, true, 30, id))
        .await
        .unwrap();
    let mut seen = 0usize;
    while seen < 102_400 {
        match tokio::time::timeout(STEP, process.output.next())
            .await
            .unwrap()
        {
            Some(Output::Stdout(b)) => seen += b.len(),
            other => panic!("{other:?} after {seen} bytes"),
        }
    }
    // Quiet for longer than labssh-init's idle trim, everything sent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(process);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A student who had nothing would be told what is gone: all but 16 KiB.
    let (process, attached) = backend.reattach(&c.container_id, id, 0).await.unwrap();
    assert_eq!(attached.lost, 102_400 - 16 * 1024);
    process.control.signal("KILL").await.unwrap();
    let (out, _, _) = collect(process).await;
    assert_eq!(out, "x".repeat(16 * 1024));
}
