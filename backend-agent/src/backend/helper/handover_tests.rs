//! SPAWN_PIPES against fake helpers in this process: the pipes handed over carry the
//! process's bytes, an older helper is asked again the relayed way (once), and
//! descriptors that are not the pipes asked for are refused.

use super::tests::{frame, soon};
use super::*;
use crate::backend::ExitStatus;
use crate::backend::Output;
use futures::StreamExt;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd};
use std::path::Path;
use tokio::net::UnixListener;

fn spec(pty: bool) -> SpawnSpec {
    let env = labssh_proto::pb::Environment {
        uid: 1000,
        gid: 1000,
        ..Default::default()
    };
    let pty = pty.then(|| crate::backend::PtySpec {
        term: "xterm".into(),
        cols: 80,
        rows: 24,
    });
    SpawnSpec::for_user("ann", &env, vec!["wc".into(), "-c".into()], Vec::new(), pty)
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both were just opened and are owned by nobody else.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

/// One frame with `fds` attached, as labssh-init sends STARTED after SPAWN_PIPES.
fn send_with_fds(conn: &std::os::unix::net::UnixStream, frame: &[u8], fds: &[BorrowedFd<'_>]) {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    let sent = sendmsg(
        conn,
        &[io::IoSlice::new(frame)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
    assert_eq!(sent, frame.len());
}

/// Reads the request frame off a blocking connection.
fn request_of(conn: &mut std::os::unix::net::UnixStream) -> wire::Request {
    let mut buf = Vec::new();
    loop {
        if let Some((kind, payload, _)) = wire::split_frame(&buf).unwrap() {
            return wire::Request::decode(kind, payload).unwrap();
        }
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).unwrap();
        assert!(n > 0, "the agent hung up before its request");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A fake helper serving `connections` connections in turn, each by `serve` on a
/// thread of its own with a blocking socket; gives back the requests it got.
fn fake_helper<F>(
    dir: &Path,
    connections: usize,
    serve: F,
) -> (HelperSocket, tokio::task::JoinHandle<Vec<wire::Request>>)
where
    F: Fn(usize, wire::Request, std::os::unix::net::UnixStream) + Send + Sync + 'static,
{
    let socket = HelperSocket::in_this_process(dir);
    let listener = UnixListener::bind(&*socket.path).unwrap();
    let serve = Arc::new(serve);
    let task = tokio::spawn(async move {
        let mut requests = Vec::new();
        for i in 0..connections {
            let (conn, _) = listener.accept().await.unwrap();
            let mut conn = conn.into_std().unwrap();
            conn.set_nonblocking(false).unwrap();
            let serve = serve.clone();
            let request = tokio::task::spawn_blocking(move || {
                let request = request_of(&mut conn);
                let answer = request.clone();
                std::thread::spawn(move || serve(i, answer, conn));
                request
            })
            .await
            .unwrap();
            requests.push(request);
        }
        requests
    });
    (socket, task)
}

/// Plays the process behind handed-over pipes: counts its stdin to the end, says so
/// on stdout, grumbles on stderr, closes both, and only then has the helper report
/// exit 3 on the connection.
fn counting_process(conn: std::os::unix::net::UnixStream) {
    let (stdin_r, stdin_w) = pipe();
    let (stdout_r, mut stdout_w) = pipe();
    let (stderr_r, mut stderr_w) = pipe();
    let started = frame(wire::kind::STARTED, &42u32.to_be_bytes());
    send_with_fds(
        &conn,
        &started,
        &[stdin_w.as_fd(), stdout_r.as_fd(), stderr_r.as_fd()],
    );
    drop((stdin_w, stdout_r, stderr_r)); // the agent's now, as the helper lets go
    let mut stdin_r = stdin_r;
    let mut counted = 0;
    let mut chunk = vec![0u8; 65536];
    loop {
        match stdin_r.read(&mut chunk).unwrap() {
            0 => break,
            n => counted += n,
        }
    }
    writeln!(stdout_w, "{counted}").unwrap();
    stderr_w.write_all(b"warning\n").unwrap();
    drop((stdout_w, stderr_w));
    let mut conn = conn;
    conn.write_all(&frame(wire::kind::EXIT, &wire::Exit::Code(3).encode()))
        .unwrap();
}

async fn drain(process: Process, input: Vec<u8>) -> (String, String, ExitStatus) {
    let Process {
        mut stdin,
        mut output,
        control,
        ..
    } = process;
    let writer = tokio::spawn(async move {
        if !input.is_empty() {
            stdin.send(input.into()).await.unwrap();
            stdin.shutdown().await.unwrap();
        }
    });
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(chunk) = output.next().await {
        match chunk {
            Output::Stdout(b) => out.extend_from_slice(&b),
            Output::Stderr(b) => err.extend_from_slice(&b),
        }
    }
    writer.await.unwrap();
    let status = control.wait().await.unwrap();
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
        status,
    )
}

#[tokio::test]
async fn handed_pipes_carry_the_process_bytes_and_the_exit_comes_after() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, served) = fake_helper(dir.path(), 1, |_, _, conn| counting_process(conn));
    let process = socket.spawn(&spec(false), soon(), Pipes::Handed).await;
    let process = process.unwrap();
    assert_eq!(process.control.pid_in_container(), Some(42));
    // Beyond the relay's stdin window and a pipe's 64 KiB: the agent's writes wait on
    // the pipe itself, not on credit.
    let input = vec![b'x'; 3 * 1024 * 1024 + 7];
    let (out, err, status) = tokio::time::timeout(Duration::from_secs(20), drain(process, input))
        .await
        .expect("the process ends in time");
    assert_eq!(
        (out.as_str(), err.as_str(), status),
        ("3145735\n", "warning\n", ExitStatus::Code(3))
    );
    let requests = served.await.unwrap();
    match &requests[..] {
        [wire::Request::Spawn(s)] => assert!(s.pipes && s.pty.is_none(), "{s:?}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_terminal_or_the_relayed_setting_asks_the_old_way() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, served) = fake_helper(dir.path(), 2, |_, _, mut conn| {
        let mut frames = frame(wire::kind::STARTED, &7u32.to_be_bytes());
        wire::put_frame(&mut frames, wire::kind::EXIT, &wire::Exit::Code(0).encode());
        conn.write_all(&frames).unwrap();
    });
    for (pty, pipes) in [(true, Pipes::Handed), (false, Pipes::Relayed)] {
        let process = socket.spawn(&spec(pty), soon(), pipes).await.unwrap();
        assert_eq!(process.control.wait().await.unwrap(), ExitStatus::Code(0));
    }
    let requests = served.await.unwrap();
    let pipes: Vec<(bool, bool)> = requests
        .iter()
        .map(|r| match r {
            wire::Request::Spawn(s) => (s.pty.is_some(), s.pipes),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(pipes, vec![(true, false), (false, false)]);
}

#[tokio::test]
async fn an_older_helper_is_asked_again_relayed_and_then_straight_away() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, served) = fake_helper(dir.path(), 3, |i, request, mut conn| {
        if i == 0 {
            // What every labssh-init before SPAWN_PIPES answers to it.
            let refusal = format!("{} {:#x}", wire::UNEXPECTED_KIND, wire::kind::SPAWN_PIPES);
            conn.write_all(&frame(wire::kind::ERROR, refusal.as_bytes()))
                .unwrap();
            return;
        }
        assert!(matches!(request, wire::Request::Spawn(ref s) if !s.pipes));
        let mut frames = frame(wire::kind::STARTED, &9u32.to_be_bytes());
        wire::put_frame(&mut frames, wire::kind::STDOUT, b"relayed\n");
        wire::put_frame(&mut frames, wire::kind::EXIT, &wire::Exit::Code(0).encode());
        conn.write_all(&frames).unwrap();
    });
    for _ in 0..2 {
        let process = socket.spawn(&spec(false), soon(), Pipes::Handed).await;
        let (out, _, status) = drain(process.unwrap(), Vec::new()).await;
        assert_eq!((out.as_str(), status), ("relayed\n", ExitStatus::Code(0)));
    }
    let kinds: Vec<bool> = served
        .await
        .unwrap()
        .into_iter()
        .map(|r| matches!(r, wire::Request::Spawn(s) if s.pipes))
        .collect();
    assert_eq!(kinds, vec![true, false, false], "asked once, remembered");
}

#[tokio::test]
async fn a_helper_older_than_kept_sessions_is_asked_again_without_and_then_straight_away() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, served) = fake_helper(dir.path(), 3, |i, request, mut conn| {
        if i == 0 {
            // What a labssh-init before SPAWN_KEPT answers to it.
            let refusal = format!("{} {:#x}", wire::UNEXPECTED_KIND, wire::kind::SPAWN_KEPT);
            conn.write_all(&frame(wire::kind::ERROR, refusal.as_bytes()))
                .unwrap();
            return;
        }
        assert!(matches!(request, wire::Request::Spawn(ref s) if s.keep.is_none()));
        let mut frames = frame(wire::kind::STARTED, &9u32.to_be_bytes());
        wire::put_frame(&mut frames, wire::kind::STDOUT, b"not kept\n");
        wire::put_frame(&mut frames, wire::kind::EXIT, &wire::Exit::Code(0).encode());
        conn.write_all(&frames).unwrap();
    });
    let mut kept = spec(true);
    kept.keep = Some(wire::Keep {
        id: "0123456789abcdef0123456789abcdef".into(),
        grace_secs: 60,
    });
    for _ in 0..2 {
        let process = socket.spawn(&kept, soon(), Pipes::Handed).await.unwrap();
        // Not kept: the session ends with the agent, as with that helper before.
        assert!(!process.control.kept());
        let (out, _, status) = drain(process, Vec::new()).await;
        assert_eq!((out.as_str(), status), ("not kept\n", ExitStatus::Code(0)));
    }
    let asked: Vec<bool> = served
        .await
        .unwrap()
        .into_iter()
        .map(|r| matches!(r, wire::Request::Spawn(s) if s.keep.is_some()))
        .collect();
    assert_eq!(asked, vec![true, false, false], "asked once, remembered");
}

#[tokio::test]
async fn descriptors_that_are_not_the_pipes_asked_for_are_refused() {
    // A socket in stdin's place, the pipes the wrong way round, and too few.
    for case in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (socket, _served) = fake_helper(dir.path(), 1, move |_, _, conn| {
            let (a, b) = pipe();
            let (c, d) = pipe();
            let (e, _f) = pipe();
            let (sock, _other) = std::os::unix::net::UnixStream::pair().unwrap();
            let started = frame(wire::kind::STARTED, &1u32.to_be_bytes());
            match case {
                0 => send_with_fds(&conn, &started, &[sock.as_fd(), c.as_fd(), e.as_fd()]),
                1 => send_with_fds(&conn, &started, &[a.as_fd(), d.as_fd(), e.as_fd()]),
                _ => send_with_fds(&conn, &started, &[b.as_fd(), c.as_fd()]),
            }
            // Held until the agent has looked, then the connection closes.
            let mut conn = conn;
            let _ = conn.read(&mut [0u8; 16]);
        });
        match socket.spawn(&spec(false), soon(), Pipes::Handed).await {
            Err(HelperError::Failed(m)) => assert!(m.contains("no usable pipes"), "{case}: {m}"),
            Err(other) => panic!("{case}: {other:?}"),
            Ok(_) => panic!("{case}: accepted"),
        }
    }
}
